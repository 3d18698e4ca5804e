"""ResNet18 fine-tuned from ImageNet: "ResNet" row of the predecessor's table.

Predecessor's protocol (from `config_lib.default()`): speech clips, 128-mel 48 kHz log-mel
resized to 128 x 256, its 4 speaker-independent folds, Adam 1e-4 with L2 1e-5, batch 32,
final-epoch metrics; 40 epochs for ResNet. conv1 is a new 1-channel 7x7 stride-2 conv, fc a
new dense 512 -> 512, then a new classifier.

Transfer learning: pass the torchvision ImageNet weights file and nothing else,
    --config.init.pretrained=/path/resnet18-f37072fd.pth
(`init.source` names the converter and `init.dont_load` the parts that are new here).

    python launch/train.py --config=configs/resnet18.py --workdir=workdirs/resnet18 \
        --config.init.pretrained=/path/resnet18-f37072fd.pth
    python launch/train.py --config=configs/resnet18.py:tiny --workdir=/tmp/resnet18_tiny
"""
from ser_jax import config_lib


def get_config(arg=None):
  """Returns the config; `arg='tiny'` gives the smoke-test variant."""
  c = config_lib.default()
  c.model.name = 'resnet18'
  c.num_epochs = 40
  c.init.expect_pretrained = True
  c.init.source = 'torchvision_resnet18'
  # New parts, initialised fresh: the 1-channel conv1 (the pretrained one takes RGB), fc and
  # the classifier. bn1 stays pretrained. Anchored on the first path element, so the blocks'
  # own conv1 (layerK_M/conv1) is loaded.
  c.init.dont_load = config_lib.top_level_parts('conv1', 'fc', 'classifier')
  # Overall stride 32: 64 x 64 leaves a 2 x 2 map.
  return config_lib.with_variant(c, arg, __file__, tiny_input_shape=(64, 64))
