"""VGG19-BN + U-attention: torchvision's ImageNet `vgg19_bn` features on a log-mel image.

Input (batch, mel, time, 1) is read as an image with H = mel, W = time. A learned 1 -> 3
channel conv3x3 (`stem`, with bias, pad 1, no activation) lets the 1-channel spectrogram
enter the RGB-pretrained features. Then torchvision's `vgg19_bn.features`: 16 x
(conv3x3 pad 1 -> BatchNorm -> ReLU) in five stages of 64, 128, 256, 512, 512 channels, each
stage ending in a 2x2 max-pool (floor mode); overall stride 32, so 128 x 256 gives a 4 x 8
map. U-attention pools the (batch, F, T, 512) map and `classifier` maps 512 -> classes.
torchvision's `avgpool` and ImageNet classifier are not used.

Layer names mirror the PyTorch keys: `features_{N}` carries torchvision's index N in
`vgg19_bn.features` (conv at N, its BatchNorm at N + 1), so torchvision's `features.N.*` and
the predecessor's `network.features.{N + 1}.*` (its index 0 was the stem) are renames.

Initialisation (what training without ImageNet weights starts from): torchvision's VGG init
for its features (kaiming_normal fan_out convs, zero biases; BatchNorm 1 / 0); PyTorch's
default for the predecessor's own modules (`stem`, attention `dense`, `classifier`).
"""
from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from ser_jax.models import attention as attention_lib
from ser_jax.models import layers

Dtype = Any

# torchvision's configuration "E" (vgg19): conv widths; 'M' is a 2x2 max-pool.
VGG19_CFG = (64, 64, 'M', 128, 128, 'M', 256, 256, 256, 256, 'M',
             512, 512, 512, 512, 'M', 512, 512, 512, 512, 'M')
STRIDE = 32  # five 2x2 pools: input time frames per map step


def vgg19_layer_indices(cfg=VGG19_CFG):
  """Yields (index, item) with torchvision's Sequential index of each conv (width) or pool.

  A conv occupies three Sequential slots (conv, BatchNorm, ReLU), a pool one.
  """
  index = 0
  for item in cfg:
    yield index, item
    index += 1 if item == 'M' else 3


class VGG19Attn(nn.Module):
  """VGG19-BN + U-attention. Input (batch, mel, time, 1); output (batch, num_classes).

  `mask` (batch, time) marks real input frames; map step j covers frames [32 j, 32 j + 32)
  (see `attention.time_mask`), and steps holding padding get zero attention weight.
  `bn_axis_name` averages BatchNorm batch statistics over that pmap axis when set.
  """
  num_classes: int = 8
  dtype: Dtype = jnp.float32
  bn_axis_name: str | None = None

  @nn.compact
  def __call__(self, x, train: bool = False, mask=None):
    x = jnp.asarray(x, self.dtype)  # (batch, mel, time, 1)
    # No activation after the stem: the predecessor's next module is torchvision's conv 0.
    x = layers.torch_conv(3, (3, 3), x.shape[-1], padding=((1, 1), (1, 1)), dtype=self.dtype,
                          conv_general_dilated=layers.one_channel_conv, name='stem')(x)
    for index, item in vgg19_layer_indices():
      if item == 'M':
        x = layers.max_pool(x, (2, 2), (2, 2))  # floor mode, like torch's MaxPool2d
      else:
        x = nn.Conv(item, (3, 3), padding=((1, 1), (1, 1)),
                    kernel_init=layers.torchvision_conv_init, dtype=self.dtype,
                    name=f'features_{index}')(x)
        x = layers.BatchNorm(dtype=self.dtype, axis_name=self.bn_axis_name,
                             name=f'features_{index + 1}')(x, use_running_average=not train)
        x = nn.relu(x)
    # x: (batch, mel / 32, time / 32, 512)
    if mask is not None:
      mask = attention_lib.time_mask(mask, x.shape[2], stride=STRIDE)
    x = attention_lib.UAttention(dtype=self.dtype, name='attention')(x, mask=mask)
    return layers.torch_dense(self.num_classes, x.shape[-1], dtype=self.dtype,
                              name='classifier')(x)  # (batch, classes)
