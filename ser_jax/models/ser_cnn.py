"""SER-CNN: a small from-scratch CNN sized for CPU training (configs/ser_jax_best.py).

Input (batch, mel, time, 1), read as an image with H = mel, W = time.
- `stem_pool`: average pool of the log-mel before any convolution (e.g. (2, 1) halves the
  mel axis), the cheapest way to cut the cost of every later layer; or, with
  `stem_features`, a learned patch embedding of the same size;
- `input_bn`: a BatchNorm with one feature per mel bin (PANNs' `bn0`), a learned
  normalisation of each frequency band over the training set (before the patch stem;
  after the average pool, or before it with `bn_before_pool`);
- blocks `block{i}`: (conv3x3 'SAME', no bias -> BatchNorm -> ReLU) x `convs_per_block`,
  average pool `pools[i]`, dropout `dropout_rate`;
- head: U-vector attention (`head='attention'`, `attention.UAttention` over every position
  of the last map, honouring `mask`) or a masked mean (`head='mean'`); dropout
  `head_dropout_rate`; dense -> num_classes (`classifier`).

The mask rule: map step j covers input frames [s j, s j + s) with s the product of the time
pools (stem included), the same rule as CNN14's (`attention.time_mask`).

Why this shape: with ~1000 training clips the predecessor's CNN14 (80 M parameters) and
CNN-X (a 13440 x 2048 dense layer) overfit the training speakers; a few hundred thousand
parameters, BatchNorm and a pooled head generalise better and train in minutes on 2 cores.
"""
import math
from typing import Any, Sequence

import flax.linen as nn
import jax.numpy as jnp

from ser_jax.models import attention as attention_lib
from ser_jax.models import layers

Dtype = Any
HEADS = ('attention', 'mean')


def _avg_pool(x, window):
  """Non-overlapping average pool of (batch, H, W, C), floor mode, as a reshape + mean.

  Same values as `nn.avg_pool(x, window, strides=window)`; reduce_window's gradient is
  several times slower on XLA:CPU (see `layers.max_pool`).
  """
  batch, h, w, c = x.shape
  ph, pw = window
  x = x[:, :h // ph * ph, :w // pw * pw]
  # (batch, H/ph, ph, W/pw, pw, C) -> mean over the two window axes
  return x.reshape(batch, h // ph, ph, w // pw, pw, c).mean(axis=(2, 4))


def _patches(x, window):
  """(batch, H, W, 1) -> (batch, H/ph, W/pw, ph * pw): non-overlapping patches, floor mode."""
  batch, h, w, c = x.shape
  ph, pw = window
  x = x[:, :h // ph * ph, :w // pw * pw]
  x = x.reshape(batch, h // ph, ph, w // pw, pw, c)
  return jnp.transpose(x, (0, 1, 3, 2, 4, 5)).reshape(batch, h // ph, w // pw, ph * pw * c)


class SERCNN(nn.Module):
  """Small CNN with masked pooling. Input (batch, mel, time, 1); logits (batch, classes)."""
  num_classes: int = 8
  widths: Sequence[int] = (32, 64, 128, 256)
  pools: Sequence[Sequence[int]] = ((2, 2), (2, 2), (2, 2), (2, 2))  # (mel, time) per block
  convs_per_block: int = 1
  stem_pool: Sequence[int] = (2, 1)  # (mel, time) average pool of the input
  # > 0: a learned patch stem instead of the average: each stem_pool patch of the input
  # -> stem_features channels (a dense layer over the patch's pixels, like a ViT patch
  # embedding; a matmul, cheap on CPU), so the downsampling keeps what averaging discards.
  stem_features: int = 0
  input_bn: bool = True
  # True: input_bn normalises the input's mel bins before the average pool (one feature
  # per input bin, e.g. 128); False: the pooled bins (e.g. 64). configs/ser_jax_best.py's
  # validated run (docs/recipe.md, v2) had True.
  bn_before_pool: bool = False
  # 1-D conv blocks over time after the 2-D ones (k3 'SAME', BN, ReLU, no pooling): the
  # last map's (mel', channels) become the channels. () keeps the 2-D map for the head.
  temporal_widths: Sequence[int] = ()
  head: str = 'attention'
  dropout_rate: float = 0.1
  head_dropout_rate: float = 0.3
  dtype: Dtype = jnp.float32
  bn_axis_name: str | None = None

  @nn.compact
  def __call__(self, x, train: bool = False, mask=None):
    if self.head not in HEADS:
      raise ValueError(f'SERCNN: head must be one of {HEADS}, got {self.head!r}')
    if len(self.pools) != len(self.widths):
      raise ValueError(f'SERCNN: {len(self.widths)} widths but {len(self.pools)} pools')
    x = jnp.asarray(x, self.dtype)  # (batch, mel, time, 1)
    if x.ndim != 4 or x.shape[-1] != 1:
      raise ValueError(f'SERCNN expects (batch, mel, time, 1), got shape {x.shape}')
    # input_bn normalises each mel bin of a 1-channel image: the patch stem's input, or the
    # average pool's output (its input with bn_before_pool).
    stem = tuple(int(p) for p in self.stem_pool)
    if self.stem_features:
      x = self._input_bn(x, train)
      x = layers.torch_dense(self.stem_features, stem[0] * stem[1], dtype=self.dtype,
                             name='stem')(_patches(x, stem))
    else:
      if self.bn_before_pool:
        x = self._input_bn(x, train)
      if stem != (1, 1):
        x = _avg_pool(x, stem)
      if not self.bn_before_pool:
        x = self._input_bn(x, train)
    for i, (width, pool) in enumerate(zip(self.widths, self.pools), start=1):
      pool = tuple(int(p) for p in pool)
      for j in range(1, self.convs_per_block + 1):
        x = nn.Conv(width, (3, 3), padding=((1, 1), (1, 1)), use_bias=False,
                    kernel_init=layers.torch_kernel_init, dtype=self.dtype,
                    name=f'block{i}_conv{j}')(x)
        x = layers.BatchNorm(dtype=self.dtype, axis_name=self.bn_axis_name,
                             name=f'block{i}_bn{j}')(x, use_running_average=not train)
        x = nn.relu(x)
      if pool != (1, 1):
        x = _avg_pool(x, pool)
      x = nn.Dropout(self.dropout_rate, deterministic=not train)(x)
    # x: (batch, mel', time', widths[-1])
    if self.temporal_widths:
      batch, freq, steps, channels = x.shape
      # (batch, time', mel' * channels): frequency position becomes part of the features.
      x = jnp.transpose(x, (0, 2, 1, 3)).reshape(batch, steps, freq * channels)
      for i, width in enumerate(self.temporal_widths, start=1):
        x = nn.Conv(width, (3,), padding=((1, 1),), use_bias=False,
                    kernel_init=layers.torch_kernel_init, dtype=self.dtype,
                    name=f'temporal{i}_conv')(x)
        x = layers.BatchNorm(dtype=self.dtype, axis_name=self.bn_axis_name,
                             name=f'temporal{i}_bn')(x, use_running_average=not train)
        x = nn.Dropout(self.dropout_rate, deterministic=not train)(nn.relu(x))
      x = x[:, None]  # (batch, 1, time', temporal_widths[-1])
    if mask is not None:
      stride = stem[1] * math.prod(int(p[1]) for p in self.pools)
      mask = attention_lib.time_mask(mask, x.shape[2], stride=stride)  # (batch, time')
    if self.head == 'attention':
      x = attention_lib.UAttention(dtype=self.dtype, name='attention')(x, mask=mask)
    elif mask is None:
      x = x.mean(axis=(1, 2))
    else:
      valid = mask[:, None, :, None].astype(x.dtype)  # (batch, 1, time', 1)
      count = jnp.maximum(valid.sum(axis=(1, 2)) * x.shape[1], 1)
      x = (x * valid).sum(axis=(1, 2)) / count
    # x: (batch, widths[-1])
    x = nn.Dropout(self.head_dropout_rate, deterministic=not train)(x)
    return layers.torch_dense(self.num_classes, x.shape[-1], dtype=self.dtype,
                              name='classifier')(x)

  def _input_bn(self, x, train: bool):
    """One BatchNorm feature per mel bin of a (batch, mel, time, 1) image (if enabled)."""
    if not self.input_bn:
      return x
    y = jnp.transpose(x[..., 0], (0, 2, 1))  # (batch, time, mel): mel last
    y = layers.BatchNorm(dtype=self.dtype, axis_name=self.bn_axis_name, name='input_bn')(
        y, use_running_average=not train)
    return jnp.transpose(y, (0, 2, 1))[..., None]
