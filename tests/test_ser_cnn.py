"""Tests of ser_jax/models/ser_cnn.py (no PyTorch counterpart: the model is ser-jax's own)."""
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ser_jax import models
from ser_jax.models import ser_cnn

SMALL = dict(widths=(4, 8), pools=((2, 2), (2, 2)), stem_pool=(1, 1))


def _init(model, shape):
  x = jnp.asarray(np.random.RandomState(0).randn(*shape).astype(np.float32))
  return x, model.init({'params': jax.random.PRNGKey(0)}, x, train=False)


def test_names_shapes_and_parameter_count():
  model = models.get_model('ser_cnn', num_classes=5, **SMALL)
  x, variables = _init(model, (2, 16, 32, 1))
  params = variables['params']
  assert sorted(params) == ['attention', 'block1_bn1', 'block1_conv1', 'block2_bn1',
                            'block2_conv1', 'classifier', 'input_bn']
  assert params['block2_conv1']['kernel'].shape == (3, 3, 4, 8)
  count = sum(p.size for p in jax.tree.leaves(params))
  # input_bn 2*16 (per mel bin); convs 9*1*4 + 9*4*8 (no bias); BNs 2*4 + 2*8; attention 8*8+8 + 8;
  # classifier 8*5+5.
  assert count == 32 + 36 + 288 + 8 + 16 + 80 + 45
  assert model.apply(variables, x, train=False).shape == (2, 5)
  with pytest.raises(ValueError, match='head must be one of'):
    _init(models.get_model('ser_cnn', head='max', **SMALL), (2, 16, 32, 1))


def test_avg_pool_matches_flax():
  x = jnp.asarray(np.random.RandomState(1).randn(2, 7, 9, 3).astype(np.float32))
  for window in ((2, 2), (2, 1), (3, 4)):
    np.testing.assert_allclose(ser_cnn._avg_pool(x, window),
                               nn.avg_pool(x, window, strides=window), rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize('head', ['attention', 'mean'])
def test_padding_past_the_receptive_field_never_changes_the_output(head):
  """16 real frames of 32: map steps 0-3 are valid; frames >= 19 reach none of them.

  (Two 3-wide convs and two 2x pools: step 3 covers frames 12-15 and its convs reach frame
  18.) With the mask, any values there leave the logits unchanged; without it they count.
  """
  model = models.get_model('ser_cnn', head=head, **SMALL)
  x, variables = _init(model, (2, 16, 32, 1))
  mask = jnp.broadcast_to(jnp.arange(32) < 16, (2, 32))
  other = x.at[:, :, 19:].set(jnp.asarray(np.random.RandomState(2).randn(2, 16, 13, 1) * 9))
  a = model.apply(variables, x, train=False, mask=mask)
  b = model.apply(variables, other, train=False, mask=mask)
  np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-6)
  assert not np.allclose(model.apply(variables, x, train=False),
                         model.apply(variables, other, train=False))
  full = jnp.ones((2, 32), bool)
  np.testing.assert_allclose(model.apply(variables, x, train=False, mask=full),
                             model.apply(variables, x, train=False), rtol=1e-6, atol=1e-6)


def test_train_mode_updates_batch_stats_and_uses_dropout():
  model = models.get_model('ser_cnn', **SMALL)
  x, variables = _init(model, (4, 16, 32, 1))
  run = lambda key: model.apply(variables, x, train=True, rngs={'dropout': key},
                                mutable=['batch_stats'])
  (out1, new1), (out2, _) = run(jax.random.PRNGKey(1)), run(jax.random.PRNGKey(2))
  assert not np.allclose(out1, out2)  # different dropout masks
  assert not np.allclose(new1['batch_stats']['block1_bn1']['mean'],
                         variables['batch_stats']['block1_bn1']['mean'])


@pytest.mark.parametrize('before', [False, True])
def test_input_bn_normalises_the_pooled_or_the_input_bins(before):
  """bn_before_pool: one statistic per input mel bin (16), else per pooled bin (8)."""
  model = models.get_model('ser_cnn', **dict(SMALL, stem_pool=(2, 1), bn_before_pool=before))
  x, variables = _init(model, (4, 16, 32, 1))
  _, new = model.apply(variables, x, train=True, rngs={'dropout': jax.random.PRNGKey(1)},
                       mutable=['batch_stats'])
  bins = np.asarray(x)[..., 0].mean(axis=(0, 2))  # (16,) per input mel bin
  if not before:
    bins = bins.reshape(8, 2).mean(axis=1)  # the (2, 1) average pool's bins
  # Running mean starts at 0 and moves by (1 - momentum 0.9) of the batch mean.
  np.testing.assert_allclose(new['batch_stats']['input_bn']['mean'], 0.1 * bins,
                             rtol=1e-5, atol=1e-6)


def test_patch_stem_and_temporal_blocks():
  x = np.arange(2 * 4 * 6).reshape(2, 4, 6, 1).astype(np.float32)
  patches = np.asarray(ser_cnn._patches(jnp.asarray(x), (2, 3)))  # (2, 2, 2, 6)
  assert patches.shape == (2, 2, 2, 6)
  np.testing.assert_array_equal(patches[1, 1, 0], x[1, 2:4, 0:3, 0].reshape(-1))
  model = models.get_model('ser_cnn', widths=(4, 8), pools=((2, 2), (2, 2)),
                           stem_pool=(2, 4), stem_features=6, temporal_widths=(10,))
  x, variables = _init(model, (2, 16, 64, 1))
  params = variables['params']
  assert params['stem']['kernel'].shape == (8, 6)  # one 2 x 4 patch -> 6 channels
  assert params['block1_conv1']['kernel'].shape == (3, 3, 6, 4)
  # After the 2-D blocks the map is (mel 2, time 4, 8 channels): 16 features per step.
  assert params['temporal1_conv']['kernel'].shape == (3, 16, 10)
  assert params['attention']['dense']['kernel'].shape == (10, 10)
  mask = jnp.broadcast_to(jnp.arange(64) < 40, (2, 64))
  assert model.apply(variables, x, train=False, mask=mask).shape == (2, 8)
