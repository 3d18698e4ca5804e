"""PANNs CNN14 (AudioSet-pretrained, 32 kHz) fine-tuned on RAVDESS speech.

Not a row of the predecessor's table: its CNN14 was trained from scratch on the 48 kHz
128-mel front end. This one starts from Kong et al.'s `Cnn14_mAP=0.431.pth` and therefore
sees exactly the features it was trained on: the `panns32k` front end (32 kHz, window
1024, hop 320 = 10 ms, 64 mels, 50-14000 Hz, 10*log10 power, no top_db), built by the
`ravdess/speech_panns32k` dataset (`data.frontend='panns32k'`). The PANNs head is kept
(`bn0`, max + mean pooling over time, `fc1`); only `fc_audioset` (527 AudioSet classes) is
replaced by a fresh 8-class layer. Everything else follows the predecessor's protocol (its
4 folds, Adam 1e-4 with L2 1e-5, batch 32, final-epoch metrics).

Input shape (64, 512), crop/pad with a frame mask, not a resize: the pretrained kernels
expect 10 ms frames, so clips are not stretched in time (a bilinear resize to a fixed
width would change their time scale by up to 1.8x, as RAVDESS speech lasts 2.9-5.3 s, i.e.
291-531 frames at hop 320). 512 frames (5.1 s) hold nearly every clip whole; longer ones
lose at most ~0.2 s (a random crop in training, a centred one in evaluation). Shorter clips
are padded and the mask keeps the padding out of CNN14's max + mean pooling over time.
512 is a multiple of CNN14's total time stride 32 (16 steps after the blocks).

    python launch/train.py --config=configs/cnn14_panns.py --workdir=workdirs/cnn14_panns \
        --config.init.pretrained='/path/Cnn14_mAP=0.431.pth'
    # or once imported (launch/import_weights.py --config=configs/cnn14_panns.py ...):
    python launch/train.py --config=configs/cnn14_panns.py --workdir=workdirs/cnn14_panns \
        --config.init.pretrained=imported/cnn14_panns
    python launch/train.py --config=configs/cnn14_panns.py:tiny --workdir=/tmp/panns_tiny

The 16 kHz checkpoint (`Cnn14_16k_mAP=0.438.pth`) needs the 16 kHz front end:
`--config.data.frontend=panns16k` (loading it with the 32 kHz features is
refused with an error).
"""
from ser_jax import config_lib


def get_config(arg=None):
  """Returns the config; `arg='tiny'` gives the smoke-test variant."""
  c = config_lib.default()
  c.model.name = 'cnn14_panns'
  c.model.num_classes = 8
  c.data.frontend = 'panns32k'  # the features Cnn14_mAP=0.431.pth was trained on
  c.data.input_shape = (64, 512)  # (mel, time): 64 PANNs mel bins, 5.1 s at 10 ms frames
  c.data.crop_mode = 'crop_pad'
  # Fine-tuning from AudioSet converges much faster than CNN14 from scratch (120 epochs).
  c.num_epochs = 30
  c.init.source = 'panns_cnn14'
  # fc_audioset (2048 -> 527) becomes the new 2048 -> 8 emotion head.
  c.init.dont_load = ('fc_audioset',)
  c.init.expect_pretrained = True
  # Tiny: five 2x2 poolings leave a 2 x 2 map.
  return config_lib.with_variant(c, arg, __file__, tiny_input_shape=(64, 64))
