"""CNN14 (PANNs layout, average pooling) from scratch: "CNN-14" row of the predecessor's table.

Predecessor's protocol (inherited from default.py): speech clips, 128-mel 48 kHz log-mel
resized to 128 x 256, its 4 speaker-independent folds, Adam 1e-4 with L2 1e-5, batch 32,
final-epoch metrics; 120 epochs for CNN14. Global average pooling before the head.

    python launch/train.py --config=configs/cnn14.py --workdir=workdirs/cnn14
    python launch/train.py --config=configs/cnn14.py:tiny --workdir=/tmp/cnn14_tiny
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
  c.model.name = 'cnn14'
  c.num_epochs = 120
  if arg == 'tiny':
    default.apply_tiny(c)
    # Six 2x2 poolings need at least 64 x 64.
    c.data.input_shape = (64, 64)
  elif arg:
    raise ValueError(f'Unknown config variant {arg!r} for {__file__}; known: tiny')
  return c
