"""glibc malloc settings that `import ser_jax` applies: keep freed memory for reuse.

Why: XLA:CPU allocates every step's temporaries with malloc and frees them when the step
ends. glibc serves a large request with a fresh mmap (above its mmap threshold, at most 32 MiB,
and always above 64 MiB in a thread's own arena; XLA's worker threads each get one) and
munmaps it when freed, so the next step maps it again and the kernel page-faults in and
zeroes every page. CNN-X's gradient step maps and unmaps six buffers of 37-148 MB per step.
Measured on this project's 2-core machine (jitted gradient step at batch 32, steady state,
kernel `sys` time per step vs user time; CNN-X on one core, the others on two threads):
CNN-X 126-131 ms vs 364-383 ms (51,700 page faults: 200 MB of fresh pages every step),
ResNet18 352 ms vs 3.5 s, AlexNet 85 ms vs 1.1 s, 1D CNN-LSTM 32-71 ms vs 144-154 ms. With the settings below: CNN-X 0.3 ms
(no faults), ResNet18 17 ms, AlexNet 20 ms, CNN-LSTM 9-19 ms. This is where the 4-fold CNN-X
run's `sys` time (29.6 of 83.7 CPU-minutes) went: one fold, 3 epochs through
launch/train.py spent 37.5 s in the kernel by default and 4.3 s with these settings.

    mallopt(M_MMAP_MAX, 0)                no mmap for single allocations: grow the heap
    mallopt(M_TRIM_THRESHOLD, 2**31 - 1)  give free heap back only beyond 2 GiB at its top
    mallopt(M_ARENA_MAX, 1)               one arena (the brk heap), also for XLA's threads

The cost: memory stays with the process. glibc 2.36's aligned allocations (XLA aligns its
buffers) cannot always reuse a hole of their own size, so the heap settles a few steps in at
more than the live peak and then stays flat (maximum RSS of a gradient-step loop: AlexNet
0.80 -> 0.99 GB, ResNet18 1.31 -> 1.23 GB, CNN14 at batch 8 1.96 -> 3.46 GB), and each new
phase's buffers (a new fold's state, a new compiled step) land beside the old ones' holes:
CNN-X held 3.8 GB through fold 0 and 4.6 GB through fold 1 (2.5 GB peak by default). So
training calls `release_free_memory()` (malloc_trim: the heap's free pages go back to the
kernel) after every epoch, at the price of faulting in once per epoch what the next steps
reuse: the same two CNN-X folds (3 epochs each) then stayed at 1.8-2.9 GB with a 4.5 GB peak
at the start of fold 1, and spent 11.3 s of 143.6 CPU-seconds in the kernel. All threads share
one arena lock (XLA makes a few dozen allocations per step). Results do not change (the same
CNN-X fold ends with the same metrics): only where freed memory goes.

Applied at import, before JAX creates its threads (a thread keeps the arena it first got):
- only with glibc (elsewhere nothing is done);
- left alone when the environment already tunes glibc malloc (`MALLOC_*_` variables or
  `glibc.malloc` in GLIBC_TUNABLES: yours win) or when SER_JAX_GLIBC_MALLOC=0;
- if JAX already started a backend, the settings still apply to later allocations but its
  threads keep their arenas; a warning says so (import ser_jax before the first JAX
  computation).
`ser_jax.GLIBC_MALLOC` says what happened; the bench scripts print it.
"""
import ctypes
import logging
import os
import platform

from ser_jax import xla_cpu

OPT_OUT = 'SER_JAX_GLIBC_MALLOC'
# mallopt parameter numbers from glibc's <malloc.h> (stable since glibc 2.0 / 2.10).
M_TRIM_THRESHOLD, M_MMAP_MAX, M_ARENA_MAX = -1, -4, -8
SETTINGS = ((M_MMAP_MAX, 0), (M_TRIM_THRESHOLD, 2**31 - 1), (M_ARENA_MAX, 1))
# Environment variables through which glibc itself reads malloc settings at start-up.
_USER_VARIABLES = ('MALLOC_ARENA_MAX', 'MALLOC_MMAP_MAX_', 'MALLOC_MMAP_THRESHOLD_',
                   'MALLOC_TRIM_THRESHOLD_', 'MALLOC_TOP_PAD_')

_log = logging.getLogger(__name__)
_trim = None  # malloc_trim of the C library `apply` set up; None when it set up nothing


def _glibc():
  """The process's C library as a ctypes handle, or None when it is not glibc."""
  if platform.system() != 'Linux' or platform.libc_ver()[0] != 'glibc':
    return None
  try:
    return ctypes.CDLL(None)  # the already loaded libc of this process
  except OSError:
    return None


def apply(environ=None, libc=None, backend_started=None):
  """Applies `SETTINGS` with mallopt where safe; says what it did.

  Args:
    environ: the environment mapping to read (tests pass a dict).
    libc: overrides the C library handle (tests pass an object with `mallopt`; None
      finds glibc, and nothing is done without it).
    backend_started: overrides the check for a running JAX backend (tests).

  Returns:
    'applied', 'applied late: ...', or a sentence saying why nothing was changed.
  """
  environ = os.environ if environ is None else environ
  if environ.get(OPT_OUT, '1') == '0':
    return f'not applied: {OPT_OUT}=0'
  user = [v for v in _USER_VARIABLES if v in environ]
  if 'glibc.malloc' in environ.get('GLIBC_TUNABLES', ''):
    user.append('GLIBC_TUNABLES')
  if user:
    return f'not applied: the environment already tunes malloc ({", ".join(user)})'
  libc = _glibc() if libc is None else libc
  if libc is None or not hasattr(libc, 'mallopt'):
    return 'not applied: the C library is not glibc'
  failed = [param for param, value in SETTINGS if libc.mallopt(param, value) != 1]
  if failed:
    return f'not applied fully: mallopt refused parameters {failed}'
  global _trim
  _trim = getattr(libc, 'malloc_trim', None)
  started = xla_cpu._backend_started() if backend_started is None else backend_started  # pylint: disable=protected-access
  if started:
    message = ('applied late: JAX had already started a backend when ser_jax was imported, so '
               'its threads keep their own malloc arenas, where large buffers are still mapped '
               'and unmapped every step (slow, kernel time). Import ser_jax before the first '
               'JAX computation.')
    _log.warning(message)
    return message
  return 'applied'



def release_free_memory():
  """Returns the heap's free pages to the kernel (glibc malloc_trim) if `apply` set it up.

  Call it between phases that allocate differently (training does after every epoch): with
  freed memory kept in the heap, holes left by one phase would otherwise stay resident.
  Returns True if memory was released.
  """
  return bool(_trim is not None and _trim(0))
