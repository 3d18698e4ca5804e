"""Audio models vs their PyTorch references (tests/torch_reference.py), through convert().

For each model: random torch weights and BatchNorm running statistics -> state_dict ->
`ser_jax.convert.convert` -> Flax variables; then equal parameter counts and tree shapes,
eval-mode logits within 1e-4, and one train-mode forward (dropout off on both sides, so
every BatchNorm sees the same activations) moving the running statistics to the same values.
"""
import copy
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

from ser_jax import convert as convert_lib
from ser_jax import models
from ser_jax.models import cnn_lstm
import torch_reference as tr

TINY = (4, 8, 8, 16, 16, 32)  # CNN14 block widths of the fast variants; same code paths
# case -> (registry name, input (mel, time), model kwargs (both sides), Flax kwargs that
# switch dropout off for the train-mode check)
CASES = {
    'cnn14-tiny': ('cnn14', (64, 64), {'widths': TINY}, {'dropout_rate': 0.0}),
    'cnn14_attn-tiny': ('cnn14_attn', (64, 128), {'widths': TINY}, {'dropout_rate': 0.0}),
    'cnn14_panns-tiny': ('cnn14_panns', (64, 64), {'widths': TINY},
                         {'dropout_rate': 0.0, 'head_dropout_rate': 0.0}),
    'cnnx': ('cnnx', (128, 256), {}, {}),  # the 13440-feature dense layer fixes 128 x 256
    'cnn_lstm': ('cnn_lstm', (128, 64), {}, {}),
    # The full-size CNN14s (76-81 M parameters): the same checks on the real widths.
    'cnn14': ('cnn14', (64, 64), {}, {'dropout_rate': 0.0}),
    'cnn14_attn': ('cnn14_attn', (64, 128), {}, {'dropout_rate': 0.0}),
    'cnn14_panns': ('cnn14_panns', (64, 64), {}, {'dropout_rate': 0.0, 'head_dropout_rate': 0.0}),
}
FULL_SIZE = ('cnn14', 'cnn14_attn', 'cnn14_panns')
NUM_CLASSES = 5
BATCH = 3


def _count(tree):
  return sum(int(np.prod(a.shape)) for a in jax.tree_util.tree_leaves(tree))


def _shapes(tree):
  return jax.tree_util.tree_map(lambda a: tuple(a.shape), tree)


@functools.lru_cache(maxsize=None)
def _setup(case):
  """Torch reference (random weights and stats), Flax model, converted variables, input."""
  name, (mels, frames), kwargs, no_dropout = CASES[case]
  torch.manual_seed(0)
  ref = tr.randomize(tr.torch_reference(name, NUM_CLASSES, **kwargs), seed=1)
  model = models.get_model(name, num_classes=NUM_CLASSES, **kwargs, **no_dropout)
  x = np.random.default_rng(2).normal(size=(BATCH, mels, frames, 1)).astype(np.float32)
  variables = convert_lib.convert(tr.state_dict_numpy(ref), tr.convert_source(name))
  return ref, model, jax.device_put(variables), x


@functools.lru_cache(maxsize=None)
def _eval_fn(case):
  """The jitted eval-mode apply of a case's model, compiled once per test session."""
  return jax.jit(functools.partial(_setup(case)[1].apply, train=False))


def _running_stats(ref, name):
  """The torch module's BatchNorm running statistics, converted to Flax batch_stats."""
  sd = {k: v for k, v in tr.state_dict_numpy(ref).items() if '.running_' in k}
  return convert_lib.convert(sd, tr.convert_source(name))['batch_stats']


@pytest.mark.parametrize('name', sorted({c[0] for c in CASES.values()}))
def test_registry_has_model(name):
  assert name in models.MODELS


def test_unknown_model_lists_known_names():
  with pytest.raises(ValueError, match='cnn14_attn.*cnnx'):
    models.get_model('no_such_model')


@pytest.mark.parametrize('case', [
    pytest.param(c, marks=pytest.mark.slow) if c in FULL_SIZE else c for c in CASES])
def test_matches_torch(case):
  name = CASES[case][0]
  ref, model, variables, x = _setup(case)

  # Parameter counts and the converted tree against a fresh init's (no compile: eval_shape).
  init = jax.eval_shape(functools.partial(model.init, train=False),
                        jax.random.PRNGKey(0), jnp.asarray(x))
  assert _count(init['params']) == sum(p.numel() for p in ref.parameters())
  assert _shapes(variables) == _shapes(init)

  # Eval mode.
  ref.eval()
  with torch.no_grad():
    want = ref(tr.to_torch_input(name, x)).numpy()
  got = _eval_fn(case)(variables, x)
  assert got.shape == (BATCH, NUM_CLASSES)
  np.testing.assert_allclose(np.asarray(got), want, atol=1e-4, rtol=0)

  # Train mode: BatchNorm in training mode, dropout off on both sides.
  ref.eval()
  for m in ref.modules():
    if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
      m.train()
  with torch.no_grad():
    want = ref(tr.to_torch_input(name, x)).numpy()
  train_apply = jax.jit(functools.partial(model.apply, train=True, mutable=['batch_stats']))
  got, updates = train_apply(variables, x, rngs={'dropout': jax.random.PRNGKey(0)})
  np.testing.assert_allclose(np.asarray(got), want, atol=1e-4, rtol=0)
  if 'batch_stats' in variables:
    flat_got = jax.tree_util.tree_leaves_with_path(updates['batch_stats'])
    flat_want = dict(jax.tree_util.tree_leaves_with_path(_running_stats(ref, name)))
    old = dict(jax.tree_util.tree_leaves_with_path(variables['batch_stats']))
    assert len(flat_got) == len(flat_want) > 0
    for path, value in flat_got:
      assert not np.allclose(value, old[path]), f'{path} was not updated'
      np.testing.assert_allclose(np.asarray(value), flat_want[path], atol=1e-5, rtol=1e-5,
                                 err_msg=jax.tree_util.keystr(path))
  else:
    assert 'batch_stats' not in updates or not updates['batch_stats']


def test_lstm_gate_order():
  """Our LSTM on converted torch weights: the same last hidden state as torch.nn.LSTM."""
  torch.manual_seed(3)
  lstm = torch.nn.LSTM(6, 4, batch_first=True)
  tr.randomize(lstm, seed=4)  # biases too, so both bias vectors matter
  seq = torch.randn(2, 7, 6)
  with torch.no_grad():
    _, (h_n, _) = lstm(seq)
  sd = {f'LSTM.{k}': v for k, v in tr.state_dict_numpy(lstm).items()}
  params = convert_lib.convert(sd, 'predecessor_cnn_lstm')['params']
  got = cnn_lstm.LSTM(4).apply({'params': params['lstm']}, seq.numpy())
  np.testing.assert_allclose(np.asarray(got), h_n[-1].numpy(), atol=1e-5)
  # Lengths: a row stopped at step 4 equals running on its first 4 steps.
  short = cnn_lstm.LSTM(4).apply({'params': params['lstm']}, seq.numpy()[:, :4])
  stopped = cnn_lstm.LSTM(4).apply({'params': params['lstm']}, seq.numpy(),
                                   jnp.array([4, 7]))
  np.testing.assert_allclose(np.asarray(stopped[0]), np.asarray(short[0]), atol=1e-6)
  np.testing.assert_allclose(np.asarray(stopped[1]), h_n[-1, 1].numpy(), atol=1e-5)


def _convert_grads(named_grads):
  """torch gradients {state_dict key: array} -> the Flax param tree (same rename table)."""
  return convert_lib.convert(named_grads, 'predecessor_cnn_lstm')['params']


def _assert_trees_close(got, want, atol):
  flat_want = dict(jax.tree_util.tree_leaves_with_path(want))
  flat_got = jax.tree_util.tree_leaves_with_path(got)
  assert len(flat_got) == len(flat_want) > 0
  for path, value in flat_got:
    np.testing.assert_allclose(np.asarray(value), flat_want[path], atol=atol, rtol=1e-4,
                               err_msg=jax.tree_util.keystr(path))


def test_cnn_lstm_gradients_match_torch():
  """The whole model's parameter gradients (the LSTM's custom VJP, the convs) equal torch's."""
  ref, model, variables, x = _setup('cnn_lstm')
  ref = copy.deepcopy(ref).train()
  weights = np.random.default_rng(5).normal(size=(BATCH, NUM_CLASSES)).astype(np.float32)
  ref.zero_grad()
  (ref(tr.to_torch_input('cnn_lstm', x)) * torch.from_numpy(weights)).sum().backward()
  want = _convert_grads({k: p.grad.numpy() for k, p in ref.named_parameters()})
  got = jax.jit(jax.grad(lambda p: jnp.sum(model.apply({'params': p}, x) * weights)))(
      variables['params'])
  _assert_trees_close(got, want, atol=1e-5)


@pytest.mark.parametrize('lengths', [None, (7, 3, 5)])
def test_lstm_gradients_match_torch(lengths):
  """LSTM gradients w.r.t. every weight, both biases and the input equal torch.nn.LSTM's; with
  `lengths`, those of torch run on each row's first `length` steps only."""
  torch.manual_seed(6)
  lstm = tr.randomize(torch.nn.LSTM(6, 4, batch_first=True), seed=7)
  seq = np.random.default_rng(8).normal(size=(3, 7, 6)).astype(np.float32)
  weights = np.random.default_rng(9).normal(size=(3, 4)).astype(np.float32)
  seq_t = torch.from_numpy(seq).requires_grad_()
  for row in range(3):  # one row at a time, so each can stop at its own length
    n = 7 if lengths is None else lengths[row]
    _, (h_n, _) = lstm(seq_t[row:row + 1, :n])
    (h_n[-1, 0] * torch.from_numpy(weights[row])).sum().backward()
  want = _convert_grads({f'LSTM.{k}': p.grad.numpy() for k, p in lstm.named_parameters()})
  params = _convert_grads({f'LSTM.{k}': v for k, v in tr.state_dict_numpy(lstm).items()})
  module = cnn_lstm.LSTM(4)
  lens = None if lengths is None else jnp.array(lengths)
  got_p, got_x = jax.jit(jax.grad(
      lambda p, s: jnp.sum(module.apply({'params': p}, s, lens) * weights), argnums=(0, 1)))(
          params['lstm'], seq)
  _assert_trees_close(got_p, want['lstm'], atol=1e-5)
  np.testing.assert_allclose(np.asarray(got_x), seq_t.grad.numpy(), atol=1e-5, rtol=1e-4)
  if lengths is not None:  # steps after a row's length have no effect
    assert not np.any(np.asarray(got_x)[1, 3:]) and not np.any(np.asarray(got_x)[2, 5:])
    assert np.all(np.any(np.asarray(got_x)[2, :5] != 0, axis=-1))


def test_cnn_lstm_mask_equals_unpadded_clip():
  """A clip padded at the end, with its mask, gives the logits of the unpadded clip."""
  _, model, variables, x = _setup('cnn_lstm')  # 64 frames
  real = np.array([50, 64, 64])
  mask = np.arange(x.shape[2])[None, :] < real[:, None]
  got = np.asarray(jax.jit(model.apply)(variables, x, mask=mask))
  short = np.asarray(_eval_fn('cnn_lstm')(variables, x[:, :, :50]))
  np.testing.assert_allclose(got[0], short[0], atol=1e-5)
  np.testing.assert_allclose(got[1], np.asarray(_eval_fn('cnn_lstm')(variables, x))[1],
                             atol=1e-5)
  assert np.max(np.abs(got[0] - np.asarray(_eval_fn('cnn_lstm')(variables, x))[0])) > 1e-4


def test_cnnx_flatten_is_chw():
  """CNN-X's first dense kernel rows are indexed c * (14 * 30) + h * 30 + w, as in torch."""
  _, _, variables, x = _setup('cnnx')
  kernel = variables['params']['fc_layer1']['kernel']
  assert kernel.shape == (32 * 14 * 30, 2048)
  # Zero every row except those of channel 5: only channel-5 activations may then matter.
  keep = np.zeros_like(kernel)
  keep[5 * 420:6 * 420] = kernel[5 * 420:6 * 420]
  params = dict(variables['params'], fc_layer1={'kernel': keep,
                                                'bias': variables['params']['fc_layer1']['bias']})
  ref = copy.deepcopy(_setup('cnnx')[0])
  with torch.no_grad():
    ref.fc_layer1[0].weight[:, :5 * 420] = 0
    ref.fc_layer1[0].weight[:, 6 * 420:] = 0
    want = ref.eval()(tr.to_torch_input('cnnx', x)).numpy()
  got = _eval_fn('cnnx')({'params': params}, x)
  np.testing.assert_allclose(np.asarray(got), want, atol=1e-4)


@pytest.mark.parametrize('case', ['cnn14_attn-tiny', 'cnn_lstm'])
def test_bfloat16_compute(case):
  """bfloat16 compute: params stay float32, logits finite and near the float32 ones."""
  name, _, kwargs, _ = CASES[case]
  _, _, variables, x = _setup(case)
  model16 = models.get_model(name, num_classes=NUM_CLASSES, dtype='bfloat16', **kwargs)
  init = jax.eval_shape(model16.init, jax.random.PRNGKey(0), jnp.asarray(x))
  assert all(a.dtype == jnp.float32 for a in jax.tree_util.tree_leaves(init))
  want = np.asarray(_eval_fn(case)(variables, x))
  got = jax.jit(model16.apply)(variables, x)
  assert got.dtype == jnp.bfloat16
  got = np.asarray(got, np.float32)
  assert np.all(np.isfinite(got))
  scale = max(1.0, float(np.max(np.abs(want))))
  assert np.max(np.abs(got - want)) < 0.1 * scale
