"""1D CNN-LSTM: mel bins as channels of a 1-D signal over time, then an LSTM.

Input (batch, mel, time, 1) -> (batch, time, mel); conv1d k3 'VALID' 64 + ReLU + max-pool 2,
conv1d 128 + ReLU + max-pool 2, conv1d 256 + ReLU; an LSTM with 256 units over time; the last
hidden state -> dense num_classes. Names: `conv_layer{1,2,3}`, `lstm`, `classifier`.

The LSTM uses Flax's `nn.LSTMCell` per-gate names (`lstm/i{i,f,g,o}/...` input side,
`lstm/h{i,f,g,o}/...` hidden side) but, like PyTorch, keeps a bias on *both* sides
(bias_ih and bias_hh): parameter counts match PyTorch's and Adam moves the two biases exactly
as PyTorch does (a single merged bias would learn at half the rate). It computes the input
projection of every time step in one matmul before a `lax.scan` over the recurrence, much
faster than projecting inside the scan, and the recurrence has its own backward pass
(`recurrence`: the weight gradient as one matmul after the reverse loop). Gates follow
PyTorch: c' = f c + i g, h' = o tanh(c'), with i, f, o sigmoid and g tanh.

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
    # Input projection of every step in one 2-D matmul, time-major so that step t reads a
    # contiguous (batch, 4H) slice. Transposing x (features wide) is 4x cheaper than
    # transposing the projection, and plain 2-D dots (also in the gradient) are what
    # XLA:CPU runs fastest.
    x = jnp.transpose(x.astype(self.dtype), (1, 0, 2)).reshape(steps * batch, features)
    projected = (x @ w_i + b).reshape(steps, batch, 4 * self.hidden)  # (time, batch, 4H)
    live = None
    if lengths is not None:
      live = jnp.arange(steps)[:, None] < jnp.asarray(lengths)[None, :]  # (time, batch)
    return recurrence(projected, w_h, live)


def _cell(gates, c):
  """PyTorch's LSTM cell on pre-activations (batch, 4H) -> (c', h', activations, tanh c').

  The four activations are computed once, into one (batch, 4H) buffer, behind an
  optimization barrier. Without it XLA:CPU fuses each gate's sigmoid/tanh into every
  consumer (c', h', the saved residuals) and recomputes it there, in loop-body code far
  slower than the same work in bulk: 60 steps of the cell alone took 14.0 ms that way and
  4.1 ms this way, and the recurrence's forward (with its matmuls) 23 -> 13 ms (2-core
  machine, batch 32, 256 units, 60 steps; same values to the last bit).
  """
  hidden = c.shape[-1]
  acts = jnp.concatenate([jax.nn.sigmoid(gates[:, :2 * hidden]),
                          jnp.tanh(gates[:, 2 * hidden:3 * hidden]),
                          jax.nn.sigmoid(gates[:, 3 * hidden:])], axis=-1)
  acts = jax.lax.optimization_barrier(acts)
  i, f, g, o = jnp.split(acts, 4, axis=-1)
  new_c = f * c + i * g
  tanh_c = jnp.tanh(new_c)
  return new_c, o * tanh_c, acts, tanh_c


@jax.custom_vjp
def recurrence(projected, w_h, live):
  """The LSTM recurrence: last h (batch, H) from projected inputs (time, batch, 4H).

  `live` (time, batch) bool or None: where False the step leaves (c, h) unchanged.
  A custom VJP because autodiff of `lax.scan` accumulates the (H, 4H) weight gradient with
  one small matmul per step inside the reverse loop; here the reverse loop only carries
  (dh, dc) and emits the gate gradients, and the weight gradient is one (H, T B) x (T B, 4H)
  matmul after it. The values are those of autodiff (tests compare with torch.nn.LSTM).
  """
  return _recurrence_fwd(projected, w_h, live)[0]


def _recurrence_fwd(projected, w_h, live):
  def step(carry, inputs):
    c, h = carry
    proj, alive = inputs
    new_c, new_h, acts, tanh_c = _cell(proj + h @ w_h, c)
    if alive is not None:
      new_c = jnp.where(alive[:, None], new_c, c)
      new_h = jnp.where(alive[:, None], new_h, h)
    # Saved for the backward pass: the step's inputs h and c, its activations, tanh(c').
    return (new_c, new_h), (h, c, acts, tanh_c)

  zeros = jnp.zeros((projected.shape[1], w_h.shape[0]), projected.dtype)  # (batch, H)
  (_, h), saved = jax.lax.scan(step, (zeros, zeros), (projected, live))
  return h, (saved, w_h, live)


def _recurrence_bwd(residuals, dh_last):
  (h_prev, c_prev, acts, tanh_c), w_h, live = residuals
  w_h_t = w_h.T  # (4H, H)

  def step(carry, inputs):
    dh, dc = carry  # gradients w.r.t. this step's outputs h', c'
    c, act, tc, alive = inputs
    i, f, g, o = jnp.split(act, 4, axis=-1)
    dc = dc + dh * o * (1 - tc * tc)  # through h' = o tanh(c')
    d_gates = jnp.concatenate([dc * g * i * (1 - i), dc * c * f * (1 - f),
                               dc * i * (1 - g * g), dh * tc * o * (1 - o)], axis=-1)
    dh_prev, dc_prev = d_gates @ w_h_t, dc * f
    if alive is not None:  # a frozen step passes its output gradients straight through
      alive = alive[:, None]
      d_gates = jnp.where(alive, d_gates, 0)
      dh_prev = jnp.where(alive, dh_prev, carry[0])
      dc_prev = jnp.where(alive, dc_prev, carry[1])
    return (dh_prev, dc_prev), d_gates

  _, d_gates = jax.lax.scan(step, (dh_last, jnp.zeros_like(dh_last)),
                            (c_prev, acts, tanh_c, live), reverse=True)
  steps, batch, gates = d_gates.shape
  # (H, T B) x (T B, 4H): every step's contribution in one matmul.
  d_w_h = h_prev.reshape(steps * batch, -1).T @ d_gates.reshape(steps * batch, gates)
  return d_gates, d_w_h, None


recurrence.defvjp(_recurrence_fwd, _recurrence_bwd)


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
        x = layers.max_pool(x, (2,), (2,))  # floor mode, like MaxPool1d(2)
    # x: (batch, time', 256)
    lengths = None
    if mask is not None:
      real = jnp.asarray(mask, bool).sum(axis=1)  # real frames come first
      # conv(3) -> pool(2) -> conv(3) -> pool(2) -> conv(3): receptive field 18 frames,
      # stride 4, so step j needs frames up to 4 j + 17.
      lengths = jnp.clip((real - 18) // 4 + 1, 1, x.shape[1])
    h = LSTM(256, dtype=self.dtype, name='lstm')(x, lengths)
    return layers.torch_dense(self.num_classes, 256, dtype=self.dtype, name='classifier')(h)
