"""ser-jax's own from-scratch recipe: a small CNN (`ser_cnn`) that trains on 2 CPU cores.

The best recipe MEASURED on validation actors (docs/recipe.md: the ablation table, the
selection rule): run v2 there, 51.53% mean validation accuracy (macro F1 50.03%) over the
predecessor's 4 folds, seed 41, final epoch. It does NOT reach the issue's 65% target on
validation, so it is not expected to reach 65% on the test folds either; it has not been
trained on the test protocol (the 3-seed and LOAO runs were not made). The predecessor's
protocol otherwise (48 kHz 128-mel log-mel, its 4 speaker-independent folds, final-epoch
metrics on the held-out actors, batch 32).

    python launch/train.py --config=configs/ser_jax_best.py --workdir=workdirs/best
    python launch/train.py --config=configs/ser_jax_best.py --workdir=workdirs/best \
        --seeds=41,42,43                                      # 3 seeds + their aggregate
    python launch/train.py --config=configs/ser_jax_best.py --workdir=workdirs/best_val \
        --config.folds.validation_actors=3                    # the selection run (v2)
    python launch/train.py --config=configs/ser_jax_best.py:tiny --workdir=/tmp/best_tiny
"""
from ser_jax import config_lib


def get_config(arg=None):
  """Returns the config; `arg='tiny'` gives the smoke-test variant."""
  c = config_lib.default()
  c.model.name = 'ser_cnn'
  c.model.kwargs.widths = (16, 32, 64, 128)
  c.model.kwargs.stem_pool = (2, 4)
  # v2 ran with the input BatchNorm on the 128 input bins, before the (2, 4) average pool;
  # the runs with it after the pool (v1, v4) differ in other settings too (docs/recipe.md).
  c.model.kwargs.bn_before_pool = True
  c.num_epochs = 40

  # Random 3.2 s crops (clips are 2.9-5.3 s) with a frame mask for the attention pooling.
  c.data.crop_mode = 'crop_pad'
  c.data.input_shape = (128, 320)
  c.data.specaugment.enabled = True  # 2 freq masks <= 16 bins, 2 time masks <= 32 frames
  c.data.mixup_alpha = 0.0  # v1 (mixup 0.2, BatchNorm after the pool): 45.28% (docs/recipe.md)
  c.data.eval_frames = 528  # the longest RAVDESS speech clip: evaluate every frame

  c.optimizer.name = 'adamw'
  c.optimizer.learning_rate = 2e-3
  c.optimizer.weight_decay = 1e-2
  c.optimizer.label_smoothing = 0.1
  c.schedule.name = 'warmup_cosine'
  c.schedule.warmup_epochs = 2.0
  c.selection_rule = ('settings chosen on validation actors only (folds.validation_actors=3, '
                      'validation_seed 0, final epoch, seed 41; docs/recipe.md).')
  # :tiny keeps the 128 mel bins (crop_pad never resizes the mel axis): 0.64 s crops.
  return config_lib.with_variant(c, arg, __file__, tiny_input_shape=(128, 64))
