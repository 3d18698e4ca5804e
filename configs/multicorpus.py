"""CNN-X trained on RAVDESS speech + TESS + SAVEE, tested speaker-independently on RAVDESS.

The folds are the predecessor's 4 RAVDESS folds: each trains on its 18 RAVDESS training
actors plus every TESS and SAVEE clip (their speakers are never RAVDESS test actors) and
reports on its 6 held-out RAVDESS actors only, so the numbers compare with the RAVDESS-only
table (`input_pipeline.fold_split`). To test on another corpus instead, make it
`data.name` (e.g. `--config.data.name=ser_savee --config.folds.scheme=loso
--config.data.extra_train="('ravdess/speech','ser_tess')"`).

Sampling weights (2, 1, 1): an epoch has as many clips as the fold's training set (1080
RAVDESS + 2800 TESS + 480 SAVEE = 4360 on the full corpora, 137 steps of 32), half of them
RAVDESS and a quarter each TESS and SAVEE (`input_pipeline.epoch_order`): about 2 passes
over the RAVDESS and SAVEE clips and 0.4 over TESS per epoch, a new TESS subset each
epoch. Without weights TESS would be 64% of every epoch. 30 epochs: about as many RAVDESS
passes as CNN-X's 60 alone. A starting point, not a tuned recipe.

Every dataset is read with the same front end; TESS and SAVEE are built from $TESS_DIR
and $SAVEE_DIR (README, "Corpora"):

    python launch/train.py --config=configs/multicorpus.py --workdir=workdirs/multicorpus
    python launch/train.py --config=configs/multicorpus.py:tiny --workdir=/tmp/multi_tiny
"""
from ser_jax import config_lib


def get_config(arg=None):
  """Returns the config; `arg='tiny'` gives the smoke-test variant."""
  c = config_lib.default()
  c.model.name = 'cnnx'
  c.data.name = 'ravdess/speech'
  c.data.extra_train = ('ser_tess', 'ser_savee')
  c.data.sampling_weights = (2.0, 1.0, 1.0)
  c.num_epochs = 30
  return config_lib.with_variant(c, arg, __file__, tiny_input_shape=(32, 64))
