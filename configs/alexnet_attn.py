"""AlexNet + U-attention, fine-tuned from ImageNet: "AlexNet + Attn" row of the table.

Predecessor's protocol (from `config_lib.default()`): speech clips, 128-mel 48 kHz log-mel
resized to 128 x 256, its 4 speaker-independent folds, Adam 1e-4 with L2 1e-5, batch 32,
final-epoch metrics. The predecessor did not record AlexNet's epoch count; we use 30, the
count of VGG19 + Attn, the model built the same way (1 -> 3 channel stem, pretrained
features, U-attention, new classifier) and fine-tuned in the same table.

Transfer learning: pass the torchvision ImageNet weights file and nothing else,
    --config.init.pretrained=/path/alexnet-owt-7be5be79.pth
(`init.source` names the converter and `init.dont_load` the parts that are new here).

    python launch/train.py --config=configs/alexnet_attn.py --workdir=workdirs/alexnet_attn \
        --config.init.pretrained=/path/alexnet-owt-7be5be79.pth
    python launch/train.py --config=configs/alexnet_attn.py:tiny --workdir=/tmp/alexnet_tiny
"""
from ser_jax import config_lib


def get_config(arg=None):
  """Returns the config; `arg='tiny'` gives the smoke-test variant."""
  c = config_lib.default()
  c.model.name = 'alexnet_attn'
  c.num_epochs = 30  # Not recorded by the predecessor: VGG19 + Attn's count (module docstring).
  c.init.expect_pretrained = True
  c.init.source = 'torchvision_alexnet'
  # New parts, initialised fresh: the 1 -> 3 channel stem, the attention and the classifier.
  c.init.dont_load = config_lib.top_level_parts('stem', 'attention', 'classifier')
  # The stride-4 11x11 conv and three 3x3/2 max-pools leave a 1 x 1 map at 64 x 64.
  return config_lib.with_variant(c, arg, __file__, tiny_input_shape=(64, 64))
