"""UAttention pooling and the frame-mask helper."""
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

from ser_jax import convert as convert_lib
from ser_jax.models import attention
import torch_reference as tr

C = 16


@functools.lru_cache(maxsize=None)
def _init_fn():
  return jax.jit(attention.UAttention().init)


def _init(x):
  return _init_fn()(jax.random.PRNGKey(0), x)


@functools.lru_cache(maxsize=None)
def _pool():
  return jax.jit(attention.UAttention().apply)


def _map(shape, seed=0):
  return jax.random.normal(jax.random.PRNGKey(seed), shape)


def test_param_names_shapes_and_u_init():
  variables = _init(_map((2, 3, 4, C)))
  shapes = jax.tree_util.tree_map(jnp.shape, variables['params'])
  assert shapes == {'dense': {'kernel': (C, C), 'bias': (C,)}, 'u': (1, C)}
  u = np.asarray(variables['params']['u'])
  bound = np.sqrt(6.0 / (1 + C))  # Xavier-uniform on (1, C)
  assert np.all(np.abs(u) <= bound) and np.std(u) > bound / 4


def test_formula_matches_numpy():
  """c = sum_i softmax(0.3 e)_i a_i with e_i = u . tanh(W a_i + b) over all F*T positions."""
  x = _map((2, 3, 4, C))
  variables = _init(x)
  p = jax.tree_util.tree_map(np.asarray, variables['params'])
  a = np.asarray(x).reshape(2, 12, C).astype(np.float64)
  e = np.tanh(a @ p['dense']['kernel'] + p['dense']['bias']) @ p['u'][0]
  w = np.exp(0.3 * e - (0.3 * e).max(1, keepdims=True))
  w /= w.sum(1, keepdims=True)
  want = (w[..., None] * a).sum(1)
  np.testing.assert_allclose(np.asarray(_pool()(variables, x)), want, atol=1e-5)


def test_matches_torch_reference():
  """The predecessor's torch attention, converted with the predecessor_cnn14_attn table."""
  ref = tr.randomize(tr.UAttention(C), seed=5)
  sd = {f'attention.{k}': v for k, v in tr.state_dict_numpy(ref).items()}
  params = convert_lib.convert(sd, 'predecessor_cnn14_attn')['params']['attention']
  x = _map((2, 3, 4, C), seed=1)
  with torch.no_grad():
    # torch takes (batch, C, F, T)
    want = ref(torch.from_numpy(np.asarray(x).transpose(0, 3, 1, 2).copy())).numpy()
  np.testing.assert_allclose(np.asarray(_pool()({'params': params}, x)), want, atol=1e-5)


def test_masked_positions_do_not_change_pooled_vector():
  """A map padded with masked time steps pools to the same vector as the map alone."""
  x = _map((2, 3, 4, C))
  variables = _init(x)
  padded = jnp.concatenate([x, 100.0 * _map((2, 3, 5, C), seed=1)], axis=2)  # (2, 3, 9, C)
  mask = jnp.arange(9)[None, :] < 4
  mask = jnp.broadcast_to(mask, (2, 9))
  want = _pool()(variables, x)
  got = _pool()(variables, padded, mask)
  np.testing.assert_allclose(np.asarray(got), np.asarray(want), atol=1e-6)
  # Without the mask the padding would change the result: the test can fail.
  assert np.max(np.abs(np.asarray(_pool()(variables, padded)) - np.asarray(want))) > 1e-3


def test_per_row_mask_and_all_masked_row():
  x = _map((2, 3, 4, C))
  variables = _init(x)
  mask = jnp.array([[1, 1, 0, 0], [0, 0, 0, 0]], bool)
  got = np.asarray(_pool()(variables, x, mask))
  want0 = np.asarray(_pool()(variables, x[:, :, :2]))
  np.testing.assert_allclose(got[0], want0[0], atol=1e-6)
  np.testing.assert_array_equal(got[1], np.zeros(C))  # no NaN for an all-padding row


def test_mask_shape_is_checked():
  x = _map((2, 3, 4, C))
  with pytest.raises(ValueError, match='time_mask'):
    attention.UAttention().apply(_init(x), x, jnp.ones((2, 5), bool))


def test_bfloat16_compute_keeps_float32_params():
  x = _map((2, 3, 4, C))
  variables = _init(x)
  module = attention.UAttention(dtype=jnp.bfloat16)
  shapes = jax.eval_shape(module.init, jax.random.PRNGKey(0), x)
  assert all(a.dtype == jnp.float32 for a in jax.tree_util.tree_leaves(shapes))
  got = jax.jit(module.apply)(variables, x)
  assert got.dtype == jnp.bfloat16
  np.testing.assert_allclose(np.asarray(got, np.float32), np.asarray(_pool()(variables, x)),
                             atol=5e-2)


def test_time_mask_rule():
  frames = jnp.array([[True] * 10 + [False] * 6, [True] * 16])  # (2, 16)
  # stride 4: step j covers frames [4j, 4j + 4); step 2 holds frames 8..11, two of them padding.
  np.testing.assert_array_equal(
      attention.time_mask(frames, 4), [[True, True, False, False], [True] * 4])
  # Floor-mode remainder frames (past num_steps * stride) are ignored.
  np.testing.assert_array_equal(
      attention.time_mask(frames[:, :11], 2, stride=5), [[True, True], [True, True]])
  # Steps reaching past the input only judge the frames that exist.
  np.testing.assert_array_equal(
      attention.time_mask(frames[1:, :10], 3, stride=4), [[True, True, True]])
  with pytest.raises(ValueError, match='batch, time'):
    attention.time_mask(jnp.ones((16,), bool), 4)
