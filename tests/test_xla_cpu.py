"""The XLA:CPU flag `import ser_jax` sets (ser_jax/xla_cpu.py): when it applies, and its effect."""
import os
import pathlib
import subprocess
import sys

import pytest

from ser_jax import xla_cpu

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]
TESTED = xla_cpu.TESTED_JAXLIB[0]


def test_appends_flag_and_keeps_existing_flags():
  env = {'XLA_FLAGS': '--xla_force_host_platform_device_count=4'}
  assert xla_cpu.apply(env, jaxlib_version=TESTED, backend_started=False) == 'applied'
  assert env['XLA_FLAGS'] == f'--xla_force_host_platform_device_count=4 {xla_cpu.FLAG}'
  # A second import (or a subprocess inheriting the environment) adds nothing.
  assert xla_cpu.apply(env, jaxlib_version=TESTED, backend_started=False) == 'already applied'
  assert env['XLA_FLAGS'].count(xla_cpu.FLAG) == 1


def test_empty_environment():
  env = {}
  assert xla_cpu.apply(env, jaxlib_version=TESTED, backend_started=False) == 'applied'
  assert env == {'XLA_FLAGS': xla_cpu.FLAG}


@pytest.mark.parametrize('env, reason', [
    ({'XLA_FLAGS': '--xla_cpu_experimental_ynn_fusion_type=individual_dot'}, 'already sets'),
    ({xla_cpu.OPT_OUT: '0'}, f'{xla_cpu.OPT_OUT}=0'),
])
def test_user_settings_win(env, reason):
  before = dict(env)
  status = xla_cpu.apply(env, jaxlib_version=TESTED, backend_started=False)
  assert status.startswith('not applied') and reason in status
  assert env == before


def test_untested_jaxlib_is_left_alone():
  env = {}
  status = xla_cpu.apply(env, jaxlib_version='0.9.0', backend_started=False)
  assert 'jaxlib 0.9.0' in status and env == {}


def test_too_late_warns_and_changes_nothing(caplog):
  env = {}
  status = xla_cpu.apply(env, jaxlib_version=TESTED, backend_started=True)
  assert status.startswith('not applied') and 'Import ser_jax before' in status
  assert env == {}
  assert any('already started a backend' in r.getMessage() for r in caplog.records)


_PROBE = r"""
import ser_jax, jax, jax.numpy as jnp
print(ser_jax.XLA_CPU_FLAGS)
conv = lambda x, w: jax.lax.conv_general_dilated(x, w, (1, 1), 'SAME',
                                                 dimension_numbers=('NHWC', 'HWIO', 'NHWC'))
weight_grad = jax.jit(lambda x, w, g: jax.vjp(lambda w: conv(x, w), w)[1](g))
# Big enough for XLA to hand it to YNNPACK by default (tiny convolutions stay with Eigen).
x, w, g = jnp.ones((4, 32, 32, 32)), jnp.ones((3, 3, 32, 64)), jnp.ones((4, 32, 32, 64))
print('ynn' if '__ynn_fusion' in weight_grad.lower(x, w, g).compile().as_text() else 'eigen')
"""


@pytest.mark.skipif(xla_cpu._jaxlib_version() not in xla_cpu.TESTED_JAXLIB,
                    reason='the flag is only applied on the jaxlib versions it was measured on')
@pytest.mark.parametrize('opt_out, expected', [(None, ['applied', 'eigen']),
                                               ('0', [f'not applied: {xla_cpu.OPT_OUT}=0', 'ynn'])])
def test_import_switches_conv_weight_gradient_off_ynnpack(opt_out, expected):
  """In a fresh process, `import ser_jax` takes convolutions away from YNNPACK; opting out
  shows XLA's default does give them to YNNPACK (if a jaxlib changes that, re-measure)."""
  env = {k: v for k, v in os.environ.items() if k not in ('XLA_FLAGS', xla_cpu.OPT_OUT)}
  if opt_out is not None:
    env[xla_cpu.OPT_OUT] = opt_out
  out = subprocess.run([sys.executable, '-c', _PROBE], cwd=REPO_ROOT, env=env, check=True,
                       capture_output=True, text=True).stdout.split('\n')
  assert out[:2] == expected
