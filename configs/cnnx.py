"""CNN-X (shallow CNN) from scratch, the predecessor's protocol: "CNN-X" row of its table.

Predecessor's protocol (inherited from default.py): speech clips, 128-mel 48 kHz log-mel
resized to 128 x 256, its 4 speaker-independent folds, Adam 1e-4 with L2 1e-5, batch 32,
final-epoch metrics; 60 epochs for CNN-X.

    python launch/train.py --config=configs/cnnx.py --workdir=workdirs/cnnx
    python launch/train.py --config=configs/cnnx.py:tiny --workdir=/tmp/cnnx_tiny
"""
import importlib.util
import pathlib


def _default():
  """configs/default.py, loaded by its path next to this file.

  ml_collections' config_flags loads a config file by path, not as a package module, so
  `from configs import default` would work only from the repository root; loading by
  `__file__` works from any working directory and from tests.
  """
  path = pathlib.Path(__file__).resolve().parent / 'default.py'
  spec = importlib.util.spec_from_file_location('ser_jax_configs_default', path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def get_config(arg=None):
  """Returns the config; `arg='tiny'` gives the smoke-test variant."""
  default = _default()
  c = default.get_config()
  c.model.name = 'cnnx'
  c.num_epochs = 60
  if arg == 'tiny':
    default.apply_tiny(c)
    # Any input size works from scratch (the flatten size follows the input).
    c.data.input_shape = (32, 64)
  elif arg:
    raise ValueError(f'Unknown config variant {arg!r} for {__file__}; known: tiny')
  return c
