"""CNN14 with U-vector attention pooling, from scratch: "CNN-14 + Attn" row of the table.

Predecessor's protocol (from `config_lib.default()`): speech clips, 128-mel 48 kHz log-mel
resized to 128 x 256, its 4 speaker-independent folds, Adam 1e-4 with L2 1e-5, batch 32,
final-epoch metrics; 120 epochs (as CNN14). U-attention (lambda 0.3) replaces global pooling.

    python launch/train.py --config=configs/cnn14_attn.py --workdir=workdirs/cnn14_attn
    python launch/train.py --config=configs/cnn14_attn.py:tiny --workdir=/tmp/cnn14_attn_tiny
"""
from ser_jax import config_lib


def get_config(arg=None):
  """Returns the config; `arg='tiny'` gives the smoke-test variant."""
  c = config_lib.default()
  c.model.name = 'cnn14_attn'
  c.num_epochs = 120
  # Six 2x2 poolings need at least 64 x 64.
  return config_lib.with_variant(c, arg, __file__, tiny_input_shape=(64, 64))
