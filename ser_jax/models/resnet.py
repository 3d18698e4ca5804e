"""ResNet18 with a 1-channel stem and the predecessor's 512 -> 512 -> classes head.

Input (batch, mel, time, 1) is read as an image with H = mel, W = time. torchvision's
`resnet18` with its conv1 replaced by a 1-channel 7x7 stride-2 conv (pad 3, no bias):
conv1 -> bn1 -> ReLU -> max-pool 3x3 stride 2 pad 1, four stages of two BasicBlocks
(64, 128, 256, 512 channels; stages 2-4 start with stride 2 and a 1x1-conv + BatchNorm
shortcut), global average pooling, then `fc` 512 -> 512 (torchvision's fc, replaced) and
`classifier` 512 -> classes. Padding is explicit everywhere: 'SAME' pads stride-2 layers
asymmetrically (more at the end), unlike PyTorch.

The head's activation: the predecessor's state_dict has `network.fc` (512, 512) as a plain
Linear (not a Sequential) and a separate `classifier`, so whether a ReLU sat between them
cannot be read from its weights. `fc_relu=True` (default) assumes it did, as its CNN14 head
did (`fc_layer.0` + ReLU); set False to reproduce a predecessor that chained two Linears.

Layer names mirror torchvision's keys: `conv1`, `bn1`,
`layer{1..4}_{0,1}/{conv1,bn1,conv2,bn2,downsample_0,downsample_1}`, `fc`, `classifier`.

Initialisation (what training without ImageNet weights starts from): torchvision's ResNet init
for the block convs (kaiming_normal fan_out; BatchNorm 1 / 0, zero_init_residual off);
PyTorch's default for the modules the predecessor replaced or added (`conv1`, `fc`,
`classifier`).
"""
from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from ser_jax.models import attention as attention_lib
from ser_jax.models import layers

Dtype = Any

WIDTHS = (64, 128, 256, 512)
STRIDE = 32  # conv1, max-pool and stages 2-4 each halve: input time frames per map step


class BasicBlock(nn.Module):
  """torchvision's BasicBlock: conv3x3 -> BN -> ReLU -> conv3x3 -> BN, + shortcut, ReLU."""
  features: int
  stride: int = 1
  dtype: Dtype = jnp.float32
  bn_axis_name: str | None = None

  @nn.compact
  def __call__(self, x, train: bool):
    def bn(name):
      return layers.BatchNorm(dtype=self.dtype, axis_name=self.bn_axis_name, name=name)

    s = (self.stride, self.stride)
    residual = x
    # Strided convs: gradients as stride-1 convs of their phases (XLA:CPU's strided-conv
    # input gradient is slow); stride 1 is XLA's convolution either way.
    y = nn.Conv(self.features, (3, 3), strides=s, padding=((1, 1), (1, 1)), use_bias=False,
                kernel_init=layers.torchvision_conv_init, dtype=self.dtype,
                conv_general_dilated=layers.polyphase_conv, name='conv1')(x)
    y = nn.relu(bn('bn1')(y, use_running_average=not train))
    y = nn.Conv(self.features, (3, 3), padding=((1, 1), (1, 1)), use_bias=False,
                kernel_init=layers.torchvision_conv_init, dtype=self.dtype, name='conv2')(y)
    y = bn('bn2')(y, use_running_average=not train)
    if self.stride != 1 or x.shape[-1] != self.features:
      # torchvision's `downsample` Sequential: 1x1 conv (index 0) then BatchNorm (index 1).
      residual = nn.Conv(self.features, (1, 1), strides=s, padding=((0, 0), (0, 0)),
                         use_bias=False, kernel_init=layers.torchvision_conv_init,
                         dtype=self.dtype, conv_general_dilated=layers.polyphase_conv,
                         name='downsample_0')(x)
      residual = bn('downsample_1')(residual, use_running_average=not train)
    return nn.relu(y + residual)


class ResNet18(nn.Module):
  """ResNet18, 1-channel input. Input (batch, mel, time, 1); output (batch, num_classes).

  `mask` (batch, time), when given, restricts the global average to map steps whose input
  frames are all real (step j covers frames [32 j, 32 j + 32), see `attention.time_mask`);
  None averages every position, as the predecessor did.
  `bn_axis_name` averages BatchNorm batch statistics over that pmap axis when set.
  """
  num_classes: int = 8
  fc_relu: bool = True
  dtype: Dtype = jnp.float32
  bn_axis_name: str | None = None

  @nn.compact
  def __call__(self, x, train: bool = False, mask=None):
    x = jnp.asarray(x, self.dtype)  # (batch, mel, time, 1)
    # The predecessor's replacement conv1 is a fresh nn.Conv2d: PyTorch's default init.
    x = nn.Conv(64, (7, 7), strides=(2, 2), padding=((3, 3), (3, 3)), use_bias=False,
                kernel_init=layers.torch_kernel_init, dtype=self.dtype, name='conv1')(x)
    x = layers.BatchNorm(dtype=self.dtype, axis_name=self.bn_axis_name,
                         name='bn1')(x, use_running_average=not train)
    x = nn.relu(x)
    # Pads with -inf, like torch's MaxPool2d padding.
    x = layers.max_pool(x, (3, 3), (2, 2), padding=((1, 1), (1, 1)))
    for k, width in enumerate(WIDTHS, start=1):
      for m in range(2):
        stride = 2 if (k > 1 and m == 0) else 1
        x = BasicBlock(width, stride=stride, dtype=self.dtype, bn_axis_name=self.bn_axis_name,
                       name=f'layer{k}_{m}')(x, train)
    # x: (batch, mel / 32, time / 32, 512)
    if mask is None:
      x = x.mean(axis=(1, 2))
    else:
      valid = attention_lib.time_mask(mask, x.shape[2], stride=STRIDE)  # (batch, T)
      valid = valid[:, None, :, None]  # (batch, 1, T, 1)
      count = jnp.maximum(valid.sum(axis=(1, 2)) * x.shape[1], 1).astype(x.dtype)
      x = jnp.where(valid, x, 0).sum(axis=(1, 2)) / count
    # x: (batch, 512)
    x = layers.torch_dense(512, x.shape[-1], dtype=self.dtype, name='fc')(x)
    if self.fc_relu:
      x = nn.relu(x)
    return layers.torch_dense(self.num_classes, 512, dtype=self.dtype, name='classifier')(x)
