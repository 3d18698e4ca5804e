"""Default experiment: CNN-X on RAVDESS speech with the predecessor's protocol.

Every field any experiment may set is defined and documented in
`ser_jax.config_lib.default()`; each experiment file in this folder starts from it and
changes only what differs. Any field can be overridden on the command line, e.g.
`python launch/train.py --config=configs/cnnx.py --config.num_epochs=2`.
Passing `:tiny` after the file (`--config=configs/cnnx.py:tiny`) selects the smoke-test variant.
"""
from ser_jax import config_lib


def get_config(arg=None):
  """Returns the default config (CNN-X on speech, predecessor's 4 folds)."""
  return config_lib.with_variant(config_lib.default(), arg, __file__)
