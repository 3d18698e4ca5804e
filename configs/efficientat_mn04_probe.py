"""Linear probe of the frozen EfficientAT mn04 (AudioSet) on RAVDESS speech: a baseline row.

Everything as configs/efficientat_mn04.py (front end, input, folds, the imported
`mn04_as_mAP_432.pt` with a fresh 8-class `classifier_5`) except that only that new Linear
layer trains: a linear classifier on the frozen network's 512-d hidden layer (its AudioSet
head's `classifier_2` + Hardswish, on the 384-d pooled embedding). The whole backbone runs in
inference mode (`frozen_features=17`: BatchNorm on the AudioSet running statistics, no
backward pass through it) and `optimizer.trainable` gives every other param zero updates, so
neither gradients nor the L2 term can move them.

    python launch/train.py --config=configs/efficientat_mn04_probe.py --workdir=workdirs/probe \
        --config.init.pretrained=/path/to/mn04_as_mAP_432.pt
"""
import pathlib
import runpy

from ser_jax import config_lib
from ser_jax.models import efficientat

# The fine-tuning config, loaded by its path (config files are not an importable package).
_FINE_TUNE = runpy.run_path(str(pathlib.Path(__file__).with_name('efficientat_mn04.py')))

# Chosen on validation actors (docs/efficientat.md, "Linear probe"): 1e-2 for 60 epochs beat
# 1e-3 and 3e-2 and 15 epochs (the fine-tuning length then; by 4 points at 1e-2).
PROBE_LEARNING_RATE = 1e-2
PROBE_EPOCHS = 60


def get_config(arg=None):
  """Returns the config; `arg='tiny'` gives the smoke-test variant."""
  c = _FINE_TUNE['get_config']()
  c.model.kwargs.frozen_features = efficientat.NUM_FEATURES  # the whole backbone
  c.optimizer.trainable = '^classifier_5/'
  c.optimizer.learning_rate = PROBE_LEARNING_RATE
  c.num_epochs = PROBE_EPOCHS
  return config_lib.with_variant(c, arg, __file__, tiny_input_shape=(128, 32))
