"""Building blocks shared by the models: a PyTorch-exact BatchNorm.

Flax's `nn.BatchNorm` (flax 0.12.8) updates its running variance with the *biased* batch
variance (divided by n), while `torch.nn.BatchNorm{1,2}d` uses the *unbiased* one (divided by
n - 1) for the running estimate and the biased one to normalise the batch. Flax has no setting
for this, so `BatchNorm` below follows PyTorch exactly; with it, one train-mode step moves the
running statistics to the same values as PyTorch, which matters when weights travel either way.

Variable names are Flax's (`params/{scale,bias}`, `batch_stats/{mean,var}`), so a checkpoint
from `nn.BatchNorm` loads unchanged.
"""
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

Dtype = Any


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
