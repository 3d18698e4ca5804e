"""EfficientAT MobileNetV3 (Schmid et al., ICASSP 2023): AudioSet taggers, width 0.1 to 4.0.

The MobileNetV3-Large network of EfficientAT's `mn*_as` checkpoints, so they load unchanged
(`ser_jax.convert`, source 'efficientat_mn'); facts from the project's REFERENCE notes.
Input (batch, mel, time, 1): mel is the image height and time its width, as in the
reference's (batch, 1, mel, time), so kernels keep their orientation (128 mels from the
`efficientat32k` front end, 10 ms frames).

- Stem `features_0`: conv 3x3 stride 2 (1 -> c(16)) + BatchNorm + Hardswish.
- `features_1` .. `features_15`: inverted residual blocks of `V3_LARGE`. Each is a sequence
  `block_0, block_1, ...` of: a 1x1 expand conv + BN + act (left out when the expanded width
  equals the input width), a depthwise kxk conv (stride s) + BN + act, channel
  squeeze-excitation where the table says so, a 1x1 project conv + BN; plus the input when
  stride is 1 and the widths agree.
- `features_16`: conv 1x1 (c(160) -> 6 c(160)) + BN + Hardswish. The embedding is its mean
  over (mel, time): 384-d for width 0.4 (`MobileNetV3.embed`).
- Head "mlp": `classifier_2` Linear(6 c(160) -> c(1280)) + Hardswish + Dropout(0.2),
  `classifier_5` Linear(-> num_classes). Outputs are logits (AudioSet: 527; scores are their
  sigmoid).

c(n) = `make_divisible(n * width_mult)`. BatchNorm: epsilon 1e-3, PyTorch momentum 0.01
(Flax 0.99). Names mirror the checkpoint: torch `features.4.block.1.0` (conv) and `.1` (BN)
are Flax `features_4/block_1/conv` and `bn`; `features.4.block.2.conc_se_layers.0.fc1` is
`features_4/block_2/conc_se_layers_0/fc1`; `classifier.2` is `classifier_2`.

The squeeze-excitation is EfficientAT's "concurrent" SE with the channel setting of the
published checkpoints: one SE over channels (the others, over frequency or time, stack one
SE per dimension and take the elementwise max; not implemented).

Initialisation (training from scratch, and a new head): EfficientAT keeps torchvision's
MobileNetV3 scheme: convs kaiming_normal(fan_out), Linear weights N(0, 0.01), zero biases,
BatchNorm scale 1 and bias 0.

Depthwise convolutions are `nn.Conv(feature_group_count=channels)` computed by
`layers.depthwise_conv` (same parameters and values; XLA:CPU's grouped convolution is 5-15x
slower).
"""
from typing import Any, Callable, NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp

from ser_jax.models import layers

Dtype = Any

BN_MOMENTUM = 0.99  # PyTorch momentum 0.01
BN_EPSILON = 1e-3
WIDTHS = (0.1, 0.2, 0.4, 0.5, 1.0, 2.0, 3.0, 4.0)  # the published mn01 .. mn40
TIME_STRIDE = 32  # five stride-2 layers: map step j covers input frames [32 j, 32 j + 32)

_LINEAR_INIT = nn.initializers.normal(0.01)
_ACTIVATIONS: dict[str, Callable[..., Any]] = {'RE': nn.relu, 'HS': nn.hard_swish}


class BlockSpec(NamedTuple):
  """One row of the MobileNetV3-Large table (widths before `width_mult`)."""
  in_channels: int
  kernel: int
  expanded: int
  out_channels: int
  se: bool
  activation: str  # 'RE' (ReLU) | 'HS' (Hardswish)
  stride: int


V3_LARGE = (
    BlockSpec(16, 3, 16, 16, False, 'RE', 1),
    BlockSpec(16, 3, 64, 24, False, 'RE', 2),
    BlockSpec(24, 3, 72, 24, False, 'RE', 1),
    BlockSpec(24, 5, 72, 40, True, 'RE', 2),
    BlockSpec(40, 5, 120, 40, True, 'RE', 1),
    BlockSpec(40, 5, 120, 40, True, 'RE', 1),
    BlockSpec(40, 3, 240, 80, False, 'HS', 2),
    BlockSpec(80, 3, 200, 80, False, 'HS', 1),
    BlockSpec(80, 3, 184, 80, False, 'HS', 1),
    BlockSpec(80, 3, 184, 80, False, 'HS', 1),
    BlockSpec(80, 3, 480, 112, True, 'HS', 1),
    BlockSpec(112, 3, 672, 112, True, 'HS', 1),
    BlockSpec(112, 5, 672, 160, True, 'HS', 2),
    BlockSpec(160, 5, 960, 160, True, 'HS', 1),
    BlockSpec(160, 5, 960, 160, True, 'HS', 1),
)


NUM_FEATURES = len(V3_LARGE) + 2  # features_0 (stem) .. features_16 (last conv)


def trainable_after(frozen_features: int) -> str:
  """`config.optimizer.trainable` for `frozen_features` frozen leading feature layers: every
  later feature layer and the head ('' when nothing is frozen: every param trains)."""
  later = '|'.join(str(i) for i in _later_features(frozen_features, 'trainable_after'))
  if not frozen_features:
    return ''
  return rf'^(features_({later})|classifier_[25])/' if later else r'^classifier_[25]/'


def layer_groups(frozen_features: int) -> tuple[str, ...]:
  """`config.optimizer.layer_groups` for layer-wise learning-rate decay over the trainable
  part of `trainable_after(frozen_features)`: the head, then each later feature layer from
  the last down (`features_16`, ..., `features_{frozen_features}`)."""
  return (r'^classifier_[25]/',) + tuple(
      rf'^features_{i}/' for i in reversed(_later_features(frozen_features, 'layer_groups')))


def _later_features(frozen_features: int, caller: str) -> range:
  """The indices of the feature layers after `frozen_features` frozen ones."""
  if not 0 <= frozen_features <= NUM_FEATURES:
    raise ValueError(f'{caller}: frozen_features must be in 0..{NUM_FEATURES}, got '
                     f'{frozen_features}')
  return range(frozen_features, NUM_FEATURES)


def make_divisible(value: float, divisor: int = 8) -> int:
  """Nearest multiple of `divisor` (at least `divisor`), never more than 10% below `value`."""
  rounded = max(divisor, int(value + divisor / 2) // divisor * divisor)
  return rounded + divisor if rounded < 0.9 * value else rounded


class ConvBN(nn.Module):
  """Conv (no bias, 'same' padding (k - 1) / 2) -> BatchNorm -> optional activation.

  `groups == features` makes it depthwise. Submodules `conv` and `bn` (torch `.0`, `.1`).
  """
  features: int
  kernel: int = 1
  stride: int = 1
  groups: int = 1
  activation: str | None = None
  dtype: Dtype = jnp.float32
  bn_axis_name: str | None = None

  @nn.compact
  def __call__(self, x, train: bool):
    pad = (self.kernel - 1) // 2
    depthwise = self.groups > 1
    x = nn.Conv(self.features, (self.kernel, self.kernel), strides=(self.stride, self.stride),
                padding=((pad, pad), (pad, pad)), feature_group_count=self.groups,
                use_bias=False, kernel_init=layers.torchvision_conv_init, dtype=self.dtype,
                conv_general_dilated=layers.depthwise_conv if depthwise else None,
                name='conv')(x)
    x = layers.BatchNorm(momentum=BN_MOMENTUM, epsilon=BN_EPSILON, dtype=self.dtype,
                         axis_name=self.bn_axis_name, name='bn')(
                             x, use_running_average=not train)
    return _ACTIVATIONS[self.activation](x) if self.activation else x


def valid_steps(lengths, num_steps: int, stride: int):
  """(batch, 1, num_steps, 1) bool: the map steps a clip of `lengths` frames has at `stride`.

  A clip of T frames alone gives a map of ceil(T / stride) steps (every strided layer pads
  (k - 1) / 2 and halves with ceil), so those are the real steps of its padded map.
  (`attention.time_mask`'s rule, steps whose frames are all real, suits the floor-mode
  pooling CNNs; here a step with any real frame exists for the clip alone.)
  """
  real = -(-lengths // stride)  # (batch,) ceil
  return (jnp.arange(num_steps)[None, :] < real[:, None])[:, None, :, None]


def masked_mean(x, valid):
  """Mean of (batch, mel, time, C) over (mel, time) at the `valid` steps: (batch, C)."""
  if valid is None:
    return x.mean(axis=(1, 2))
  total = jnp.where(valid, x, 0).sum(axis=(1, 2))  # (batch, C)
  count = jnp.maximum(valid.sum(axis=(1, 2)), 1) * x.shape[1]  # (batch, 1)
  return total / count.astype(x.dtype)


class SqueezeExcitation(nn.Module):
  """Channel SE: mean over (mel, time) -> fc1 -> ReLU -> fc2 -> sigmoid -> scale the input.

  `valid` (batch, 1, time, 1), when given, restricts the mean to a clip's real steps.
  """
  squeeze: int
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x, valid=None):
    channels = x.shape[-1]
    s = masked_mean(x, valid)  # (batch, C)
    s = nn.relu(nn.Dense(self.squeeze, kernel_init=_LINEAR_INIT, dtype=self.dtype,
                         name='fc1')(s))
    s = nn.sigmoid(nn.Dense(channels, kernel_init=_LINEAR_INIT, dtype=self.dtype,
                            name='fc2')(s))
    return x * s[:, None, None, :]  # (batch, mel, time, C)


class ConcurrentSE(nn.Module):
  """EfficientAT's concurrent SE with channels only: `conc_se_layers_0`, one channel SE."""
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x, valid=None):
    squeeze = make_divisible(x.shape[-1] // 4)
    return SqueezeExcitation(squeeze, dtype=self.dtype, name='conc_se_layers_0')(x, valid)


class InvertedResidual(nn.Module):
  """One MobileNetV3 block, widths already scaled; its layers are `block_0`, `block_1`, ...

  `lengths` (batch,) real input frames of the network and `in_stride` (its frames per
  step of `x`), when given: the padding is zeroed before the depthwise conv and left out
  of the SE mean, as for the clip alone (the caller zeroes it in `x`).
  """
  in_channels: int
  kernel: int
  expanded: int
  out_channels: int
  se: bool
  activation: str
  stride: int
  dtype: Dtype = jnp.float32
  bn_axis_name: str | None = None

  @nn.compact
  def __call__(self, x, train: bool, lengths=None, in_stride: int = 1):
    norm = dict(dtype=self.dtype, bn_axis_name=self.bn_axis_name)
    names = (f'block_{j}' for j in range(4))
    y = x  # (batch, mel, time, in)
    if self.expanded != self.in_channels:
      y = ConvBN(self.expanded, activation=self.activation, name=next(names), **norm)(y, train)
      if lengths is not None:  # BN's shift made the padding non-zero
        y = jnp.where(valid_steps(lengths, y.shape[2], in_stride), y, 0)
    y = ConvBN(self.expanded, self.kernel, self.stride, groups=self.expanded,
               activation=self.activation, name=next(names), **norm)(y, train)
    if self.se:  # y: (batch, mel', time', expanded)
      valid = (None if lengths is None
               else valid_steps(lengths, y.shape[2], in_stride * self.stride))
      y = ConcurrentSE(dtype=self.dtype, name=next(names))(y, valid)
    y = ConvBN(self.out_channels, name=next(names), **norm)(y, train)  # (batch, mel', time', out)
    if self.stride == 1 and self.in_channels == self.out_channels:
      y = y + x
    return y


class MobileNetV3(nn.Module):
  """EfficientAT MobileNetV3 ("mlp" head). Default: mn04, 527 AudioSet classes.

  `mask` (batch, time), when given, marks each clip's real frames, which come first (the
  pipeline pads at the end): the model then computes what it computes for each clip alone,
  at its own length T. Before every layer the padded steps are zeroed (what a clip's own
  'same' zero padding shows the convolutions at its end), and the squeeze-excitations and
  the final mean use only the ceil(T / stride) real steps. Outputs then do not depend on how
  much padding a batch adds (whole-clip tagging pads to the longest clip of a run), up to
  BatchNorm in training, whose batch statistics include the zeroed steps. None: every step
  is real, as in the reference.

  `frozen_features` = n runs `features_0` .. `features_{n-1}` as in inference even when
  training (BatchNorm on its running statistics, which stay fixed) and stops the gradient
  after them, so no backward pass is spent on them: 17 freezes the whole backbone (a probe on
  the embedding). Their weights still need excluding from the optimiser (L2 and weight decay
  would move them): `config.optimizer.trainable`.
  """
  num_classes: int = 527
  width_mult: float = 0.4
  dropout_rate: float = 0.2
  frozen_features: int = 0
  dtype: Dtype = jnp.float32
  bn_axis_name: str | None = None

  def setup(self):
    c = lambda n: make_divisible(n * self.width_mult)
    norm = dict(dtype=self.dtype, bn_axis_name=self.bn_axis_name)
    blocks = [InvertedResidual(c(b.in_channels), b.kernel, c(b.expanded), c(b.out_channels),
                               b.se, b.activation, b.stride, **norm) for b in V3_LARGE]
    last = 6 * c(V3_LARGE[-1].out_channels)
    # A list attribute: Flax names its modules features_0 .. features_16.
    self.features = [ConvBN(c(16), 3, 2, activation='HS', **norm), *blocks,
                     ConvBN(last, activation='HS', **norm)]
    self.classifier_2 = nn.Dense(c(1280), kernel_init=_LINEAR_INIT, dtype=self.dtype)
    self.head_dropout = nn.Dropout(self.dropout_rate)
    self.classifier_5 = nn.Dense(self.num_classes, kernel_init=_LINEAR_INIT, dtype=self.dtype)

  def embed(self, x, train: bool = False, mask=None):
    """The pooled embedding (batch, 6 c(160)) (384 for width 0.4) that the head reads."""
    x = jnp.asarray(x, self.dtype)  # (batch, mel, time, 1)
    if x.ndim != 4 or x.shape[-1] != 1:
      raise ValueError(f'MobileNetV3 expects (batch, mel, time, 1), got shape {x.shape}')
    if not 0 <= self.frozen_features <= len(self.features):
      raise ValueError(f'MobileNetV3: frozen_features must be in 0..{len(self.features)}, '
                       f'got {self.frozen_features}')
    lengths = None if mask is None else jnp.sum(jnp.asarray(mask, bool), axis=-1)  # (batch,)
    stride = 1  # input frames per step of x
    for i, layer in enumerate(self.features):
      run = train and i >= self.frozen_features
      if lengths is None:
        x = layer(x, run)
      else:
        x = jnp.where(valid_steps(lengths, x.shape[2], stride), x, 0)
        x = (layer(x, run, lengths, stride) if isinstance(layer, InvertedResidual)
             else layer(x, run))
      stride *= layer.stride
      if i + 1 == self.frozen_features:
        x = jax.lax.stop_gradient(x)
    # x: (batch, mel / 32, time / 32, 6 c(160)) (ceil of each)
    return masked_mean(x, None if lengths is None
                       else valid_steps(lengths, x.shape[2], TIME_STRIDE))

  def __call__(self, x, train: bool = False, mask=None):
    x = self.embed(x, train, mask)
    x = nn.hard_swish(self.classifier_2(x))  # (batch, c(1280))
    x = self.head_dropout(x, deterministic=not train)
    return self.classifier_5(x)  # (batch, num_classes) logits
