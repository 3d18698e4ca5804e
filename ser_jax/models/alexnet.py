"""AlexNet + U-attention: torchvision's ImageNet `alexnet` features on a log-mel image.

Input (batch, mel, time, 1) is read as an image with H = mel, W = time. A learned 1 -> 3
channel conv3x3 (`stem`, with bias, pad 1, no activation) feeds torchvision's
`alexnet.features`:
  0 conv 11x11 stride 4 pad 2 -> 64, ReLU, 2 max-pool 3x3 stride 2,
  3 conv 5x5 pad 2 -> 192, ReLU, 5 max-pool 3x3 stride 2,
  6 conv 3x3 pad 1 -> 384, ReLU, 8 conv 3x3 pad 1 -> 256, ReLU, 10 conv 3x3 pad 1 -> 256, ReLU,
  12 max-pool 3x3 stride 2
(no BatchNorm). Sizes: n -> floor((n - 7) / 4) + 1 -> three times floor((n - 3) / 2) + 1, so
128 x 256 gives a 3 x 7 map and the input needs at least 63 mel bins and frames. U-attention
pools the (batch, F, T, 256) map and `classifier` maps 256 -> classes. torchvision's
`avgpool` and ImageNet classifier are not used.

Layer names: `features_{N}` with torchvision's index N, so torchvision's `features.N.*` and
the predecessor's `network.features.{N + 1}.*` (its index 0 was the stem) are renames.

Initialisation: PyTorch's default everywhere (torchvision's AlexNet keeps it for its convs).
"""
from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from ser_jax.models import attention as attention_lib
from ser_jax.models import layers

Dtype = Any

# (torchvision index, out channels, kernel, stride, padding) of each conv; a max-pool 3x3
# stride 2 follows the convs at indices 0, 3 and 10.
ALEXNET_CONVS = ((0, 64, 11, 4, 2), (3, 192, 5, 1, 2), (6, 384, 3, 1, 1),
                 (8, 256, 3, 1, 1), (10, 256, 3, 1, 1))
POOL_AFTER = (0, 3, 10)
STRIDE = 32  # conv stride 4 and three stride-2 pools: input time frames per map step


def alexnet_map_size(n):
  """Length of one spatial axis of the final map for an input of length n (torch's formula)."""
  n = (n + 2 * 2 - 11) // 4 + 1
  for _ in POOL_AFTER:
    n = (n - 3) // 2 + 1
  return n


class AlexNetAttn(nn.Module):
  """AlexNet + U-attention. Input (batch, mel, time, 1); output (batch, num_classes).

  `mask` (batch, time) marks real input frames; map step j is treated as covering frames
  [32 j, 32 j + 32) (the overall stride; AlexNet's overlapping windows reach a little
  further, see `attention.time_mask`), and steps holding padding get zero attention weight.
  `bn_axis_name` is accepted for a uniform interface (AlexNet has no BatchNorm).
  """
  num_classes: int = 8
  dtype: Dtype = jnp.float32
  bn_axis_name: str | None = None

  @nn.compact
  def __call__(self, x, train: bool = False, mask=None):
    del train  # No dropout or BatchNorm in the features; torchvision's dropout is in its head.
    x = jnp.asarray(x, self.dtype)  # (batch, mel, time, 1)
    if min(alexnet_map_size(x.shape[1]), alexnet_map_size(x.shape[2])) < 1:
      raise ValueError(f'AlexNetAttn: input {x.shape[1]} x {x.shape[2]} (mel x time) is too '
                       'small for AlexNet\'s strides; both need at least 63')
    x = layers.torch_conv(3, (3, 3), x.shape[-1], padding=((1, 1), (1, 1)), dtype=self.dtype,
                          conv_general_dilated=layers.one_channel_conv, name='stem')(x)
    for index, width, kernel, stride, pad in ALEXNET_CONVS:
      # The stride-4 conv runs on space-to-depth blocks: same values, faster input gradient.
      conv_fn = layers.space_to_depth_conv if stride > 1 else None
      x = layers.torch_conv(width, (kernel, kernel), x.shape[-1], strides=(stride, stride),
                            padding=((pad, pad), (pad, pad)), dtype=self.dtype,
                            conv_general_dilated=conv_fn, name=f'features_{index}')(x)
      x = nn.relu(x)
      if index in POOL_AFTER:
        x = layers.max_pool(x, (3, 3), (2, 2))  # no padding, floor mode like torch
    # x: (batch, F, T, 256)
    if mask is not None:
      mask = attention_lib.time_mask(mask, x.shape[2], stride=STRIDE)
    x = attention_lib.UAttention(dtype=self.dtype, name='attention')(x, mask=mask)
    return layers.torch_dense(self.num_classes, x.shape[-1], dtype=self.dtype,
                              name='classifier')(x)  # (batch, classes)
