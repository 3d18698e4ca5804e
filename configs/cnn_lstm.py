"""1D CNN-LSTM from scratch: "1DCNNLSTM" row of the predecessor's table.

Predecessor's protocol (from `config_lib.default()`): speech clips, 128-mel 48 kHz log-mel
resized to 128 x 256 (the 128 mel bins are the channels of a 1-D signal over 256 steps), its
4 speaker-independent folds, Adam 1e-4 with L2 1e-5, batch 32, final-epoch metrics;
140 epochs for the 1D CNN-LSTM.

    python launch/train.py --config=configs/cnn_lstm.py --workdir=workdirs/cnn_lstm
    python launch/train.py --config=configs/cnn_lstm.py:tiny --workdir=/tmp/cnn_lstm_tiny
"""
from ser_jax import config_lib


def get_config(arg=None):
  """Returns the config; `arg='tiny'` gives the smoke-test variant."""
  c = config_lib.default()
  c.model.name = 'cnn_lstm'
  c.num_epochs = 140
  # From scratch any mel count works (it is the conv's input width); two pools need >= 16 steps.
  return config_lib.with_variant(c, arg, __file__, tiny_input_shape=(32, 64))
