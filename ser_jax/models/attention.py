"""U-vector attention pooling (Zhang et al. 2018, arXiv 1806.01506) with an optional mask.

Given a feature map a of shape (batch, F, T, C), every one of the F * T positions is scored
    e_i = u . tanh(W a_i + b),   alpha = softmax(lambda * e),   c = sum_i alpha_i a_i,
with W a square dense layer (`dense`, C -> C, with bias) and u a learned (1, C) vector
(`u`, Xavier-uniform; `dense` has PyTorch's nn.Linear init), lambda = 0.3. This replaces
global average pooling in "+ Attn" models.

Masking (the predecessor had none): `mask` is (batch, T) bool, True for real time steps of the
*feature map*; masked positions get exactly zero weight, so appending masked positions to a map
leaves the pooled vector unchanged. `time_mask` turns an input-frame mask into one at the
map's time resolution.
"""
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from ser_jax.models import layers

Dtype = Any


def time_mask(frame_mask, num_steps, stride=None):
  """Maps an input-frame mask (batch, time) to a feature map's time axis (batch, num_steps).

  Rule: step j of the map pools input frames [j * stride, (j + 1) * stride); it is valid when
  every one of those frames that exists in the input is valid. Frames past
  num_steps * stride (dropped by floor-mode pooling) are ignored. With `stride=None` the stride
  is `time // num_steps`, exact for chains of floor-mode 2x2 pools on 'SAME'-padded convs
  (e.g. CNN14: 6 pools, stride 64 on time) and a close approximation for valid convolutions or
  overlapping pools (pass the true stride where known). Convolutions still mix a few padded
  frames into border steps; the mask only decides which steps the pooling may weigh.

  Args:
    frame_mask: (batch, time) bool, True for real frames.
    num_steps: time length T of the feature map.
    stride: input frames per map step; default `time // num_steps` (at least 1).

  Returns:
    (batch, num_steps) bool.
  """
  frame_mask = jnp.asarray(frame_mask, bool)
  if frame_mask.ndim != 2:
    raise ValueError(f'time_mask: frame_mask must be (batch, time), got {frame_mask.shape}')
  batch, time = frame_mask.shape
  if stride is None:
    stride = max(time // num_steps, 1)
  needed = num_steps * stride
  if needed > time:
    # Steps that reach past the input only judge the frames that exist.
    pad = jnp.ones((batch, needed - time), bool)
    frame_mask = jnp.concatenate([frame_mask, pad], axis=1)
  frame_mask = frame_mask[:, :needed]
  # (batch, num_steps, stride) -> (batch, num_steps)
  return frame_mask.reshape(batch, num_steps, stride).all(axis=-1)


class UAttention(nn.Module):
  """U-vector attention pooling over every position of a (batch, F, T, C) map.

  Attributes:
    lambda_: softmax temperature factor (0.3 in the paper and the predecessor).
    dtype: compute dtype; params are float32, the softmax is computed in float32.
  """
  lambda_: float = 0.3
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x, mask=None):
    """Pools a feature map.

    Args:
      x: (batch, F, T, C) feature map.
      mask: optional (batch, T) bool, True for real time steps of the map.

    Returns:
      (batch, C) attention-weighted sum of the positions.
    """
    if x.ndim != 4:
      raise ValueError(f'UAttention expects (batch, F, T, C), got shape {x.shape}')
    batch, freq, steps, channels = x.shape
    x = x.astype(self.dtype)
    u = self.param('u', nn.initializers.xavier_uniform(), (1, channels), jnp.float32)
    hidden = jnp.tanh(layers.torch_dense(channels, channels, dtype=self.dtype, name='dense')(x))
    # (batch, F, T, C) . (C,) -> (batch, F, T) scores, softmax in float32.
    scores = jnp.einsum('bftc,c->bft', hidden, u[0].astype(self.dtype))
    logits = (self.lambda_ * scores.astype(jnp.float32)).reshape(batch, freq * steps)
    if mask is None:
      alpha = jax.nn.softmax(logits, axis=-1)
    else:
      mask = jnp.asarray(mask, bool)
      if mask.shape != (batch, steps):
        raise ValueError(
            f'UAttention: mask must be (batch, T) = {(batch, steps)} at the feature map\'s time '
            f'resolution, got {mask.shape}; see attention.time_mask')
      valid = jnp.broadcast_to(mask[:, None, :], (batch, freq, steps)).reshape(batch, -1)
      # Masked positions get exactly zero weight; an all-masked row pools to zeros (no NaN).
      peak = jnp.max(jnp.where(valid, logits, -jnp.inf), axis=-1, keepdims=True)
      peak = jnp.where(jnp.isfinite(peak), peak, 0.0)
      weights = jnp.where(valid, jnp.exp(logits - peak), 0.0)
      total = weights.sum(axis=-1, keepdims=True)
      alpha = weights / jnp.where(total > 0, total, 1.0)
    # (batch, F*T) x (batch, F*T, C) -> (batch, C)
    return jnp.einsum('bl,blc->bc', alpha.astype(self.dtype),
                      x.reshape(batch, freq * steps, channels))
