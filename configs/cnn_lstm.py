"""1D CNN-LSTM from scratch: "1DCNNLSTM" row of the predecessor's table.

Predecessor's protocol (inherited from default.py): speech clips, 128-mel 48 kHz log-mel
resized to 128 x 256 (the 128 mel bins are the channels of a 1-D signal over 256 steps), its
4 speaker-independent folds, Adam 1e-4 with L2 1e-5, batch 32, final-epoch metrics;
140 epochs for the 1D CNN-LSTM.

    python launch/train.py --config=configs/cnn_lstm.py --workdir=workdirs/cnn_lstm
    python launch/train.py --config=configs/cnn_lstm.py:tiny --workdir=/tmp/cnn_lstm_tiny
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
  c.model.name = 'cnn_lstm'
  c.num_epochs = 140
  if arg == 'tiny':
    default.apply_tiny(c)
    # From scratch any mel count works (it is the conv's input width); two pools need >= 16 steps.
    c.data.input_shape = (32, 64)
  elif arg:
    raise ValueError(f'Unknown config variant {arg!r} for {__file__}; known: tiny')
  return c
