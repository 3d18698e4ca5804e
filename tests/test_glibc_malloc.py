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
  """Records mallopt and malloc_trim calls; refuses the parameters in `refuse`."""

  def __init__(self, refuse=()):
    self.calls, self.refuse = [], refuse

  def mallopt(self, param, value):
    self.calls.append((param, value))
    return 0 if param in self.refuse else 1

  def malloc_trim(self, pad):
    self.calls.append(('trim', pad))
    return 1


@pytest.fixture(autouse=True)
def _restore_trim(monkeypatch):
  """apply() with a fake libc must not leave the fake behind for release_free_memory()."""
  monkeypatch.setattr(glibc_malloc, '_trim', glibc_malloc._trim)  # pylint: disable=protected-access


def test_applies_every_setting():
  libc = FakeLibc()
  assert glibc_malloc.apply({}, libc=libc, backend_started=False) == 'applied'
  assert libc.calls == list(glibc_malloc.SETTINGS)
  assert dict(libc.calls) == {glibc_malloc.M_MMAP_MAX: 0, glibc_malloc.M_ARENA_MAX: 1,
                              glibc_malloc.M_TRIM_THRESHOLD: 2**31 - 1}
  assert glibc_malloc.release_free_memory() and libc.calls[-1] == ('trim', 0)


def test_release_does_nothing_when_not_applied(monkeypatch):
  monkeypatch.setattr(glibc_malloc, '_trim', None)
  libc = FakeLibc()
  glibc_malloc.apply({glibc_malloc.OPT_OUT: '0'}, libc=libc, backend_started=False)
  assert not glibc_malloc.release_free_memory() and libc.calls == []


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


# Page faults of allocating, filling and freeing 128 MiB repeatedly, in a fresh thread with
# libc's malloc (as XLA's worker threads allocate; counted over 2 calls) and as the temporary
# buffer of a jitted step (counted over 12 calls). A block that went back to the kernel faults
# in again (32768 pages) every time. In the heap, glibc 2.36's aligned allocations (XLA aligns
# its buffers) sometimes miss a hole of their own size and take fresh pages, so the step is
# only expected to fault far less often, not never.
_PROBE = r"""
import ctypes, resource, threading
import ser_jax
import jax, jax.numpy as jnp
print(ser_jax.GLIBC_MALLOC)
libc = ctypes.CDLL(None)
libc.malloc.restype = ctypes.c_void_p
libc.free.argtypes = [ctypes.c_void_p]
N = 128 << 20

def faults(fn, warmup, calls):
  for _ in range(warmup):
    fn()
  before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
  for _ in range(calls):
    fn()
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

def rss():
  return int(open('/proc/self/statm').read().split()[1]) * resource.getpagesize()

counts = faults(malloc_in_thread, 1, 2), faults(xla_temporary, 2, 12)
# A freed block kept in the heap stays resident until release_free_memory() hands it back.
malloc_in_thread()
before = rss()
released = ser_jax.glibc_malloc.release_free_memory()
print(*counts, (before - rss()) >> 20, released)
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
  pages = (128 << 20) // 4096  # of one 128 MiB block, in 4 KiB pages
  thread_faults, xla_faults, released_mib, released = out[1].split()
  thread_faults, xla_faults = int(thread_faults), int(xla_faults)
  if opt_out is None:
    assert out[0] == 'applied'
    assert thread_faults < pages // 10 and xla_faults < 0.6 * 12 * pages, out
    # The freed 128 MiB stayed resident until release_free_memory() returned it.
    assert int(released_mib) >= 120 and released == 'True', out
  else:
    assert out[0].startswith('not applied')
    assert thread_faults > 1.9 * pages and xla_faults > 0.9 * 12 * pages, out
    assert int(released_mib) < 8 and released == 'False', out  # unmapped at once: none kept
