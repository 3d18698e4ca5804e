"""CNN-X (shallow CNN) from scratch, the predecessor's protocol: "CNN-X" row of its table.

Predecessor's protocol (from `config_lib.default()`): speech clips, 128-mel 48 kHz log-mel
resized to 128 x 256, its 4 speaker-independent folds, Adam 1e-4 with L2 1e-5, batch 32,
final-epoch metrics; 60 epochs for CNN-X.

    python launch/train.py --config=configs/cnnx.py --workdir=workdirs/cnnx
    python launch/train.py --config=configs/cnnx.py:tiny --workdir=/tmp/cnnx_tiny
"""
from ser_jax import config_lib


def get_config(arg=None):
  """Returns the config; `arg='tiny'` gives the smoke-test variant."""
  c = config_lib.default()
  c.model.name = 'cnnx'
  c.num_epochs = 60
  # Any input size works from scratch (the flatten size follows the input).
  return config_lib.with_variant(c, arg, __file__, tiny_input_shape=(32, 64))
