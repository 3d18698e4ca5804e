"""1 device vs 4 (fake CPU) devices: the same global batches give the same run.

`XLA_FLAGS=--xla_force_host_platform_device_count=4` must be set before JAX starts, so the
4-device runs (pmap and jit) happen in one subprocess (tests/test_train.py's runner) and
are compared with a 1-device run in this process. The model is TinyNet (BatchNorm, no
dropout): under pmap its BatchNorm axis is set to 'batch', so batch statistics span the
global batch and the only differences are float summation orders (tolerance 1e-5). The clips
are centred (offset 0 dB) so eval logits stay small. (A conv bias in front of BatchNorm
broke this comparison: its true gradient is 0, and Adam turned float noise in it into
lr-sized steps that differed with the device count; TinyNet has none, like CNN14.)
"""
import os

import jax
import pytest

import test_train  # pylint: disable=g-bad-import-order
from ser_jax import models
from ser_jax import train

ARGS = ['--num_epochs=3', '--batch_size=8', '--every=3']


@pytest.mark.slow
def test_one_device_and_four_devices_agree_for_pmap_and_jit(tmp_path, monkeypatch):
  assert jax.device_count() == 1, 'this test compares against a 1-device run'
  flags = os.environ.get('XLA_FLAGS', '') + ' --xla_force_host_platform_device_count=4'
  proc = test_train.run_subprocess(['train', str(tmp_path / 'four'), *ARGS, '--offset=0',
                                    '--parallel=pmap,jit'], {'XLA_FLAGS': flags})
  # The 1-device reference runs while the subprocess compiles.
  monkeypatch.setitem(models.MODELS, 'tiny', test_train.TinyNet)
  one = tmp_path / 'one'
  train.train_and_evaluate(test_train._cli_config(ARGS + ['--parallel=pmap']), one,
                           examples=test_train.synthetic_examples(offset=0.0))
  out, _ = proc.communicate(timeout=500)
  assert proc.returncode == 0, out[-3000:]
  assert 'DEVICES 4' in out
  reference = test_train.fold_outcome(one)
  assert len(reference['history']) == 3
  for mode in ('pmap', 'jit'):
    test_train.assert_outcomes_close(
        reference, test_train.fold_outcome(tmp_path / 'four' / mode), tol=1e-5)
