"""CNN14 (PANNs, Kong et al. 2020): the predecessor's variants and the original PANNs head.

- `CNN14` (`cnn14`, `cnn14_attn`): the predecessor's model. Input (batch, mel, time, 1) is
  read as an image with H = mel, W = time (as its PyTorch module did). Six blocks
  (conv3x3 no bias -> BN -> ReLU) x 2 -> 2x2 average pool -> dropout 0.1, widths 64..2048;
  then global average pooling (`head='gap'`) or U-vector attention (`head='attention'`,
  honouring `mask`), dense 2048 -> 512 + ReLU, dense 512 -> num_classes.
- `CNN14PANNs` (`cnn14_panns`): PANNs' `Cnn14` from the log-mel on, so its checkpoints load
  unchanged (`ser_jax.convert`, source 'panns_cnn14'). Input (batch, mel, time, 1) with
  mel = 64 for the checkpoints; internally transposed to PANNs' (batch, time, mel, 1) so the
  conv kernels keep their orientation. `bn0` normalises each mel bin; blocks 1-5 pool 2x2
  (average), block 6 does not pool; dropout 0.2 after each block; mean over frequency, then
  max + mean over time; dropout 0.5; fc1 2048 -> 2048 + ReLU; `fc_audioset` -> logits
  (PANNs applies a sigmoid for AudioSet's multi-label output; we return the logits).
  PANNs' SpecAugment lives in the input pipeline here, not in the model.

Layer names mirror the PyTorch keys: `conv_block{1..6}/{conv1,bn1,conv2,bn2}`, `fc_layer`,
`classifier`, `attention/{dense,u}`; PANNs: `bn0`, `conv_block*`, `fc1`, `fc_audioset`.

Initialisation: `CNN14` uses PyTorch's defaults (the predecessor's modules kept them);
`CNN14PANNs` uses PANNs' `init_layer` (Xavier-uniform weights, zero biases). BatchNorm starts
at scale 1, bias 0 in both.
"""
from typing import Any, Callable, Sequence

import flax.linen as nn
import jax.numpy as jnp

from ser_jax.models import attention as attention_lib
from ser_jax.models import layers

Dtype = Any
WIDTHS = (64, 128, 256, 512, 1024, 2048)
# PANNs' init_layer: nn.init.xavier_uniform_ on weights, biases filled with 0 (Flax's default).
_PANNS_INIT = nn.initializers.xavier_uniform()


class ConvBlock(nn.Module):
  """(conv3x3 'SAME', no bias -> BatchNorm -> ReLU) x 2, then an optional average pool."""
  features: int
  pool: tuple[int, int] = (2, 2)
  dtype: Dtype = jnp.float32
  bn_axis_name: str | None = None
  kernel_init: Callable[..., Any] = layers.torch_kernel_init  # PANNs: Xavier-uniform

  @nn.compact
  def __call__(self, x, train: bool):
    for j in (1, 2):
      x = nn.Conv(self.features, (3, 3), padding=((1, 1), (1, 1)), use_bias=False,
                  kernel_init=self.kernel_init, dtype=self.dtype, name=f'conv{j}')(x)
      x = layers.BatchNorm(dtype=self.dtype, axis_name=self.bn_axis_name,
                           name=f'bn{j}')(x, use_running_average=not train)
      x = nn.relu(x)
    if self.pool != (1, 1):
      # Floor mode like PyTorch's avg_pool2d: odd trailing rows/columns are dropped.
      x = nn.avg_pool(x, self.pool, strides=self.pool)
    return x


class CNN14(nn.Module):
  """The predecessor's CNN14. `head`: 'gap' (global average) or 'attention' (U-attention).

  `mask` (batch, time) is used by the attention head only (map step j covers input frames
  [64 j, 64 j + 64), see `attention.time_mask`); the 'gap' head ignores it.
  `bn_axis_name` averages BatchNorm batch statistics over that pmap axis when set.
  """
  num_classes: int = 8
  head: str = 'gap'
  dropout_rate: float = 0.1
  widths: Sequence[int] = WIDTHS  # block widths; smaller ones only for tests and smoke runs
  dtype: Dtype = jnp.float32
  bn_axis_name: str | None = None

  @nn.compact
  def __call__(self, x, train: bool = False, mask=None):
    if self.head not in ('gap', 'attention'):
      raise ValueError(f"CNN14: head must be 'gap' or 'attention', got {self.head!r}")
    x = jnp.asarray(x, self.dtype)  # (batch, mel, time, 1)
    for i, width in enumerate(self.widths, start=1):
      x = ConvBlock(width, dtype=self.dtype, bn_axis_name=self.bn_axis_name,
                    name=f'conv_block{i}')(x, train)
      x = nn.Dropout(self.dropout_rate, deterministic=not train)(x)
    # x: (batch, mel / 64, time / 64, 2048)
    if self.head == 'attention':
      if mask is not None:
        mask = attention_lib.time_mask(mask, x.shape[2], stride=2 ** len(self.widths))
      x = attention_lib.UAttention(dtype=self.dtype, name='attention')(x, mask=mask)
    else:
      x = x.mean(axis=(1, 2))
    x = nn.relu(layers.torch_dense(512, x.shape[-1], dtype=self.dtype,
                                   name='fc_layer')(x))  # (batch, 512)
    return layers.torch_dense(self.num_classes, 512, dtype=self.dtype, name='classifier')(x)


class CNN14PANNs(nn.Module):
  """PANNs Cnn14 (log-mel input). Default 527 AudioSet classes.

  `mask` (batch, time), when given, restricts the max + mean over time to the map steps whose
  input frames are all real (step j covers frames [32 j, 32 j + 32)); None pools every step,
  as PANNs does.
  """
  num_classes: int = 527
  dropout_rate: float = 0.2  # after each block
  head_dropout_rate: float = 0.5  # before fc1
  widths: Sequence[int] = WIDTHS  # block widths; smaller ones only for tests and smoke runs
  dtype: Dtype = jnp.float32
  bn_axis_name: str | None = None

  @nn.compact
  def __call__(self, x, train: bool = False, mask=None):
    x = jnp.asarray(x, self.dtype)  # (batch, mel, time, 1)
    x = jnp.transpose(x, (0, 2, 1, 3))  # (batch, time, mel, 1), PANNs' layout
    batch, steps, mels, channels = x.shape
    if channels != 1:
      raise ValueError(f'CNN14PANNs expects 1 input channel, got input shape {x.shape}')
    # bn0: one BatchNorm feature per mel bin.
    x = layers.BatchNorm(dtype=self.dtype, axis_name=self.bn_axis_name, name='bn0')(
        x.reshape(batch, steps, mels), use_running_average=not train)[..., None]
    for i, width in enumerate(self.widths, start=1):
      pool = (2, 2) if i < len(self.widths) else (1, 1)
      x = ConvBlock(width, pool=pool, dtype=self.dtype, bn_axis_name=self.bn_axis_name,
                    kernel_init=_PANNS_INIT, name=f'conv_block{i}')(x, train)
      x = nn.Dropout(self.dropout_rate, deterministic=not train)(x)
    x = x.mean(axis=2)  # (batch, time / 32, 2048): mean over frequency
    if mask is None:
      x = x.max(axis=1) + x.mean(axis=1)
    else:
      valid = attention_lib.time_mask(mask, x.shape[1], stride=2 ** (len(self.widths) - 1))
      valid = valid[..., None]  # (batch, time / 32, 1)
      peak = jnp.where(valid, x, -jnp.inf).max(axis=1)
      peak = jnp.where(jnp.isfinite(peak), peak, 0)  # all-masked rows pool to 0
      count = jnp.maximum(valid.sum(axis=1), 1).astype(x.dtype)
      x = peak + jnp.where(valid, x, 0).sum(axis=1) / count
    x = nn.Dropout(self.head_dropout_rate, deterministic=not train)(x)
    x = nn.relu(nn.Dense(self.widths[-1], kernel_init=_PANNS_INIT, dtype=self.dtype,
                         name='fc1')(x))
    # As in PANNs, the output layer reads fc1's activations before their dropout (PANNs
    # only applies that dropout to the returned embedding).
    return nn.Dense(self.num_classes, kernel_init=_PANNS_INIT, dtype=self.dtype,
                    name='fc_audioset')(x)
