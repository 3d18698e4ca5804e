"""Layers rewritten for CPU speed give the values and gradients of the ones they replace:
layers.max_pool (vs nn.max_pool / reduce_window), layers.space_to_depth_conv (vs a strided
lax.conv_general_dilated), layers.one_channel_conv (vs lax.conv_general_dilated) and
layers.depthwise_conv (vs a grouped lax.conv_general_dilated)."""
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ser_jax.models import layers


def _grad(pool, x):
  return jax.grad(lambda x: (pool(x) ** 2).sum())(x)


@pytest.mark.parametrize('shape, window, stride, pad', [
    ((2, 31, 63, 3), 3, 2, 0),  # AlexNet: odd lengths, -inf fill of the last block
    ((2, 32, 64, 3), 3, 2, 0),
    ((2, 33, 8, 2), 3, 2, 1),  # ResNet's padded pool
    ((2, 64, 128, 4), 3, 2, 1),
    ((2, 7, 9, 3), 2, 2, 0),  # VGG: odd lengths drop the last row/column (floor mode)
    ((2, 8, 8, 3), 2, 2, 0),
    ((1, 3, 3, 1), 3, 2, 0),  # a single window
    ((2, 5, 5, 1), 3, 1, 1),  # overlapping stride 1
])
def test_matches_reduce_window(shape, window, stride, pad):
  x = jnp.asarray(np.random.default_rng(0).normal(size=shape).astype(np.float32))
  ours = lambda x: layers.max_pool(x, (window, window), (stride, stride), ((pad, pad),) * 2)
  ref = lambda x: nn.max_pool(x, (window, window), strides=(stride, stride),
                              padding=((pad, pad),) * 2)
  assert ours(x).shape == ref(x).shape
  np.testing.assert_array_equal(ours(x), ref(x))
  # No ties in random data: the gradient goes to the same single element of each window.
  np.testing.assert_array_equal(_grad(ours, x), _grad(ref, x))


def test_ties_share_the_gradient():
  x = jnp.zeros((1, 2, 2, 1))  # one 2x2 window, all four tied
  grad = jax.grad(lambda x: layers.max_pool(x, (2, 2), (2, 2)).sum())(x)
  assert float(grad.sum()) == pytest.approx(1.0)
  assert float(grad.min()) > 0  # shared, where reduce_window gives it all to one


def test_wide_window_falls_back_and_short_axis_is_an_error():
  x = jnp.asarray(np.random.default_rng(1).normal(size=(1, 9, 9, 2)).astype(np.float32))
  np.testing.assert_array_equal(layers.max_pool(x, (5, 5), (2, 2)),
                                nn.max_pool(x, (5, 5), strides=(2, 2)))
  with pytest.raises(ValueError, match='shorter than the window 3'):
    layers.max_pool(jnp.zeros((1, 2, 8, 1)), (3, 3), (2, 2))


@pytest.mark.parametrize('shape, kernel, stride, pad', [
    ((2, 63, 70, 3), 11, 4, 2),  # AlexNet's features_0, odd leftovers on both axes
    ((2, 20, 21, 2), 3, 2, 1),
    ((2, 9, 9, 2), 5, 3, 0),
    ((1, 8, 8, 1), 4, 4, 0),  # kernel a multiple of the stride: no kernel padding
])
def test_space_to_depth_conv_matches_strided_conv(shape, kernel, stride, pad):
  rng = np.random.default_rng(0)
  x = jnp.asarray(rng.normal(size=shape).astype(np.float32))
  w = jnp.asarray(rng.normal(size=(kernel, kernel, shape[-1], 5)).astype(np.float32))
  numbers = jax.lax.conv_dimension_numbers(x.shape, w.shape, ('NHWC', 'HWIO', 'NHWC'))
  args = ((stride, stride), ((pad, pad), (pad, pad)))
  ref = lambda x, w: jax.lax.conv_general_dilated(x, w, *args, dimension_numbers=numbers)
  ours = lambda x, w: layers.space_to_depth_conv(x, w, *args, dimension_numbers=numbers)
  expected = ref(x, w)
  assert ours(x, w).shape == expected.shape
  np.testing.assert_allclose(ours(x, w), expected, atol=1e-4, rtol=0)
  g = jnp.asarray(rng.normal(size=expected.shape).astype(np.float32))
  for got, want in zip(jax.vjp(ours, x, w)[1](g), jax.vjp(ref, x, w)[1](g)):
    np.testing.assert_allclose(got, want, atol=1e-4, rtol=0)


def test_space_to_depth_conv_rejects_what_it_does_not_do():
  x, w = jnp.zeros((1, 8, 8, 1)), jnp.zeros((3, 3, 1, 2))
  with pytest.raises(ValueError, match='equal 2-D strides'):
    layers.space_to_depth_conv(x, w, (2, 1), ((0, 0), (0, 0)))
  with pytest.raises(ValueError, match='explicit padding'):
    layers.space_to_depth_conv(x, w, (2, 2), 'SAME')
  with pytest.raises(ValueError, match='no dilation'):
    layers.space_to_depth_conv(x, w, (2, 2), ((0, 0), (0, 0)), rhs_dilation=(2, 2))


@pytest.mark.parametrize('shape, kernel, pad', [
    ((2, 16, 20, 1), (3, 3), (1, 1)),  # the VGG / AlexNet stem
    ((2, 9, 7, 1), (3, 5), (0, 2)),
    ((2, 6, 6, 2), (3, 3), (1, 1)),  # 2 channels: falls back to XLA's convolution
])
def test_one_channel_conv_matches_conv(shape, kernel, pad):
  rng = np.random.default_rng(0)
  x = jnp.asarray(rng.normal(size=shape).astype(np.float32))
  w = jnp.asarray(rng.normal(size=(*kernel, shape[-1], 3)).astype(np.float32))
  numbers = jax.lax.conv_dimension_numbers(x.shape, w.shape, ('NHWC', 'HWIO', 'NHWC'))
  args = ((1, 1), ((pad[0], pad[0]), (pad[1], pad[1])))
  ref = lambda x, w: jax.lax.conv_general_dilated(x, w, *args, dimension_numbers=numbers)
  ours = lambda x, w: layers.one_channel_conv(x, w, *args, dimension_numbers=numbers)
  expected = ref(x, w)
  np.testing.assert_allclose(ours(x, w), expected, atol=1e-5, rtol=0)
  g = jnp.asarray(rng.normal(size=expected.shape).astype(np.float32))
  for got, want in zip(jax.vjp(ours, x, w)[1](g), jax.vjp(ref, x, w)[1](g)):
    np.testing.assert_allclose(got, want, atol=1e-5, rtol=0)
  jitted = jax.jit(jax.grad(lambda w: (ours(x, w) ** 2).sum()))  # custom VJP under jit
  np.testing.assert_allclose(jitted(w), jax.grad(lambda w: (ref(x, w) ** 2).sum())(w),
                             rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize('shape, kernel, stride', [
    ((2, 16, 21, 4), 3, 1),
    ((2, 17, 20, 3), 3, 2),  # MobileNetV3's stride-2 3x3, odd height
    ((1, 9, 11, 5), 5, 2),
    ((2, 8, 8, 2), 5, 1),
])
def test_depthwise_conv_matches_grouped_conv(shape, kernel, stride):
  rng = np.random.default_rng(0)
  channels = shape[-1]
  x = jnp.asarray(rng.normal(size=shape).astype(np.float32))
  w = jnp.asarray(rng.normal(size=(kernel, kernel, 1, channels)).astype(np.float32))
  numbers = jax.lax.conv_dimension_numbers(x.shape, w.shape, ('NHWC', 'HWIO', 'NHWC'))
  pad = (kernel - 1) // 2
  args = ((stride, stride), ((pad, pad), (pad, pad)))
  ref = lambda x, w: jax.lax.conv_general_dilated(
      x, w, *args, dimension_numbers=numbers, feature_group_count=channels)
  ours = lambda x, w: layers.depthwise_conv(
      x, w, *args, dimension_numbers=numbers, feature_group_count=channels)
  # Jitted: run op by op, the k * k taps would each compile on their own.
  value_and_vjp = lambda f: jax.jit(lambda x, w, g: (f(x, w), jax.vjp(f, x, w)[1](g)))
  g = jnp.asarray(rng.normal(size=ref(x, w).shape).astype(np.float32))
  (got, got_grads), (want, want_grads) = value_and_vjp(ours)(x, w, g), value_and_vjp(ref)(x, w, g)
  np.testing.assert_allclose(got, want, atol=1e-5, rtol=0)
  for got_grad, want_grad in zip(got_grads, want_grads):
    np.testing.assert_allclose(got_grad, want_grad, atol=1e-4, rtol=0)
  # As nn.Conv's convolution: the same parameters and outputs as the grouped nn.Conv.
  conv = lambda fn: nn.Conv(channels, (kernel, kernel), (stride, stride), ((pad, pad),) * 2,
                            feature_group_count=channels, conv_general_dilated=fn)
  variables = conv(None).init(jax.random.key(0), x)
  np.testing.assert_allclose(jax.jit(conv(layers.depthwise_conv).apply)(variables, x),
                             conv(None).apply(variables, x), atol=1e-5, rtol=0)


def test_depthwise_conv_rejects_what_it_does_not_do():
  x = jnp.zeros((1, 8, 8, 4))
  with pytest.raises(ValueError, match='needs a 2-D depthwise convolution'):
    layers.depthwise_conv(x, jnp.zeros((3, 3, 4, 4)), (1, 1), ((1, 1), (1, 1)))  # dense
  with pytest.raises(ValueError, match='explicit padding'):
    layers.depthwise_conv(x, jnp.zeros((3, 3, 1, 4)), (1, 1), 'SAME', feature_group_count=4)
  with pytest.raises(ValueError, match='no dilation'):
    layers.depthwise_conv(x, jnp.zeros((3, 3, 1, 4)), (1, 1), ((1, 1), (1, 1)),
                          rhs_dilation=(2, 2), feature_group_count=4)


@pytest.mark.parametrize('shape, kernel, stride, pad', [
    ((2, 16, 20, 3), (3, 3), (2, 2), (1, 1)),  # ResNet's stage-opening conv
    ((2, 15, 21, 3), (3, 3), (2, 2), (1, 1)),  # odd lengths
    ((2, 16, 20, 3), (1, 1), (2, 2), (0, 0)),  # its 1x1 downsample shortcut
    ((2, 17, 22, 1), (7, 7), (2, 2), (3, 3)),  # the 7x7 stride-2 stem
    ((1, 13, 14, 2), (5, 4), (3, 2), (2, 1)),  # unequal strides and kernel sides
    ((2, 8, 8, 2), (3, 3), (1, 1), (1, 1)),  # stride 1: XLA's convolution, unchanged
])
def test_polyphase_conv_matches_strided_conv(shape, kernel, stride, pad):
  rng = np.random.default_rng(0)
  x = jnp.asarray(rng.normal(size=shape).astype(np.float32))
  w = jnp.asarray(rng.normal(size=(*kernel, shape[-1], 5)).astype(np.float32))
  numbers = jax.lax.conv_dimension_numbers(x.shape, w.shape, ('NHWC', 'HWIO', 'NHWC'))
  args = (stride, ((pad[0], pad[0]), (pad[1], pad[1])))
  ref = lambda x, w: jax.lax.conv_general_dilated(x, w, *args, dimension_numbers=numbers)
  ours = lambda x, w: layers.polyphase_conv(x, w, *args, dimension_numbers=numbers)
  expected = ref(x, w)
  np.testing.assert_array_equal(ours(x, w), expected)  # the forward is XLA's own
  g = jnp.asarray(rng.normal(size=expected.shape).astype(np.float32))
  for got, want in zip(jax.vjp(ours, x, w)[1](g), jax.vjp(ref, x, w)[1](g)):
    np.testing.assert_allclose(got, want, atol=1e-4, rtol=0)
