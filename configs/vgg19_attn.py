"""VGG19-BN + U-attention, fine-tuned from ImageNet: "VGG19 + Attn" row of the table.

Predecessor's protocol (from `config_lib.default()`): speech clips, 128-mel 48 kHz log-mel
resized to 128 x 256, its 4 speaker-independent folds, Adam 1e-4 with L2 1e-5, batch 32,
final-epoch metrics; 30 epochs for VGG19. A learned 1 -> 3 channel conv (`stem`) feeds the
pretrained `vgg19_bn` features; U-attention over the 512-channel map and a new classifier.

Transfer learning: pass the torchvision ImageNet weights file and nothing else,
    --config.init.pretrained=/path/vgg19_bn-c79401a0.pth
(`init.source` names the converter and `init.dont_load` the parts that are new here).

    python launch/train.py --config=configs/vgg19_attn.py --workdir=workdirs/vgg19_attn \
        --config.init.pretrained=/path/vgg19_bn-c79401a0.pth
    python launch/train.py --config=configs/vgg19_attn.py:tiny --workdir=/tmp/vgg19_tiny
"""
from ser_jax import config_lib


def get_config(arg=None):
  """Returns the config; `arg='tiny'` gives the smoke-test variant."""
  c = config_lib.default()
  c.model.name = 'vgg19_attn'
  c.num_epochs = 30
  c.init.expect_pretrained = True
  c.init.source = 'torchvision_vgg19_bn'
  # New parts, initialised fresh: the 1 -> 3 channel stem, the attention and the classifier.
  # Anchored on the first path element (with or without a leading 'params/' or
  # 'batch_stats/') so that e.g. a 'classifier' deeper in the tree never matches.
  c.init.dont_load = config_lib.top_level_parts('stem', 'attention', 'classifier')
  # Five 2x2 max-pools: 64 x 64 leaves a 2 x 2 map for the attention.
  return config_lib.with_variant(c, arg, __file__, tiny_input_shape=(64, 64))
