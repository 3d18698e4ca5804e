"""XLA:CPU setting that `import ser_jax` applies before JAX starts: Eigen convolutions.

Why: jaxlib 0.10.2's CPU backend hands convolutions to YNNPACK by default. YNNPACK is very
slow on the weight gradient, which XLA expresses as a convolution whose "kernel" is the whole
output-gradient map. Measured on this project's 2-core machine, for CNN14's 64 -> 64 conv3x3 on
a (32, 128, 256, 64) batch, that gradient took 10.9 s with YNNPACK and 1.0 s with XLA's own
Eigen convolution (PyTorch's forward + backward of the layer: 3.0-3.2 s). With Eigen, 6 of
CNN14's 7 conv shapes train (forward + both gradients) faster than in PyTorch and the 7th is
4% slower; with YNNPACK five of them were 1.6-6.0x slower than PyTorch's (the deepest about
equal), and whole CNN14/ResNet18/AlexNet training steps ran at 0.5-0.8x PyTorch's speed. So
ser-jax removes convolutions from YNNPACK's fusion list:

    XLA_FLAGS += --xla_cpu_experimental_ynn_fusion_type=-individual_convolution

(the leading '-' removes one type from XLA's default list and keeps the rest). It only
changes which CPU kernel runs a convolution; GPU and TPU compilation ignore it.

XLA reads XLA_FLAGS once, when JAX first initialises a backend, and aborts the whole process on
a flag it does not know. Hence:
- applied only for the jaxlib versions it was measured on (`TESTED_JAXLIB`), never guessed;
- left alone when XLA_FLAGS already sets `xla_cpu_experimental_ynn_fusion_type` (yours wins)
  or when SER_JAX_XLA_CPU_FLAGS=0;
- if a backend is already running when ser_jax is imported, it is too late: a warning says so
  (import ser_jax before your first JAX computation).
`bench/models.py` prints whether it was applied; `SER_JAX_XLA_CPU_FLAGS=0 python bench/models.py`
measures XLA's default for comparison.
"""
import importlib.metadata
import logging
import os
import sys

FLAG = '--xla_cpu_experimental_ynn_fusion_type=-individual_convolution'
TESTED_JAXLIB = ('0.10.2',)
OPT_OUT = 'SER_JAX_XLA_CPU_FLAGS'

_log = logging.getLogger(__name__)


def _backend_started():
  """True when JAX has already initialised a backend (its XLA_FLAGS are then fixed)."""
  bridge = sys.modules.get('jax._src.xla_bridge')
  return bool(getattr(bridge, '_backends', None))


def _jaxlib_version():
  try:
    return importlib.metadata.version('jaxlib')
  except importlib.metadata.PackageNotFoundError:
    return None


def apply(environ=None, jaxlib_version=None, backend_started=None):
  """Adds `FLAG` to XLA_FLAGS in `environ` (default os.environ) where safe; says what it did.

  Args:
    environ: the environment mapping to edit (tests pass a dict).
    jaxlib_version: overrides the installed jaxlib's version (tests).
    backend_started: overrides the check for a running JAX backend (tests).

  Returns:
    'applied', 'already applied', or a sentence saying why the flag was left out.
  """
  environ = os.environ if environ is None else environ
  current = environ.get('XLA_FLAGS', '')
  if FLAG in current.split():
    return 'already applied'
  if environ.get(OPT_OUT, '1') == '0':
    return f'not applied: {OPT_OUT}=0'
  if 'xla_cpu_experimental_ynn_fusion_type' in current:
    return 'not applied: XLA_FLAGS already sets xla_cpu_experimental_ynn_fusion_type'
  version = _jaxlib_version() if jaxlib_version is None else jaxlib_version
  if version not in TESTED_JAXLIB:
    return (f'not applied: jaxlib {version} is not one of {TESTED_JAXLIB}, on which the flag '
            'was measured (XLA aborts on flags it does not know)')
  started = _backend_started() if backend_started is None else backend_started
  if started:
    message = ('not applied: JAX had already started a backend when ser_jax was imported, so '
               f'XLA_FLAGS can no longer change; CPU training keeps YNNPACK convolutions, which '
               f'are several times slower on weight gradients. Import ser_jax before the first '
               f'JAX computation, or set XLA_FLAGS="{FLAG}" yourself.')
    _log.warning(message)
    return message
  environ['XLA_FLAGS'] = f'{current} {FLAG}'.strip()
  return 'applied'
