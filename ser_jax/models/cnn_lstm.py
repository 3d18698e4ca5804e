"""1D CNN-LSTM: mel bins as channels of a 1-D signal over time, then an LSTM.

Input (batch, mel, time, 1) -> (batch, time, mel); conv1d k3 'VALID' 64 + ReLU + max-pool 2,
conv1d 128 + ReLU + max-pool 2, conv1d 256 + ReLU; an LSTM with 256 units over time; the last
hidden state -> dense num_classes. Names: `conv_layer{1,2,3}`, `lstm`, `classifier`.

The LSTM uses Flax's `nn.LSTMCell` per-gate names (`lstm/i{i,f,g,o}/...` input side,
`lstm/h{i,f,g,o}/...` hidden side) but, like PyTorch, keeps a bias on *both* sides
(bias_ih and bias_hh): parameter counts match PyTorch's and Adam moves the two biases exactly
as PyTorch does (a single merged bias would learn at half the rate). It computes the input
projection of every time step in one matmul before a `lax.scan` over the recurrence, much
faster than projecting inside the scan. Gates follow PyTorch: c' = f c + i g,
h' = o tanh(c'), with i, f, o sigmoid and g tanh.

Initialisation is PyTorch's default: convs and the classifier U(+-1/sqrt(fan_in)) for
weights and biases (`layers.torch_conv` / `layers.torch_dense`); every LSTM weight and bias
U(+-1/sqrt(hidden)), as `nn.LSTM` does.
"""
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from ser_jax.models import layers

Dtype = Any
GATES = ('i', 'f', 'g', 'o')


class LSTM(nn.Module):
  """Single-layer unidirectional LSTM over (batch, time, features); returns the last h.

  `lengths` (batch,), if given, freezes each row's state after its last real step, so the
  returned h is the one at that step (padding after it has no effect).
  """
  hidden: int
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x, lengths=None):
    batch, steps, features = x.shape
    # nn.LSTM's reset_parameters: every weight and bias U(-1/sqrt(H), 1/sqrt(H)).
    uniform = layers.torch_bias_init(self.hidden)
    w_i, w_h, b = [], [], []
    for g in GATES:
      # Input side `i{g}/{kernel,bias}` (features, H); hidden side `h{g}/{kernel,bias}`.
      kernel_i, bias_i = _GateParams((features, self.hidden), uniform, name=f'i{g}')()
      kernel_h, bias_h = _GateParams((self.hidden, self.hidden), uniform, name=f'h{g}')()
      w_i.append(kernel_i)
      w_h.append(kernel_h)
      b.append(bias_i + bias_h)
    w_i = jnp.concatenate(w_i, axis=1).astype(self.dtype)  # (features, 4H)
    w_h = jnp.concatenate(w_h, axis=1).astype(self.dtype)  # (H, 4H)
    b = jnp.concatenate(b).astype(self.dtype)  # (4H,)
    # Input projection of every step at once: (time, batch, 4H).
    projected = jnp.einsum('btf,fg->tbg', x.astype(self.dtype), w_i) + b

    def step(carry, inputs):
      c, h = carry
      proj, t = inputs
      gates = proj + h @ w_h
      i, f, g, o = jnp.split(gates, 4, axis=-1)
      new_c = jax.nn.sigmoid(f) * c + jax.nn.sigmoid(i) * jnp.tanh(g)
      new_h = jax.nn.sigmoid(o) * jnp.tanh(new_c)
      if lengths is not None:
        live = (t < lengths)[:, None]
        new_c = jnp.where(live, new_c, c)
        new_h = jnp.where(live, new_h, h)
      return (new_c, new_h), None

    zeros = jnp.zeros((batch, self.hidden), self.dtype)
    (_, h), _ = jax.lax.scan(step, (zeros, zeros), (projected, jnp.arange(steps)))
    return h


class _GateParams(nn.Module):
  """Holds one gate's kernel and bias under its own scope, like nn.LSTMCell's Dense."""
  shape: tuple[int, int]
  init_fn: Any  # for both kernel and bias, as in PyTorch

  @nn.compact
  def __call__(self):
    kernel = self.param('kernel', self.init_fn, self.shape, jnp.float32)
    bias = self.param('bias', self.init_fn, (self.shape[1],), jnp.float32)
    return kernel, bias


class CNNLSTM(nn.Module):
  """1D CNN-LSTM. Input (batch, mel, time, 1); output logits (batch, num_classes).

  `mask` (batch, time), when given, makes the LSTM stop at the last conv step whose input
  frames are all real, for clips padded at the end: after the convs and pools, step j sees
  input frames [4 j, 4 j + 18), so a clip of R real frames runs (R - 18) // 4 + 1 steps,
  exactly as many as the unpadded clip would. None runs over every step, as the
  predecessor did.
  """
  num_classes: int = 8
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x, train: bool = False, mask=None):
    del train  # No dropout or BatchNorm.
    x = jnp.asarray(x, self.dtype)  # (batch, mel, time, 1)
    if x.ndim != 4 or x.shape[-1] != 1:
      raise ValueError(f'CNNLSTM expects (batch, mel, time, 1), got shape {x.shape}')
    x = jnp.transpose(x[..., 0], (0, 2, 1))  # (batch, time, mel): mel bins are channels
    for i, width in enumerate((64, 128, 256), start=1):
      x = layers.torch_conv(width, (3,), x.shape[-1], padding='VALID', dtype=self.dtype,
                            name=f'conv_layer{i}')(x)
      x = nn.relu(x)
      if i < 3:
        x = nn.max_pool(x, (2,), strides=(2,))  # floor mode, like MaxPool1d(2)
    # x: (batch, time', 256)
    lengths = None
    if mask is not None:
      real = jnp.asarray(mask, bool).sum(axis=1)  # real frames come first
      # conv(3) -> pool(2) -> conv(3) -> pool(2) -> conv(3): receptive field 18 frames,
      # stride 4, so step j needs frames up to 4 j + 17.
      lengths = jnp.clip((real - 18) // 4 + 1, 1, x.shape[1])
    h = LSTM(256, dtype=self.dtype, name='lstm')(x, lengths)
    return layers.torch_dense(self.num_classes, 256, dtype=self.dtype, name='classifier')(h)
