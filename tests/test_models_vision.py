"""ImageNet-transfer models (VGG19-BN + Attn, AlexNet + Attn, ResNet18) vs PyTorch references.

For each model (tests/torch_reference_vision.py): random torch weights and BatchNorm running
statistics -> state_dict -> `ser_jax.convert` (source `predecessor_<name>`) -> strict merge into the
Flax init; then equal parameter counts, eval-mode logits within 1e-4, and one train-mode
forward moving the running statistics to torch's (unbiased-variance) values. The torchvision
tables are checked against torchvision's key layout. Attention masks are checked inside the
model by corrupting the masked part of the pooled map. Inputs are tiny; each model is run
op-by-op (no whole-model jit) once per mode, which is faster than compiling VGG19 on CPU.
"""
import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

from ser_jax import convert as convert_lib
from ser_jax import models
from ser_jax import pretrained
from ser_jax.models import alexnet
from ser_jax.models import resnet
import torch_reference_vision as tv

# name -> input (mel, time). Stride 32 everywhere; AlexNet needs >= 63 per axis
# (96 x 128 -> a 2 x 3 map), VGG/ResNet 64 x 128 -> a 2 x 4 map.
CASES = {
    'vgg19_attn': (64, 128),
    'alexnet_attn': (96, 128),
    'resnet18': (64, 128),
}
NUM_CLASSES = 5
BATCH = 2
# New parts of each model that no ImageNet checkpoint holds (first path element).
NEW_PARTS = {
    'torchvision_vgg19_bn': ('vgg19_attn', ('stem', 'attention', 'classifier')),
    'torchvision_alexnet': ('alexnet_attn', ('stem', 'attention', 'classifier')),
    'torchvision_resnet18': ('resnet18', ('conv1', 'fc', 'classifier')),
}


def _count(tree):
  return sum(int(np.prod(a.shape)) for a in jax.tree_util.tree_leaves(tree))


def _flat_shapes(tree):
  return {k: tuple(v.shape) for k, v in pretrained.flatten(tree).items()}


def _init_shapes(model, mels, frames):
  x = jnp.zeros((1, mels, frames, 1), jnp.float32)
  return jax.eval_shape(functools.partial(model.init, train=False), jax.random.PRNGKey(0), x)


@functools.lru_cache(maxsize=None)
def _run(name):
  """Torch and Flax, eval and train mode, once per model; the tests read the results."""
  mels, frames = CASES[name]
  torch.manual_seed(0)
  ref = tv.randomize(tv.torch_reference(name, NUM_CLASSES), seed=1)
  model = models.get_model(name, num_classes=NUM_CLASSES)
  init = _init_shapes(model, mels, frames)
  # Strict: every leaf of the model comes from the torch state_dict and vice versa.
  variables = pretrained.merge_params(
      convert_lib.convert(tv.state_dict_numpy(ref), tv.convert_source(name)), init)
  x = np.random.default_rng(2).normal(size=(BATCH, mels, frames, 1)).astype(np.float32)
  xt = tv.to_torch_input(name, x)

  ref.eval()
  with torch.no_grad():
    want_eval = ref(xt).numpy()
  got_eval = model.apply(variables, x, train=False)

  ref.train()  # no dropout in these models: both sides see the same activations
  with torch.no_grad():
    want_train = ref(xt).numpy()
  got_train, updates = model.apply(variables, x, train=True, mutable=['batch_stats'])
  want_stats = convert_lib.convert(tv.state_dict_numpy(ref), tv.convert_source(name))
  return dict(ref=ref, model=model, init=init, variables=variables, x=x,
              want_eval=want_eval, got_eval=np.asarray(got_eval),
              want_train=want_train, got_train=np.asarray(got_train),
              want_stats=want_stats.get('batch_stats', {}),
              got_stats=updates.get('batch_stats', {}))


@pytest.mark.parametrize('name', sorted(CASES))
def test_registered(name):
  assert name in models.MODELS
  assert isinstance(models.get_model(name), nn.Module)


@pytest.mark.parametrize('name', sorted(CASES))
def test_param_count_equals_torch(name):
  r = _run(name)
  assert _count(r['init']['params']) == sum(p.numel() for p in r['ref'].parameters())


@pytest.mark.parametrize('name', sorted(CASES))
def test_eval_logits_match_torch(name):
  r = _run(name)
  assert r['got_eval'].shape == (BATCH, NUM_CLASSES)
  # Logits of size O(1) so that 1e-4 is a real test.
  assert np.abs(r['want_eval']).max() > 0.1
  np.testing.assert_allclose(r['got_eval'], r['want_eval'], atol=1e-4, rtol=0)


@pytest.mark.parametrize('name', sorted(CASES))
def test_train_mode_matches_torch(name):
  r = _run(name)
  np.testing.assert_allclose(r['got_train'], r['want_train'], atol=1e-4, rtol=0)
  want = pretrained.flatten(r['want_stats'])
  got = pretrained.flatten(r['got_stats'])
  assert set(got) == set(want)
  if name == 'alexnet_attn':
    assert not got  # AlexNet has no BatchNorm
    return
  before = pretrained.flatten(r['variables']['batch_stats'])
  for key, value in want.items():
    assert not np.allclose(value, before[key]), f'{key} did not move'
    np.testing.assert_allclose(np.asarray(got[key]), value, atol=1e-5, rtol=1e-5, err_msg=key)


def test_resnet_head_without_relu_matches_torch():
  """The uncertain ReLU between fc and classifier: fc_relu=False matches a torch head without

  it, and the two settings really differ (so the default is a visible choice).
  """
  mels, frames = CASES['resnet18']
  torch.manual_seed(0)
  ref = tv.randomize(tv.PredecessorResNet18(NUM_CLASSES, fc_relu=False), seed=3)
  model = resnet.ResNet18(num_classes=NUM_CLASSES, fc_relu=False)
  variables = convert_lib.convert(tv.state_dict_numpy(ref), 'predecessor_resnet18')
  x = np.random.default_rng(4).normal(size=(1, mels, frames, 1)).astype(np.float32)
  ref.eval()
  with torch.no_grad():
    want = ref(tv.to_torch_input('resnet18', x)).numpy()
  got = np.asarray(model.apply(variables, x, train=False))
  np.testing.assert_allclose(got, want, atol=1e-4, rtol=0)
  with_relu = np.asarray(resnet.ResNet18(num_classes=NUM_CLASSES).apply(variables, x))
  assert np.abs(with_relu - want).max() > 1e-3


@pytest.mark.parametrize('source', sorted(NEW_PARTS))
def test_torchvision_table(source):
  """torchvision's keys land on the model minus its new parts; the ImageNet head is dropped."""
  name, new_parts = NEW_PARTS[source]
  backbone = tv.randomize(tv.TORCHVISION[source](), seed=5)
  state = tv.state_dict_numpy(backbone)
  loaded = convert_lib.convert(state, source)
  init = _init_shapes(models.get_model(name, num_classes=NUM_CLASSES), *CASES[name])
  want = {k: s for k, s in _flat_shapes(init).items() if k.split('/')[1] not in new_parts}
  assert _flat_shapes(loaded) == want
  # Values travel with the layout transform, e.g. the last conv of the backbone.
  last_conv = {'torchvision_vgg19_bn': ('features.49.weight', 'params/features_49/kernel'),
               'torchvision_alexnet': ('features.10.weight', 'params/features_10/kernel'),
               'torchvision_resnet18': ('layer4.1.conv2.weight', 'params/layer4_1/conv2/kernel')}
  tkey, fkey = last_conv[source]
  np.testing.assert_array_equal(pretrained.flatten(loaded)[fkey],
                                state[tkey].transpose(2, 3, 1, 0))
  # The strict merge the configs do (new parts in dont_load) accepts it.
  dont_load = [rf'^(params/|batch_stats/)?{p}(/.*)?$' for p in new_parts]
  merged = pretrained.merge_params(loaded, init, dont_load=dont_load)
  assert _count(merged) == _count(init)


def test_predecessor_tables_reject_unknown_keys():
  ref = tv.torch_reference('alexnet_attn')
  state = tv.state_dict_numpy(ref)
  state['network.features.2.weight'] = state['network.features.1.weight']  # a ReLU slot
  with pytest.raises(ValueError, match='network.features.2.weight'):
    convert_lib.convert(state, 'predecessor_alexnet_attn')


def test_alexnet_map_size_and_small_input_error():
  assert alexnet.alexnet_map_size(128) == 3 and alexnet.alexnet_map_size(256) == 7
  assert alexnet.alexnet_map_size(63) == 1 and alexnet.alexnet_map_size(62) < 1
  model = models.get_model('alexnet_attn')
  with pytest.raises(ValueError, match='too small'):
    _init_shapes(model, 62, 128)


def _corrupt_masked_steps(module_name, where, steps_valid):
  """Interceptor that overwrites time steps >= steps_valid of a map with large noise.

  The map is the input of the submodule `module_name` (where='input': the map fed to
  attention pooling) or its output (where='output': the last ResNet block's map, before the
  global average).
  """
  def corrupt(a):  # a: (batch, F, T, C)
    noise = 1e3 * jax.random.normal(jax.random.PRNGKey(9), a.shape, a.dtype)
    return a.at[:, :, steps_valid:].set(noise[:, :, steps_valid:])

  def interceptor(next_fun, args, kwargs, context):
    if context.module.name != module_name or context.method_name != '__call__':
      return next_fun(*args, **kwargs)
    if where == 'input':
      return next_fun(corrupt(args[0]), *args[1:], **kwargs)
    return corrupt(next_fun(*args, **kwargs))
  return interceptor


@pytest.mark.parametrize('name', sorted(CASES))
def test_mask_gives_padding_zero_weight(name):
  """Masked frames' map steps get zero weight: corrupting them leaves the logits unchanged."""
  r = _run(name)
  model, variables, x = r['model'], r['variables'], r['x']
  frames = x.shape[2]
  real = frames // 2  # the second half is padding
  mask = np.arange(frames)[None, :] < real
  mask = np.broadcast_to(mask, (BATCH, frames))
  steps_valid = real // 32  # map step j covers frames [32 j, 32 j + 32)
  if name == 'resnet18':
    interceptor = _corrupt_masked_steps('layer4_1', 'output', steps_valid)
  else:
    interceptor = _corrupt_masked_steps('attention', 'input', steps_valid)

  clean = np.asarray(model.apply(variables, x, mask=mask))
  with nn.intercept_methods(interceptor):
    corrupted = np.asarray(model.apply(variables, x, mask=mask))
    unmasked = np.asarray(model.apply(variables, x))
  np.testing.assert_array_equal(corrupted, clean)
  # Without the mask the corrupted steps do count (so the check above can fail).
  assert np.abs(unmasked - clean).max() > 1e-2
  # An all-real mask is the same as no mask.
  full = np.asarray(model.apply(variables, x, mask=np.ones((BATCH, frames), bool)))
  np.testing.assert_allclose(full, r['got_eval'], atol=1e-6, rtol=0)


@pytest.mark.parametrize('name', sorted(CASES))
def test_bfloat16_compute(name):
  """bfloat16 compute with float32 params: finite logits near the float32 ones."""
  r = _run(name)
  model = models.get_model(name, num_classes=NUM_CLASSES, dtype=jnp.bfloat16)
  got = model.apply(r['variables'], r['x'], train=False)
  assert got.dtype == jnp.bfloat16
  got = np.asarray(got, np.float32)
  assert np.all(np.isfinite(got))
  scale = np.abs(r['got_eval']).max()
  assert np.abs(got - r['got_eval']).max() < 0.1 * scale + 0.05
  # The params the model would create stay float32.
  init = _init_shapes(model, *CASES[name])
  assert {a.dtype for a in jax.tree_util.tree_leaves(init['params'])} == {jnp.dtype('float32')}
