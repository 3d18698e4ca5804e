"""EfficientAT mn04 (MobileNetV3, width 0.4, AudioSet mAP 0.432) fine-tuned on RAVDESS speech.

Not a row of the predecessor's table: a transfer-learning row that trains on CPU. It starts
from Schmid et al.'s `mn04_as_mAP_432.pt` (MIT licence) and therefore sees the features it
was trained on: the `efficientat32k` front end (32 kHz, pre-emphasis, window 800, hop 320 =
10 ms, 128 Kaldi mels to 15 kHz, (ln(S + 1e-5) + 4.5) / 5), built by the
`ravdess/speech_efficientat32k` dataset config. The last Linear (`classifier_5`, 512 -> 527
AudioSet classes) is replaced by a fresh 512 -> 8 layer. The predecessor's 4 folds, batch 32
and final-epoch metrics are kept; the optimiser, schedule, epochs, augmentation and the
frozen part were chosen on validation actors only (3 of each fold's 18 training actors,
`--config.folds.validation_actors=3`; docs/efficientat.md has the selection table and the
commands).

Frozen part: the stem and the first six blocks (`features_0` .. `features_6`, the
64 x 192 .. 16 x 48 resolution layers) keep their AudioSet weights and BatchNorm statistics
and get no backward pass, which makes a training step about 3.5x cheaper on CPU (most of the
depthwise work is there). `model.kwargs.frozen_features` and `optimizer.trainable` go
together: set both, with `efficientat.trainable_after(n)` (coupled L2 through Adam would
otherwise move every frozen weight by about the learning rate per step).

Input (128, 384), crop/pad with a frame mask, not a resize: the pretrained kernels expect
10 ms frames, so clips are not stretched in time. RAVDESS speech lasts 2.9-5.3 s (294-528
frames) with its speech in the middle (at most 3.6 s of it): a 3.84 s window holds all the
speech of nearly every clip (random crops in training, centred in evaluation); shorter clips
are padded, and with the frame mask the network computes each clip as if alone at its own
length (the padding never reaches the squeeze-excitations or the pooling). 384 is a
multiple of the network's time stride 32.

    python launch/train.py --config=configs/efficientat_mn04.py --workdir=workdirs/effat \
        --config.init.pretrained=/path/to/mn04_as_mAP_432.pt
    python launch/train.py --config=configs/efficientat_mn04.py:tiny --workdir=/tmp/effat_tiny
"""
from ser_jax import config_lib
from ser_jax.models import efficientat

FROZEN_FEATURES = 7


def get_config(arg=None):
  """Returns the config; `arg='tiny'` gives the smoke-test variant."""
  c = config_lib.default()
  c.model.name = 'efficientat_mn04'
  c.model.num_classes = 8
  c.model.kwargs.frozen_features = FROZEN_FEATURES
  c.model.kwargs.dropout_rate = 0.2  # the head's, as EfficientAT trains it
  c.data.frontend = 'efficientat32k'  # the features mn04_as_mAP_432.pt was trained on
  c.data.input_shape = (128, 384)  # (mel, time): 128 Kaldi mels, 3.84 s at 10 ms frames
  c.data.crop_mode = 'crop_pad'
  c.data.specaugment.enabled = True  # 2 + 2 masks of <= 16 mels / <= 32 frames
  c.data.mixup_alpha = 0.2  # chosen on validation actors over none (docs/efficientat.md)
  c.num_epochs = 30  # chosen on validation actors over 15 (docs/efficientat.md)
  c.optimizer.learning_rate = 1e-3  # chosen on validation actors (docs/efficientat.md)
  c.optimizer.trainable = efficientat.trainable_after(FROZEN_FEATURES)
  # For --config.optimizer.layer_decay=d < 1 (off by default): the head at lr, features_16
  # at lr * d, ..., features_7 at lr * d**10.
  c.optimizer.layer_groups = efficientat.layer_groups(FROZEN_FEATURES)
  c.schedule.name = 'warmup_cosine'
  c.schedule.warmup_epochs = 1.0
  c.init.source = 'efficientat_mn'
  # classifier_5 (512 -> 527 AudioSet classes) becomes the new 512 -> 8 emotion head.
  c.init.dont_load = config_lib.top_level_parts('classifier_5')
  c.init.expect_pretrained = True
  return config_lib.with_variant(c, arg, __file__, tiny_input_shape=(128, 32))
