"""Initialisation of the models follows the predecessor's PyTorch rules (issue 4).

Each model is initialised once at a small input; every parameter is checked against the rule
its PyTorch counterpart follows:
  - nn.Conv / nn.Linear default: weight and bias U(+-1/sqrt(fan_in)), fan_in = in * prod(kernel);
  - nn.LSTM: every weight and bias U(+-1/sqrt(hidden));
  - torchvision VGG / ResNet convs: kaiming_normal (fan_out, ReLU gain), zero bias;
  - PANNs' init_layer (cnn14_panns): Xavier-uniform weights, zero bias;
  - U-attention's `u`: Xavier-uniform; BatchNorm scale 1, bias 0.
Bounds are exact; the standard deviation is compared on layers with enough elements (at
least MIN_STAT_SIZE) with a tolerance of several standard errors, so Flax's defaults
(lecun_normal, std 1/sqrt(fan_in), sqrt(3) x too wide) fail. Then one conv, one linear and an
LSTM are compared with torch's own freshly initialised layers.
"""
import math

import flax
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

from ser_jax.models import cnn_lstm
from ser_jax.models import get_model
from ser_jax.models import layers

LSTM_HIDDEN = 256  # CNNLSTM's LSTM width
MIN_STAT_SIZE = 1000  # std of the sample std: ~0.45/sqrt(n) (uniform), ~0.71/sqrt(n) (normal)
STD_RTOL = 0.07  # >= 3 standard errors at MIN_STAT_SIZE (and the keys are fixed)


def _check_uniform(w, bound, where):
  w = np.asarray(w, np.float64)
  peak = np.abs(w).max()
  assert peak <= bound * (1 + 1e-6), f'{where}: max |w| {peak:.5g} > bound {bound:.5g}'
  if w.size >= MIN_STAT_SIZE:
    std = w.std()
    assert std == pytest.approx(bound / math.sqrt(3), rel=STD_RTOL), (
        f'{where}: std {std:.5g}, U(+-{bound:.5g}) has {bound / math.sqrt(3):.5g}')
    assert peak >= 0.95 * bound, f'{where}: max |w| {peak:.5g} does not reach {bound:.5g}'
    assert abs(w.mean()) < 5 * bound / math.sqrt(3 * w.size), f'{where}: mean {w.mean():.3g}'


def _check_normal(w, std, where):
  w = np.asarray(w, np.float64)
  assert w.size >= MIN_STAT_SIZE, f'{where}: too small ({w.size}) for a normal check'
  assert w.std() == pytest.approx(std, rel=STD_RTOL), f'{where}: std {w.std():.5g} != {std:.5g}'
  assert abs(w.mean()) < 5 * std / math.sqrt(w.size), f'{where}: mean {w.mean():.3g}'
  # Untruncated, as torch's normal_: some draws lie beyond 2 std (about 4.6% of them).
  assert (np.abs(w) > 2 * std).mean() > 0.02, f'{where}: looks truncated'


def _kernel_fans(shape):
  """(fan_in, fan_out) of a Flax kernel (..., in, out), as PyTorch counts them."""
  receptive = math.prod(shape[:-2])
  return shape[-2] * receptive, shape[-1] * receptive


def _rule(model_name, path):
  """The PyTorch init of the parameter at `path` (names, leaf last), other than BN and `u`."""
  module = path[-2]
  if model_name == 'cnn14_panns':
    return 'panns'
  if model_name == 'vgg19_attn' and module.startswith('features_'):
    return 'torchvision'
  if model_name == 'resnet18' and path[0].startswith('layer'):
    return 'torchvision'
  if path[0] == 'lstm':
    return 'lstm'
  return 'torch'


# name -> (input shape, extra constructor arguments); small inputs, init only. The CPU
# compile of the random draws dominates (~5 s a small model), so the big backbones are slow.
MODELS = {
    'cnnx': ((1, 64, 64, 1), {}),
    'cnn14_attn': ((1, 16, 16, 1), {'widths': (64, 128, 256)}),
    'cnn14_panns': ((1, 16, 16, 1), {'widths': (64, 128, 256)}),
    'cnn_lstm': ((1, 64, 32, 1), {}),
    'cnn14': ((1, 64, 64, 1), {}),
    'vgg19_attn': ((1, 32, 32, 1), {}),
    'alexnet_attn': ((1, 63, 63, 1), {}),
    'resnet18': ((1, 32, 32, 1), {}),
}
SLOW = ('cnn14', 'vgg19_attn', 'alexnet_attn', 'resnet18')


@pytest.mark.parametrize(
    'name', [pytest.param(n, marks=pytest.mark.slow) if n in SLOW else n for n in MODELS])
def test_model_init_follows_pytorch(name):
  shape, kwargs = MODELS[name]
  model = get_model(name, **kwargs)
  init = jax.jit(lambda key, x: model.init({'params': key}, x, train=False))
  # 'rbg' keys: the same distributions as threefry, several times faster to compile on CPU.
  key = jax.random.key(0, impl='rbg')
  params = flax.traverse_util.flatten_dict(
      flax.core.unfreeze(init(key, jnp.zeros(shape))['params']))
  checked = {'torch': 0, 'big': 0}
  for path, value in params.items():
    where = f'{name}:{"/".join(path)}'
    parent, leaf = path[:-1], path[-1]
    rule = _rule(name, path)
    if parent + ('scale',) in params:  # BatchNorm
      expected = 1.0 if leaf == 'scale' else 0.0
      np.testing.assert_array_equal(value, expected, err_msg=where)
      continue
    if leaf == 'u':
      c = value.shape[-1]
      _check_uniform(value, math.sqrt(6 / (1 + c)), where)
      continue
    if rule == 'lstm':
      _check_uniform(value, 1 / math.sqrt(LSTM_HIDDEN), where)
      checked['torch'] += 1
      continue
    kernel = params[parent + ('kernel',)]
    fan_in, fan_out = _kernel_fans(kernel.shape)
    if rule == 'torch':
      _check_uniform(value, 1 / math.sqrt(fan_in), where)
      checked['torch'] += 1
    elif leaf == 'bias':  # torchvision and PANNs zero their biases
      np.testing.assert_array_equal(value, 0.0, err_msg=where)
    elif rule == 'torchvision':
      _check_normal(value, math.sqrt(2 / fan_out), where)
    else:  # PANNs' Xavier-uniform
      _check_uniform(value, math.sqrt(6 / (fan_in + fan_out)), where)
    checked['big'] += value.size >= MIN_STAT_SIZE
  assert checked['big'] + checked['torch'] > 0, f'{name}: no parameter was checked'
  if name != 'cnn14_panns':
    assert checked['torch'] >= 2, f'{name}: expected PyTorch-default layers, found none'


def _stats(a):
  a = np.asarray(a, np.float64)
  return a.std(), np.abs(a).max()


def _compare(ours, theirs, where, rtol):
  (s1, m1), (s2, m2) = _stats(ours), _stats(theirs)
  assert s1 == pytest.approx(s2, rel=rtol), f'{where}: std {s1:.5g} vs torch {s2:.5g}'
  assert m1 == pytest.approx(m2, rel=0.02), f'{where}: max |w| {m1:.5g} vs torch {m2:.5g}'


def test_conv_and_dense_match_torch_layers():
  torch.manual_seed(0)
  conv = torch.nn.Conv2d(16, 512, 3)
  linear = torch.nn.Linear(300, 1000)
  key = jax.random.key(1)
  ours_conv = layers.torch_conv(512, (3, 3), 16).init(key, jnp.zeros((1, 3, 3, 16)))['params']
  ours_dense = layers.torch_dense(1000, 300).init(key, jnp.zeros((1, 300)))['params']
  # Flax kernel (kh, kw, in, out) vs torch weight (out, in, kh, kw): same element count.
  _compare(ours_conv['kernel'], conv.weight.detach().numpy(), 'conv kernel', 0.03)
  _compare(ours_conv['bias'], conv.bias.detach().numpy(), 'conv bias', 0.12)
  _compare(ours_dense['kernel'], linear.weight.detach().numpy(), 'dense kernel', 0.03)
  _compare(ours_dense['bias'], linear.bias.detach().numpy(), 'dense bias', 0.12)
  # And not Flax's default: lecun_normal's std is sqrt(3) x larger.
  flax_default = flax.linen.Dense(1000).init(key, jnp.zeros((1, 300)))['params']['kernel']
  assert _stats(flax_default)[0] > 1.5 * _stats(linear.weight.detach().numpy())[0]


def test_lstm_matches_torch_lstm():
  torch.manual_seed(0)
  ref = torch.nn.LSTM(64, 32, batch_first=True)
  lstm = cnn_lstm.LSTM(32)
  params = lstm.init(jax.random.key(2), jnp.zeros((1, 3, 64)))['params']
  # Torch stacks the gates (i, f, g, o) along rows: (4H, in); ours has per-gate (in, H).
  ours = {
      'weight_ih_l0': np.concatenate([params[f'i{g}']['kernel'] for g in cnn_lstm.GATES], 1),
      'weight_hh_l0': np.concatenate([params[f'h{g}']['kernel'] for g in cnn_lstm.GATES], 1),
      'bias_ih_l0': np.concatenate([params[f'i{g}']['bias'] for g in cnn_lstm.GATES]),
      'bias_hh_l0': np.concatenate([params[f'h{g}']['bias'] for g in cnn_lstm.GATES]),
  }
  for key, value in ref.named_parameters():
    rtol = 0.04 if value.numel() >= MIN_STAT_SIZE else 0.15
    _compare(ours[key], value.detach().numpy(), f'lstm {key}', rtol)
