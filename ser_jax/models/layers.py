"""Building blocks shared by the models: PyTorch's default initialisers and a PyTorch-exact
BatchNorm.

Initialisers: the predecessor trained from PyTorch's defaults, which differ from Flax's
(lecun_normal kernels, zero biases). `nn.Conv{1,2}d` and `nn.Linear` draw weights from
kaiming_uniform(a=sqrt(5)) == U(-1/sqrt(fan_in), 1/sqrt(fan_in)) and biases from the same
range, fan_in = in_channels * prod(kernel) (or in_features). `torch_conv` and `torch_dense`
build Flax layers initialised that way (parameter names and shapes are Flax's, unchanged).
torchvision's ResNet and VGG re-initialise their own convs with kaiming_normal (fan_out, ReLU
gain): `torchvision_conv_init`.

Flax's `nn.BatchNorm` (flax 0.12.8) updates its running variance with the *biased* batch
variance (divided by n), while `torch.nn.BatchNorm{1,2}d` uses the *unbiased* one (divided by
n - 1) for the running estimate and the biased one to normalise the batch. Flax has no setting
for this, so `BatchNorm` below follows PyTorch exactly; with it, one train-mode step moves the
running statistics to the same values as PyTorch, which matters when weights travel either way.

Variable names are Flax's (`params/{scale,bias}`, `batch_stats/{mean,var}`), so a checkpoint
from `nn.BatchNorm` loads unchanged.
"""
import functools
import itertools
import math
from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

Dtype = Any

# U(-1/sqrt(fan_in), 1/sqrt(fan_in)): variance 1/(3 fan_in), so scale 1/3. Flax's fan_in of a
# conv kernel (kh, kw, in, out) is kh * kw * in and of a dense kernel (in, out) is in, as in
# PyTorch.
torch_kernel_init = nn.initializers.variance_scaling(1 / 3, 'fan_in', 'uniform')

# torchvision's resnet/vgg conv init: kaiming_normal_(mode='fan_out', nonlinearity='relu'),
# an untruncated normal with std sqrt(2 / (out * kh * kw)).
torchvision_conv_init = nn.initializers.variance_scaling(2.0, 'fan_out', 'normal')


def torch_bias_init(fan_in: int):
  """PyTorch's default bias init U(-1/sqrt(fan_in), 1/sqrt(fan_in)) for a known fan_in."""
  if fan_in < 1:
    raise ValueError(f'torch_bias_init: fan_in must be >= 1, got {fan_in}')
  bound = 1 / math.sqrt(fan_in)

  def init(key, shape, dtype=jnp.float32):
    return jax.random.uniform(key, shape, dtype, -bound, bound)

  return init


def torch_conv(features: int, kernel_size: Sequence[int], in_features: int,
               **kwargs) -> nn.Conv:
  """`nn.Conv` initialised like PyTorch's `nn.Conv{1,2}d` (kernel and bias).

  `in_features` is the input's channel count (the bias's fan_in needs it up front);
  other arguments go to `nn.Conv` unchanged (name, padding, use_bias, ...).
  """
  fan_in = in_features * math.prod(kernel_size)
  return nn.Conv(features, tuple(kernel_size), kernel_init=torch_kernel_init,
                 bias_init=torch_bias_init(fan_in), **kwargs)


def torch_dense(features: int, in_features: int, **kwargs) -> nn.Dense:
  """`nn.Dense` initialised like PyTorch's `nn.Linear` (kernel and bias)."""
  return nn.Dense(features, kernel_init=torch_kernel_init,
                  bias_init=torch_bias_init(in_features), **kwargs)


class BatchNorm(nn.Module):
  """BatchNorm over the last axis with PyTorch's semantics.

  Attributes:
    momentum: decay of the running averages (Flax convention: PyTorch momentum 0.1 is 0.9).
    epsilon: added to the variance (PyTorch's default 1e-5).
    dtype: compute dtype of the output; statistics are always computed in float32.
    axis_name: pmap/shard_map axis over which batch statistics are averaged (None: local).
  """
  momentum: float = 0.9
  epsilon: float = 1e-5
  dtype: Dtype = jnp.float32
  axis_name: str | None = None

  @nn.compact
  def __call__(self, x, use_running_average: bool):
    features = x.shape[-1]
    scale = self.param('scale', nn.initializers.ones, (features,), jnp.float32)
    bias = self.param('bias', nn.initializers.zeros, (features,), jnp.float32)
    ra_mean = self.variable('batch_stats', 'mean', jnp.zeros, (features,), jnp.float32)
    ra_var = self.variable('batch_stats', 'var', jnp.ones, (features,), jnp.float32)

    if use_running_average:
      mean, var = ra_mean.value, ra_var.value
    else:
      axes = tuple(range(x.ndim - 1))
      xf = x.astype(jnp.float32)
      count = xf.size // features
      sync = self.axis_name is not None and not self.is_initializing()
      mean = xf.mean(axes)
      if sync:
        mean = jax.lax.pmean(mean, self.axis_name)
      # Two-pass variance: E[(x - mean)^2] is exact where E[x^2] - mean^2 loses digits.
      var = jnp.square(xf - mean).mean(axes)
      if sync:
        var = jax.lax.pmean(var, self.axis_name)
        count = count * jax.lax.psum(1, self.axis_name)
      if not self.is_initializing():
        # PyTorch keeps the unbiased variance (n / (n - 1)) in its running estimate.
        unbiased = var * (count / jnp.maximum(count - 1, 1))
        ra_mean.value = self.momentum * ra_mean.value + (1 - self.momentum) * mean
        ra_var.value = self.momentum * ra_var.value + (1 - self.momentum) * unbiased

    # y = x * mul + add, with mul and add folded in float32 then cast once.
    mul = scale * jax.lax.rsqrt(var + self.epsilon)
    add = bias - mean * mul
    return x.astype(self.dtype) * mul.astype(self.dtype) + add.astype(self.dtype)


def max_pool(x, window: Sequence[int], strides: Sequence[int],
             padding: Sequence[tuple[int, int]] | None = None):
  """Max pooling over the spatial axes of (batch, *spatial, channels), floor mode, -inf pads.

  Same values as `nn.max_pool(x, window, strides, padding)` (max is exact in any order), but
  computed per axis from reshaped blocks and elementwise maxima instead of XLA's
  reduce_window, whose gradient (select_and_scatter) is slow on CPU: on a 2-core machine a
  2x2 pool of a (32, 128, 256, 64) batch took 1.8 s forward + backward against 0.23 s this way
  (PyTorch: 0.78 s), and a 3x3 stride-2 pool of (32, 64, 128, 64) 0.49 s against 0.14 s.

  Gradient at ties: reduce_window sends it to one of the tied maxima (PyTorch: the first);
  here it is shared among them (as `jnp.max` does); the total is the same. After a ReLU the
  usual ties are zeros, whose gradient the ReLU discards either way.

  Each axis needs window <= 2 * stride (true of every pool here); other settings fall back to
  `nn.max_pool`.
  """
  window, strides = tuple(window), tuple(strides)
  padding = tuple(padding) if padding is not None else ((0, 0),) * len(window)
  if any(k > 2 * s for k, s in zip(window, strides)):
    return nn.max_pool(x, window, strides=strides, padding=padding)
  for axis, (k, s, pad) in enumerate(zip(window, strides, padding), start=1):
    x = _max_pool_axis(x, axis, k, s, pad)
  return x


def _max_pool_axis(x, axis, k, s, pad):
  """1-D max pool of window k, stride s (k <= 2 s) along `axis`, with (lo, hi) -inf padding."""
  n = x.shape[axis] + pad[0] + pad[1]
  out = (n - k) // s + 1
  if out < 1:
    raise ValueError(f'max_pool: axis {axis} of length {x.shape[axis]} (padding {pad}) is '
                     f'shorter than the window {k}')
  # Window i covers [s i, s i + k): the first min(k, s) of block i and, when k > s, the first
  # k - s of block i + 1. So view the axis as blocks of s (trimmed or -inf padded to fit).
  blocks = out + (1 if k > s else 0)
  extra = blocks * s - n
  widths = [(0, 0)] * x.ndim
  widths[axis] = (pad[0], pad[1] + max(extra, 0))
  if any(widths[axis]):
    x = jnp.pad(x, widths, constant_values=-jnp.inf)
  x = jax.lax.slice_in_dim(x, 0, blocks * s, axis=axis)
  x = x.reshape(x.shape[:axis] + (blocks, s) + x.shape[axis + 1:])  # (..., blocks, s, ...)

  def max_of_first(m):  # max over the first m positions of every block
    result = jax.lax.index_in_dim(x, 0, axis + 1, keepdims=False)
    for j in range(1, m):
      result = jnp.maximum(result, jax.lax.index_in_dim(x, j, axis + 1, keepdims=False))
    return result

  pooled = jax.lax.slice_in_dim(max_of_first(min(k, s)), 0, out, axis=axis)
  if k > s:
    pooled = jnp.maximum(pooled, jax.lax.slice_in_dim(max_of_first(k - s), 1, out + 1, axis=axis))
  return pooled


def _undilated(lhs_dilation, rhs_dilation):
  """True when neither dilation (None or a tuple, as lax takes them) dilates anything."""
  return all(d == 1 for d in (*(lhs_dilation or ()), *(rhs_dilation or ())))


def space_to_depth_conv(lhs, rhs, window_strides, padding, lhs_dilation=None,
                        rhs_dilation=None, dimension_numbers=None, feature_group_count=1,
                        precision=None, **kwargs):
  """A strided 2-D convolution computed as a stride-1 one on space-to-depth blocks.

  Drop-in for `lax.conv_general_dilated` in `nn.Conv(conv_general_dilated=...)` (parameters
  unchanged) for channels-last inputs, equal strides s on both axes and explicit padding.
  Why: the input gradient of a stride-s convolution is, in XLA, a convolution over an input
  dilated by s (s - 1 zeros between samples), which XLA:CPU runs slowly: for AlexNet's
  11x11 stride-4 conv on a (32, 128, 256, 3) batch it took 194 ms, 5.8x its forward (33 ms).
  Regrouping every s x s block of pixels into channels makes it a stride-1 convolution with a
  ceil(k / s) kernel over s * s * C channels (the kernel zero-padded from k to a multiple of
  s: 1.19x the forward FLOPs for 11 -> 12), whose gradients are plain stride-1 convolutions.
  Out[i] = sum_{a < kb, r < s} block[i + a][r] * W[a s + r] = sum_{t < kb s} x[s i + t] W[t].
  """
  del kwargs  # Flax passes no other options for a plain nn.Conv
  s = window_strides[0]
  if (len(window_strides) != 2 or window_strides[1] != s or feature_group_count != 1
      or isinstance(padding, str) or not _undilated(lhs_dilation, rhs_dilation)):
    raise ValueError('space_to_depth_conv: needs equal 2-D strides, explicit padding, no '
                     f'dilation and no groups; got strides {window_strides}, padding {padding}, '
                     f'dilations {lhs_dilation} / {rhs_dilation}, groups {feature_group_count}')
  batch, channels = lhs.shape[0], lhs.shape[-1]
  k = rhs.shape[:2]
  kb = tuple(-(-size // s) for size in k)  # kernel size in blocks
  lengths = []
  widths = [(0, 0)]
  for axis in (0, 1):
    lo, hi = padding[axis]
    n = lhs.shape[1 + axis] + lo + hi
    out = (n - k[axis]) // s + 1
    need = s * (out - 1 + kb[axis])  # input length the block kernel reads
    widths.append((lo, hi + max(need - n, 0)))
    lengths.append(need)
  widths.append((0, 0))
  x = jnp.pad(lhs, widths)[:, :lengths[0], :lengths[1]]
  hb, wb = lengths[0] // s, lengths[1] // s
  x = x.reshape(batch, hb, s, wb, s, channels).transpose(0, 1, 3, 2, 4, 5)
  x = x.reshape(batch, hb, wb, s * s * channels)  # (N, H / s, W / s, s s C)
  w = jnp.pad(rhs, ((0, kb[0] * s - k[0]), (0, kb[1] * s - k[1]), (0, 0), (0, 0)))
  w = w.reshape(kb[0], s, kb[1], s, channels, -1).transpose(0, 2, 1, 3, 4, 5)
  w = w.reshape(kb[0], kb[1], s * s * channels, -1)  # (kb, kb, s s C, O)
  return jax.lax.conv_general_dilated(x, w, (1, 1), 'VALID', dimension_numbers=dimension_numbers,
                                      precision=precision)


def polyphase_conv(lhs, rhs, window_strides, padding, lhs_dilation=None, rhs_dilation=None,
                   dimension_numbers=None, feature_group_count=1, precision=None, **kwargs):
  """A strided 2-D convolution whose gradients are those of its stride-1 phase convolutions.

  Drop-in for `lax.conv_general_dilated` in `nn.Conv(conv_general_dilated=...)` (parameters
  unchanged) for channels-last inputs with explicit padding. The forward pass is XLA's
  strided convolution, unchanged. Why the backward pass differs: XLA computes the input
  gradient of a stride-s convolution as a convolution over the output gradient dilated by s
  (s - 1 zeros between samples), and XLA:CPU runs that slowly (ResNet18's first stride-2
  3x3 conv, 64 -> 128 channels on (32, 32, 64): input gradient 73 ms of a 137 ms forward +
  backward, PyTorch's whole layer 98 ms). A stride-s convolution is also the sum, over the
  s x s phases (r1, r2), of stride-1 'VALID' convolutions of the input phase x[r1::s, r2::s]
  with the kernel phase w[r1::s, r2::s] (out[o] = sum_t x[s o + t] w[t], t = s a + r); the
  gradients of that sum are stride-1 convolution gradients (and interior-padding of the
  phases) with the forward's FLOPs, no zeros. Anything else (stride 1, dilation, groups,
  string padding) goes to `lax.conv_general_dilated` unchanged.
  """
  del kwargs  # Flax passes no other options for a plain nn.Conv
  strided = (len(window_strides) == 2 and any(s > 1 for s in window_strides)
             and feature_group_count == 1 and not isinstance(padding, str)
             and _undilated(lhs_dilation, rhs_dilation))
  if not strided:
    return jax.lax.conv_general_dilated(
        lhs, rhs, window_strides, padding, lhs_dilation=lhs_dilation, rhs_dilation=rhs_dilation,
        dimension_numbers=dimension_numbers, feature_group_count=feature_group_count,
        precision=precision)
  return _polyphase_conv(lhs, rhs, tuple(window_strides), tuple(tuple(p) for p in padding),
                         precision)


_NHWC = ('NHWC', 'HWIO', 'NHWC')


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3, 4))
def _polyphase_conv(lhs, rhs, strides, padding, precision):
  return jax.lax.conv_general_dilated(lhs, rhs, strides, padding, dimension_numbers=_NHWC,
                                      precision=precision)


def _phase_sum(lhs, rhs, strides, padding, precision):
  """The strided convolution as a sum of stride-1 convolutions of its phases."""
  x = jnp.pad(lhs, ((0, 0), *padding, (0, 0)))  # (N, H + pads, W + pads, C)
  kernel = rhs.shape[:2]
  out = [(n - k) // s + 1 for n, k, s in zip(x.shape[1:3], kernel, strides)]
  y = 0
  for r1 in range(min(strides[0], kernel[0])):
    for r2 in range(min(strides[1], kernel[1])):
      w = rhs[r1::strides[0], r2::strides[1]]  # (A1, A2, C, O): this phase's taps
      # Output o of the phase reads phase samples o .. o + A - 1.
      phase = x[:, r1::strides[0], r2::strides[1]][:, :out[0] + w.shape[0] - 1,
                                                      :out[1] + w.shape[1] - 1]
      y = y + jax.lax.conv_general_dilated(phase, w, (1, 1), 'VALID', dimension_numbers=_NHWC,
                                           precision=precision)
  return y


def _polyphase_conv_fwd(lhs, rhs, strides, padding, precision):
  return _polyphase_conv(lhs, rhs, strides, padding, precision), (lhs, rhs)


def _polyphase_conv_bwd(strides, padding, precision, residuals, g):
  _, vjp = jax.vjp(lambda a, b: _phase_sum(a, b, strides, padding, precision), *residuals)
  return vjp(g)


_polyphase_conv.defvjp(_polyphase_conv_fwd, _polyphase_conv_bwd)


def one_channel_conv(lhs, rhs, window_strides, padding, lhs_dilation=None, rhs_dilation=None,
                     dimension_numbers=None, feature_group_count=1, precision=None, **kwargs):
  """A stride-1 convolution of a 1-channel input as kh * kw shifted multiply-adds.

  Drop-in for `lax.conv_general_dilated` in `nn.Conv(conv_general_dilated=...)` (parameters
  unchanged) for the 1 -> 3 channel stems in front of the ImageNet backbones. Why: XLA:CPU's
  convolution is inefficient with one input channel and few outputs (53 ms for a 3x3 1 -> 3
  conv of a (32, 128, 256, 1) batch, 2.6 ms as one fused elementwise loop; PyTorch: 24 ms).
  The gradients stay XLA's convolution gradients (the elementwise form's weight gradient is
  a slow set of reductions), via a custom VJP. Anything else (more input channels, strides,
  dilation, groups, string padding) goes to `lax.conv_general_dilated` unchanged.
  """
  plain = (lhs.shape[-1] == 1 and all(s == 1 for s in window_strides)
           and feature_group_count == 1 and not isinstance(padding, str)
           and _undilated(lhs_dilation, rhs_dilation))
  if not plain:  # e.g. a multi-channel input: XLA's convolution, unchanged
    return jax.lax.conv_general_dilated(
        lhs, rhs, window_strides, padding, lhs_dilation=lhs_dilation, rhs_dilation=rhs_dilation,
        dimension_numbers=dimension_numbers, feature_group_count=feature_group_count,
        precision=precision, **kwargs)
  return _one_channel_conv(lhs, rhs, tuple(tuple(p) for p in padding), dimension_numbers,
                           precision)


def _xla_conv(lhs, rhs, padding, dimension_numbers, precision):
  return jax.lax.conv_general_dilated(lhs, rhs, (1,) * (lhs.ndim - 2), padding,
                                      dimension_numbers=dimension_numbers, precision=precision)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3, 4))
def _one_channel_conv(lhs, rhs, padding, dimension_numbers, precision):
  del dimension_numbers, precision  # channels-last (Flax's), exact float arithmetic
  x = jnp.pad(lhs, ((0, 0), *padding, (0, 0)))  # (N, H + pads, W + pads, 1)
  out_shape = [n - k + 1 for n, k in zip(x.shape[1:-1], rhs.shape[:-2])]
  y = None
  for tap in itertools.product(*(range(k) for k in rhs.shape[:-2])):
    window = x[(slice(None), *(slice(t, t + n) for t, n in zip(tap, out_shape)))]
    term = window * rhs[tap][0]  # (N, *out, 1) * (O,) -> (N, *out, O)
    y = term if y is None else y + term
  return y


def _one_channel_conv_fwd(lhs, rhs, padding, dimension_numbers, precision):
  return _one_channel_conv(lhs, rhs, padding, dimension_numbers, precision), (lhs, rhs)


def _one_channel_conv_bwd(padding, dimension_numbers, precision, residuals, g):
  lhs, rhs = residuals
  _, vjp = jax.vjp(lambda a, b: _xla_conv(a, b, padding, dimension_numbers, precision),
                   lhs, rhs)
  return vjp(g)


_one_channel_conv.defvjp(_one_channel_conv_fwd, _one_channel_conv_bwd)


def depthwise_conv(lhs, rhs, window_strides, padding, lhs_dilation=None, rhs_dilation=None,
                   dimension_numbers=None, feature_group_count=1, precision=None, **kwargs):
  """A depthwise 2-D convolution as kh * kw shifted (strided) multiply-adds.

  Drop-in for `lax.conv_general_dilated` in `nn.Conv(conv_general_dilated=...)` (parameters
  unchanged) for channels-last depthwise convolutions: `feature_group_count` equal to the
  input channels, kernel (kh, kw, 1, C), explicit padding, no dilation. Why: XLA:CPU runs
  grouped convolutions through a slow generic path; for MobileNetV3's 3x3 stride-2 depthwise
  conv of a (32, 64, 256, 24) batch it took 0.58 s forward and 3.4 s forward + backward,
  against 0.07 s and 0.5 s as taps (2 cores, busy machine). The gradients are JAX's own of
  the taps (pads of the output gradient, and one reduction per tap for the kernel).
  """
  del dimension_numbers, precision, kwargs  # channels-last (Flax's), exact float arithmetic
  channels = lhs.shape[-1]
  kh, kw, per_group, out = rhs.shape
  if (lhs.ndim != 4 or feature_group_count != channels or per_group != 1 or out != channels
      or isinstance(padding, str) or not _undilated(lhs_dilation, rhs_dilation)):
    raise ValueError('depthwise_conv: needs a 2-D depthwise convolution (groups = input '
                     'channels = output channels, kernel (kh, kw, 1, C)), explicit padding and '
                     f'no dilation; got input {lhs.shape}, kernel {rhs.shape}, groups '
                     f'{feature_group_count}, padding {padding}, dilations {lhs_dilation} / '
                     f'{rhs_dilation}')
  sh, sw = window_strides
  x = jnp.pad(lhs, ((0, 0), *(tuple(p) for p in padding), (0, 0)))  # (N, H + pads, W + pads, C)
  out_h = (x.shape[1] - kh) // sh + 1
  out_w = (x.shape[2] - kw) // sw + 1
  y = None
  for i in range(kh):
    for j in range(kw):
      window = jax.lax.slice(x, (0, i, j, 0),
                             (x.shape[0], i + sh * (out_h - 1) + 1, j + sw * (out_w - 1) + 1,
                              channels), (1, sh, sw, 1))  # (N, out_h, out_w, C)
      term = window * rhs[i, j, 0]
      y = term if y is None else y + term
  return y
