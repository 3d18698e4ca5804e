"""The glibc malloc settings `import ser_jax` applies (ser_jax/glibc_malloc.py): when, and their effect."""
import os
import pathlib
import platform
import subprocess
import sys

import pytest

from ser_jax import glibc_malloc

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]


class FakeLibc:
  """Records mallopt calls; refuses the parameters in `refuse`."""

  def __init__(self, refuse=()):
    self.calls, self.refuse = [], refuse

  def mallopt(self, param, value):
    self.calls.append((param, value))
    return 0 if param in self.refuse else 1


def test_applies_every_setting():
  libc = FakeLibc()
  assert glibc_malloc.apply({}, libc=libc, backend_started=False) == 'applied'
  assert libc.calls == list(glibc_malloc.SETTINGS)
  assert dict(libc.calls) == {glibc_malloc.M_MMAP_MAX: 0, glibc_malloc.M_ARENA_MAX: 1,
                              glibc_malloc.M_TRIM_THRESHOLD: 2**31 - 1}


@pytest.mark.parametrize('env, reason', [
    ({glibc_malloc.OPT_OUT: '0'}, f'{glibc_malloc.OPT_OUT}=0'),
    ({'MALLOC_ARENA_MAX': '4'}, 'MALLOC_ARENA_MAX'),
    ({'MALLOC_TRIM_THRESHOLD_': '0'}, 'MALLOC_TRIM_THRESHOLD_'),
    ({'GLIBC_TUNABLES': 'glibc.malloc.mmap_max=0'}, 'GLIBC_TUNABLES'),
])
def test_user_settings_win(env, reason):
  libc = FakeLibc()
  status = glibc_malloc.apply(env, libc=libc, backend_started=False)
  assert status.startswith('not applied') and reason in status
  assert libc.calls == []


def test_unrelated_tunables_and_refusals():
  assert glibc_malloc.apply({'GLIBC_TUNABLES': 'glibc.pthread.rseq=0'}, libc=FakeLibc(),
                            backend_started=False) == 'applied'
  status = glibc_malloc.apply({}, libc=FakeLibc(refuse=(glibc_malloc.M_ARENA_MAX,)),
                              backend_started=False)
  assert status == f'not applied fully: mallopt refused parameters [{glibc_malloc.M_ARENA_MAX}]'


def test_late_import_warns(caplog):
  status = glibc_malloc.apply({}, libc=FakeLibc(), backend_started=True)
  assert status.startswith('applied late') and 'Import ser_jax before' in status
  assert any('own malloc arenas' in r.getMessage() for r in caplog.records)


# Page faults of allocating, filling and freeing 128 MiB repeatedly: in a fresh thread with
# libc's malloc (as XLA's worker threads allocate), and as the temporary buffer of a jitted
# step. A block that went back to the kernel faults in again (32768 pages) every time. In
# the heap, glibc 2.36's aligned allocations need a few calls before a hole fits (XLA aligns
# its buffers), so the step's faults are counted after a warm-up.
_PROBE = r"""
import ctypes, resource, threading
import ser_jax
import jax, jax.numpy as jnp
print(ser_jax.GLIBC_MALLOC)
libc = ctypes.CDLL(None)
libc.malloc.restype = ctypes.c_void_p
libc.free.argtypes = [ctypes.c_void_p]
N = 128 << 20

def faults(fn, warmup):
  for _ in range(warmup):
    fn()
  before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
  fn(); fn()
  return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before

def malloc_in_thread():
  def work():
    p = libc.malloc(N)
    ctypes.memset(p, 1, N)
    libc.free(p)
  t = threading.Thread(target=work)
  t.start(); t.join()

# (8192, 4096) float32 = 128 MiB: the product feeds two reductions, so XLA materialises it.
a, b = jnp.ones((8192, 4)), jnp.ones((4, 4096))
step = jax.jit(lambda a, b: ((a @ b).max(0), (a @ b).sum(1)))
def xla_temporary():
  jax.block_until_ready(step(a, b))

print(faults(malloc_in_thread, 1), faults(xla_temporary, 6))
"""


@pytest.mark.skipif(platform.system() != 'Linux' or platform.libc_ver()[0] != 'glibc',
                    reason='the settings are glibc mallopt calls')
@pytest.mark.parametrize('opt_out', [None, '0'])
def test_freed_memory_is_reused_without_page_faults(opt_out):
  """In a fresh process, after `import ser_jax` a freed 128 MiB block is reused (almost no
  page faults); opting out shows glibc's default maps it afresh (32768 pages each time), so
  a jaxlib or glibc that changes this is noticed."""
  env = {k: v for k, v in os.environ.items()
         if not k.startswith('MALLOC_') and k not in ('GLIBC_TUNABLES', glibc_malloc.OPT_OUT)}
  if opt_out is not None:
    env[glibc_malloc.OPT_OUT] = opt_out
  out = subprocess.run([sys.executable, '-c', _PROBE], cwd=REPO_ROOT, env=env, check=True,
                       capture_output=True, text=True).stdout.split('\n')
  pages = 2 * (128 << 20) // 4096  # two allocations of 128 MiB in 4 KiB pages
  thread_faults, xla_faults = (int(v) for v in out[1].split())  # over two calls each
  if opt_out is None:
    assert out[0] == 'applied'
    assert thread_faults < pages // 20 and xla_faults < pages // 20, out
  else:
    assert out[0].startswith('not applied')
    assert thread_faults > pages // 2 and xla_faults > pages // 2, out
