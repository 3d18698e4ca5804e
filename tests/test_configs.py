"""Every experiment config loads (plain and :tiny), names a registered model that accepts its
input shape, and reproduces the predecessor's protocol (REFERENCE.md) by default."""
import importlib.util
import os
import pathlib
import subprocess
import sys

import jax
import jax.numpy as jnp
import pytest

from ser_jax import splits

CONFIG_DIR = pathlib.Path(__file__).resolve().parents[1] / 'configs'

# Predecessor's epochs per table row; AlexNet's count is ours (see configs/alexnet_attn.py).
EPOCHS = {'cnn14': 120, 'cnn14_attn': 120, 'cnnx': 60, 'cnn_lstm': 140, 'vgg19_attn': 30,
          'alexnet_attn': 30, 'resnet18': 40}
TRANSFER = {'vgg19_attn': 'torchvision_vgg19_bn', 'alexnet_attn': 'torchvision_alexnet',
            'resnet18': 'torchvision_resnet18'}


def _load(name):
  spec = importlib.util.spec_from_file_location(f'cfg_{name}', CONFIG_DIR / f'{name}.py')
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


@pytest.mark.parametrize('name', sorted(EPOCHS))
def test_predecessor_protocol(name):
  c = _load(name).get_config()
  assert c.model.name == name
  assert c.num_epochs == EPOCHS[name]
  assert c.model.num_classes == 8
  # Speech only, 128 mels at 48 kHz.
  assert (c.data.name, c.data.frontend) == ('ravdess/speech', 'predecessor48k')
  assert tuple(c.data.input_shape) == (128, 256)
  assert c.data.crop_mode == 'resize'
  assert not c.data.specaugment.enabled and c.data.mixup_alpha == 0
  assert c.folds.scheme == 'predecessor' and tuple(c.folds.which) == ()
  assert tuple(c.folds.test_actors) == ()
  assert len(splits.predecessor_folds()) == 4
  assert c.batch_size == 32
  assert c.optimizer.name == 'adam_l2'
  assert c.optimizer.learning_rate == 1e-4 and c.optimizer.weight_decay == 1e-5
  assert c.optimizer.grad_clip_norm == 0 and c.optimizer.label_smoothing == 0
  assert c.schedule.name == 'constant'
  if name in TRANSFER:
    assert c.init.expect_pretrained
    assert c.init.source == TRANSFER[name]
    assert c.init.dont_load and c.init.pretrained == ''
  else:
    assert not c.init.expect_pretrained and tuple(c.init.dont_load) == ()


@pytest.mark.parametrize('name', sorted(EPOCHS))
def test_tiny_variant(name):
  module = _load(name)
  c, t = module.get_config(), module.get_config('tiny')
  assert t.model.name == c.model.name
  assert t.num_epochs == 2 and tuple(t.folds.which) == (0,)
  assert t.batch_size <= 8
  assert t.data.input_shape[0] * t.data.input_shape[1] <= 64 * 64
  # The tiny variant changes size and length only, not the recipe.
  assert t.optimizer.to_dict() == c.optimizer.to_dict()
  assert t.init.to_dict() == c.init.to_dict()
  with pytest.raises(ValueError, match='Unknown config variant'):
    module.get_config('huge')


def test_default_rejects_unknown_variant():
  with pytest.raises(ValueError, match='Unknown config variant'):
    _load('default').get_config('tiniest')


@pytest.mark.parametrize('name', ['resnet18', 'vgg19_attn', 'alexnet_attn'])
def test_dont_load_patterns_match_only_new_parts(name):
  import re  # pylint: disable=g-import-not-at-top
  c = _load(name).get_config()
  new = {'resnet18': ['conv1/kernel', 'fc/bias', 'classifier/kernel'],
         'vgg19_attn': ['stem/kernel', 'attention/dense/kernel', 'attention/u',
                        'classifier/bias'],
         'alexnet_attn': ['stem/bias', 'attention/u', 'classifier/kernel']}[name]
  kept = {'resnet18': ['bn1/scale', 'layer1_0/conv1/kernel', 'layer4_1/bn2/bias'],
          'vgg19_attn': ['features_0/kernel', 'features_1/scale'],
          'alexnet_attn': ['features_0/kernel', 'features_10/bias']}[name]

  def dropped(path):
    return any(re.search(p, path) for p in c.init.dont_load)

  for path in new:
    assert dropped(path) and dropped('params/' + path), path
  for path in kept:
    assert not dropped(path) and not dropped('params/' + path), path


@pytest.mark.parametrize('name', sorted(EPOCHS))
@pytest.mark.parametrize('variant', ['', 'tiny'])
def test_model_registered_and_accepts_input_shape(name, variant):
  from ser_jax import models  # pylint: disable=g-import-not-at-top
  c = _load(name).get_config(variant or None)
  assert c.model.name in models.MODELS, (c.model.name, sorted(models.MODELS))
  model = models.get_model(c.model.name, num_classes=c.model.num_classes,
                           dtype=c.model.dtype, **c.model.kwargs)
  x = jax.ShapeDtypeStruct((2, *c.data.input_shape, 1), jnp.float32)
  # eval_shape traces without compiling or allocating: cheap even for CNN14 at 128 x 256.
  variables = jax.eval_shape(lambda x: model.init(jax.random.key(0), x, train=False), x)
  logits = jax.eval_shape(lambda v, x: model.apply(v, x, train=False), variables, x)
  assert logits.shape == (2, 8)


def test_config_flags_load_by_path_from_any_cwd(tmp_path):
  # ml_collections loads `--config=path:arg` by path; the config must load from any working
  # directory, with only the installed package (here: PYTHONPATH) to import.
  script = tmp_path / 'show.py'
  script.write_text(
      'from absl import app\n'
      'from ml_collections import config_flags\n'
      '_C = config_flags.DEFINE_config_file("config")\n'
      'def main(_):\n'
      '  print(_C.value.model.name, _C.value.num_epochs, tuple(_C.value.data.input_shape))\n'
      'app.run(main)\n')
  env = dict(os.environ, PYTHONPATH=str(CONFIG_DIR.parent))
  out = subprocess.run(
      [sys.executable, str(script), f'--config={CONFIG_DIR / "resnet18.py"}:tiny',
       '--config.num_epochs=3'], cwd=tmp_path, env=env, capture_output=True, text=True,
      check=True).stdout
  assert out.split() == ['resnet18', '3', '(64,', '64)']


@pytest.mark.parametrize('name,new_parts', [
    ('vgg19_attn', {'stem', 'attention', 'classifier'}),
    ('alexnet_attn', {'stem', 'attention', 'classifier'}),
    ('resnet18', {'conv1', 'fc', 'classifier'}),
])
def test_dont_load_selects_exactly_the_new_modules(name, new_parts):
  """On the real variable tree, dont_load keeps exactly the parts ImageNet has no weights for."""
  import re  # pylint: disable=g-import-not-at-top
  from ser_jax import models  # pylint: disable=g-import-not-at-top
  from ser_jax import pretrained  # pylint: disable=g-import-not-at-top
  c = _load(name).get_config('tiny')
  model = models.get_model(c.model.name, num_classes=8)
  x = jax.ShapeDtypeStruct((1, *c.data.input_shape, 1), jnp.float32)
  variables = jax.eval_shape(lambda x: model.init(jax.random.key(0), x, train=False), x)
  paths = list(pretrained.flatten(variables))
  kept = {p.split('/')[1] for p in paths if any(re.search(d, p) for d in c.init.dont_load)}
  assert kept == new_parts
  # Everything else (the pretrained trunk) is loaded, BatchNorm statistics included
  # (AlexNet has no BatchNorm).
  if name != 'alexnet_attn':
    assert any(p.startswith('batch_stats/') and p.split('/')[1] not in new_parts
               for p in paths)


EFFICIENTAT = ('efficientat_mn04', 'efficientat_mn04_probe')


@pytest.mark.parametrize('name', EFFICIENTAT)
def test_efficientat_configs(name):
  import re  # pylint: disable=g-import-not-at-top
  from ser_jax import models  # pylint: disable=g-import-not-at-top
  from ser_jax import pretrained  # pylint: disable=g-import-not-at-top
  module = _load(name)
  c, t = module.get_config(), module.get_config('tiny')
  assert c.model.name == t.model.name == 'efficientat_mn04' and c.model.num_classes == 8
  assert c.data.name == 'ravdess/speech' and c.data.frontend == 'efficientat32k'
  assert c.data.crop_mode == 'crop_pad'
  assert c.data.input_shape[0] == 128 and c.data.input_shape[1] % 32 == 0
  assert c.init.source == 'efficientat_mn' and c.init.expect_pretrained
  assert c.folds.scheme == 'predecessor' and c.batch_size == 32
  assert t.optimizer.to_dict() == c.optimizer.to_dict() and t.init.to_dict() == c.init.to_dict()
  model = models.get_model(c.model.name, num_classes=8, **c.model.kwargs)
  for config in (c, t):
    x = jax.ShapeDtypeStruct((2, *config.data.input_shape, 1), jnp.float32)
    variables = jax.eval_shape(lambda x: model.init(jax.random.key(0), x), x)
    assert jax.eval_shape(lambda v, x: model.apply(v, x), variables, x).shape == (2, 8)
  paths = list(pretrained.flatten(variables))
  fresh = {p for p in paths if any(re.search(d, p) for d in c.init.dont_load)}
  assert fresh == {'params/classifier_5/kernel', 'params/classifier_5/bias'}
  # The optimiser trains exactly the layers the model does not freeze (and, for the probe,
  # only the new head).
  params = [p[len('params/'):] for p in paths if p.startswith('params/')]
  trained = {p.split('/')[0] for p in params
             if not c.optimizer.trainable or re.search(c.optimizer.trainable, p)}
  frozen = int(c.model.kwargs.frozen_features)
  want = {f'features_{i}' for i in range(frozen, 17)} | {'classifier_2', 'classifier_5'}
  assert trained == ({'classifier_5'} if name.endswith('probe') else want)


@pytest.mark.parametrize('frozen', [0, 7, 16])
def test_efficientat_layer_groups_cover_the_trainable_layers_top_down(frozen):
  import re  # pylint: disable=g-import-not-at-top
  from ser_jax.models import efficientat  # pylint: disable=g-import-not-at-top
  groups = efficientat.layer_groups(frozen)
  names = ['classifier_5/bias', 'classifier_2/kernel'] + [
      f'features_{i}/block_0/conv/kernel' for i in reversed(range(frozen, 17))]
  depth = [next(k for k, g in enumerate(groups) if re.search(g, n)) for n in names]
  assert depth == [0, 0] + list(range(1, 18 - frozen))
  assert len(groups) == 18 - frozen


@pytest.mark.parametrize('frozen', [0, 7, 16, 17])
def test_efficientat_trainable_after(frozen):
  import re  # pylint: disable=g-import-not-at-top
  from ser_jax.models import efficientat  # pylint: disable=g-import-not-at-top
  pattern = efficientat.trainable_after(frozen)
  names = [f'features_{i}/block_0/conv/kernel' for i in range(17)] + [
      'features_0/bn/scale', 'classifier_2/kernel', 'classifier_5/bias']
  trained = [n for n in names if not pattern or re.search(pattern, n)]
  assert trained == ([f'features_{i}/block_0/conv/kernel' for i in range(frozen, 17)]
                     + (['features_0/bn/scale'] if frozen == 0 else [])
                     + ['classifier_2/kernel', 'classifier_5/bias'])
