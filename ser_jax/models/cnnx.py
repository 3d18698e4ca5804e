"""CNN-X: the predecessor's shallow from-scratch CNN.

Three blocks of conv3x3 'VALID' (8, 16, 32 channels) + ReLU + 2x2 average pool, a flatten in
PyTorch's (C, H, W) order so imported dense weights line up (32 x 14 x 30 = 13440 features for
a 128 x 256 input), then dense 2048 + ReLU, dense 2048 + ReLU, dense num_classes.
The dense layer's size fixes the input at 128 x 256 (mel x time) for imported weights; other
sizes work when the model is trained from scratch.
Initialisation is PyTorch's default (`layers.torch_conv` / `layers.torch_dense`), as the
predecessor trained it from scratch.
"""
from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from ser_jax.models import layers

Dtype = Any


class CNNX(nn.Module):
  """CNN-X. Input (batch, mel, time, 1); output logits (batch, num_classes).

  `mask` is accepted for a uniform model interface and ignored: the flatten keeps every
  position, so padded frames cannot be excluded (the predecessor resized clips instead).
  """
  num_classes: int = 8
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x, train: bool = False, mask=None):
    del train, mask  # No dropout or BatchNorm; see the class docstring for the mask.
    x = jnp.asarray(x, self.dtype)  # (batch, mel, time, 1)
    for i, width in enumerate((8, 16, 32), start=1):
      x = layers.torch_conv(width, (3, 3), x.shape[-1], padding='VALID', dtype=self.dtype,
                            name=f'conv{i}')(x)
      x = nn.relu(x)
      x = nn.avg_pool(x, (2, 2), strides=(2, 2))
    batch = x.shape[0]
    # (batch, mel', time', C) -> (batch, C, mel', time') -> (batch, C * mel' * time'),
    # PyTorch's flatten order.
    x = jnp.transpose(x, (0, 3, 1, 2)).reshape(batch, -1)
    x = nn.relu(layers.torch_dense(2048, x.shape[-1], dtype=self.dtype, name='fc_layer1')(x))
    x = nn.relu(layers.torch_dense(2048, 2048, dtype=self.dtype, name='fc_layer2')(x))
    return layers.torch_dense(self.num_classes, 2048, dtype=self.dtype, name='fc_layer3')(x)
