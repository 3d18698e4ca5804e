"""Tests of ser_jax/config_lib.py and the run record of ser_jax/checkpoints.py.

The TFDS name is built in one place; a recorded config from before `data.frontend`
existed still reads; `validate` names the bad setting before anything slow runs, and an
entry point validates once; the front end is part of the model identity a workdir
records.
"""
import json
import os
import re
import subprocess
import sys

import ml_collections
import pytest

import test_train  # pylint: disable=g-bad-import-order  # tests/ is on sys.path
from ser_jax import checkpoints
from ser_jax import config_lib
from ser_jax import errors
from ser_jax import features
from ser_jax import input_pipeline
from ser_jax import models
from ser_jax import train


def test_tfds_name():
  data = ml_collections.ConfigDict({'name': 'ravdess/speech', 'frontend': 'predecessor48k'})
  assert config_lib.tfds_name(data) == 'ravdess/speech_predecessor48k'
  data.update(name='ravdess/all', frontend='panns16k')
  assert config_lib.tfds_name(data) == 'ravdess/all_panns16k'
  data.update(name='ser_tess', frontend='predecessor48k')
  assert config_lib.tfds_name(data) == 'ser_tess/predecessor48k'
  assert config_lib.tfds_name(data, 'ravdess/song') == 'ravdess/song_predecessor48k'
  for name, message in [('tess', "unknown dataset (did you mean 'ser_tess'?)"),
                        ('ravdess/video', 'expected one of ravdess/{speech,song,all}'),
                        ('ravdess', 'expected one of ravdess/{speech,song,all}'),
                        ('ser_savee/speech', "expected 'ser_savee' (it has no subsets)")]:
    with pytest.raises(errors.UserError, match=re.escape(message)):
      config_lib.tfds_name(data, name)


def test_datasets_are_the_registered_builders():
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  import tfds_corpora  # pylint: disable=g-import-not-at-top
  import tfds_ravdess  # pylint: disable=g-import-not-at-top,unused-import
  assert set(config_lib.DATASETS) == {'ravdess', *tfds_corpora.BUILDERS}
  for dataset, subsets in config_lib.DATASETS.items():
    configs = {c.name for c in tfds.builder_cls(dataset).BUILDER_CONFIGS}
    for frontend in features.FRONTENDS:
      data = ml_collections.ConfigDict({'name': dataset, 'frontend': frontend})
      names = [f'{dataset}/{s}' for s in subsets] or [dataset]
      assert {config_lib.tfds_name(data, n).split('/')[1] for n in names} <= configs


def test_from_dict_reads_old_records():
  old = config_lib.default().to_dict()
  del old['data']['frontend']
  old['data']['name'] = 'ravdess/song_seed48k'
  old['init']['source'] = 'seed_cnnx'
  del old['folds']['validation_actors']  # a field added later: gets its default
  old['model']['kwargs'] = {'dropout': 0.25}  # free-form fields are kept whole
  c = config_lib.from_dict(old)
  assert (c.data.name, c.data.frontend) == ('ravdess/song', 'predecessor48k')
  assert c.init.source == 'predecessor_cnnx' and c.folds.validation_actors == 0
  assert c.model.kwargs.to_dict() == {'dropout': 0.25}
  assert config_lib.from_dict(config_lib.default().to_dict()).to_dict() == (
      config_lib.default().to_dict())


@pytest.mark.parametrize('field,value,message', [
    ('model.name', 'nope', r"config.model: Unknown model 'nope'"),
    ('data.frontend', 'mfcc', r"config.data.frontend: Unknown front end 'mfcc'"),
    ('data.crop_mode', 'stretch', 'config.data.crop_mode must be one of'),
    ('parallel', 'pjit', 'config.parallel must be one of'),
    ('batch_size', 0, 'config.batch_size=0 must be a positive multiple'),
    ('optimizer.name', 'sgd', 'config.optimizer.name'),
    ('schedule.name', 'step', 'config.schedule.name'),
    ('folds.scheme', 'random', 'config.folds.scheme'),
    ('init.pretrained', '/no/such/weights.pth', 'config.init.pretrained=/no/such/weights.pth '
     'does not exist'),
])
def test_validate_names_the_setting(field, value, message):
  c = config_lib.default()
  c.update_from_flattened_dict({field: value})
  with pytest.raises(errors.UserError, match=message):
    config_lib.validate(c)


@pytest.mark.parametrize('field,value', [
    ('num_epochs', 0), ('num_epochs', -3), ('eval_batch_size', 0), ('batch_size', -4),
    ('log_every_steps', 0), ('eval_every_epochs', 0), ('checkpoint.every_epochs', 0),
    ('checkpoint.keep', 0), ('optimizer.learning_rate', 0.0),
    ('optimizer.learning_rate', -1e-4), ('optimizer.learning_rate', float('nan')),
    ('optimizer.weight_decay', -1e-5), ('optimizer.grad_clip_norm', -1.0),
    ('optimizer.label_smoothing', 1.0), ('optimizer.ema_decay', 1.0),
    ('optimizer.layer_decay', 0.0), ('optimizer.layer_decay', 1.5),
    ('schedule.warmup_epochs', -1.0),
    ('data.mixup_alpha', -0.2), ('data.specaugment.max_time_width', -1),
    ('folds.validation_actors', -1), ('model.num_classes', 1),
])
def test_validate_refuses_impossible_numbers(field, value):
  """Issue 11, item 4: each is one line naming the field, before anything slow."""
  c = config_lib.default()
  c.update_from_flattened_dict({field: value})
  with pytest.raises(errors.UserError, match=rf'^config\.{re.escape(field)}={re.escape(repr(value))} '
                     r'must be (an integer|a number|a positive multiple)'):
    config_lib.validate(c)


def test_impossible_numbers_are_refused_before_any_data(tmp_path, monkeypatch):
  monkeypatch.setitem(models.MODELS, 'tiny', test_train.TinyNet)
  monkeypatch.setattr(input_pipeline, 'load_all', lambda *_: pytest.fail('data was read'))
  with pytest.raises(errors.UserError, match='config.num_epochs=0 must be an integer >= 1'):
    train.train_and_evaluate(test_train.tiny_config(num_epochs=0), tmp_path / 'w')
  assert not (tmp_path / 'w').exists()  # nothing written either


def test_validate_checks_batches_against_devices():
  c = config_lib.default()
  c.eval_batch_size = 6
  with pytest.raises(errors.UserError, match=r'eval_batch_size=6 must be a positive multiple '
                     r'of the 4 devices'):
    config_lib.validate(c, num_devices=4)
  assert [i for i, _ in config_lib.validate(c, num_devices=2)] == [0, 1, 2, 3]


def test_training_validates_the_data_config_once(tmp_path, monkeypatch):
  monkeypatch.setitem(models.MODELS, 'tiny', test_train.TinyNet)
  calls = []
  real = input_pipeline.check_data_config
  monkeypatch.setattr(input_pipeline, 'check_data_config',
                      lambda data: calls.append(1) or real(data))
  train.train_and_evaluate(test_train.tiny_config(num_epochs=1), tmp_path,
                           examples=test_train.synthetic_examples())
  assert len(calls) == 1


def test_workdir_of_another_front_end_is_refused(tmp_path):
  c = test_train.tiny_config()
  (tmp_path / 'fold_0' / 'checkpoints' / '4').mkdir(parents=True)
  checkpoints.write_run_files(tmp_path, c)
  assert json.loads((tmp_path / 'model.json').read_text())['frontend'] == 'predecessor48k'
  checkpoints.check_workdir(c, tmp_path)  # the same model: resumable
  other = c.copy_and_resolve_references()
  other.data.frontend = 'panns32k'
  with pytest.raises(errors.UserError, match="different model.*'frontend': 'panns32k'"):
    checkpoints.check_workdir(other, tmp_path)
  # A model.json from before the front end was recorded is compared on what it has.
  legacy = checkpoints.model_identity(c)
  del legacy['frontend']
  (tmp_path / 'model.json').write_text(json.dumps(legacy))
  checkpoints.check_workdir(other, tmp_path)
  other.data.input_shape = (16, 32)
  with pytest.raises(errors.UserError, match='different model'):
    checkpoints.check_workdir(other, tmp_path)


# ----------------------------------------------------------------------------- command line


@pytest.mark.parametrize('key,message', [
    ('optimizer.learnig_rate', r"^--config\.optimizer\.learnig_rate: config key "
     r"'optimizer\.learnig_rate' does not exist \('optimizer' has no 'learnig_rate'\); "
     r'closest known keys: config\.optimizer\.learning_rate,'),
    ('nonexistent', r"^--config\.nonexistent: config key 'nonexistent' does not exist; "
     r'known keys there: config\.batch_size, .*config\.seed, config\.selection_rule '
     r'\(keys cannot be added'),
    ('data.input_shap', r'closest known keys: config\.data\.input_shape'),
    ('seed.x', r"'seed' has no 'x'.*closest known keys: config\.seed"),
])
def test_unknown_override_names_the_key_and_the_closest(key, message):
  with pytest.raises(errors.UserError, match=message):
    config_lib.check_overrides(config_lib.default(), ['num_epochs', key])
  config_lib.check_overrides(config_lib.default(), ['optimizer.learning_rate', 'data.name'])


@pytest.mark.parametrize('config_args', [
    [],  # the default config file: ml_collections applies overrides while defining --config
    [f'--config={test_train.ROOT / "configs" / "cnnx.py"}:tiny'],  # at flag parsing
])
def test_launcher_prints_an_unknown_key_as_one_line(config_args, tmp_path):
  """Issue 11, item 6: one line instead of ml_collections' 55-line chained traceback."""
  proc = subprocess.run(
      [sys.executable, str(test_train.ROOT / 'launch' / 'train.py'), *config_args,
       f'--workdir={tmp_path}', '--config.optimizer.learnig_rate=1e-3'],
      capture_output=True, text=True, timeout=300,
      env=dict(os.environ, PYTHONPATH=str(test_train.ROOT)))
  assert proc.returncode == 1
  assert proc.stderr.strip().splitlines()[-1] == (
      "train.py: error: --config.optimizer.learnig_rate: config key "
      "'optimizer.learnig_rate' does not exist ('optimizer' has no 'learnig_rate'); "
      'closest known keys: config.optimizer.learning_rate, config.optimizer.name, '
      'config.optimizer.ema_decay (keys cannot be added on the command line; new ones '
      'go in a config file)')
  assert 'Traceback' not in proc.stderr and not any(tmp_path.iterdir())


def test_differing_fields_compares_a_config_with_its_json_record():
  config = config_lib.default()
  config.data.input_shape = (16, 20)
  record = json.loads(json.dumps(config.to_dict()))  # tuples become lists, as on disk
  fields = ('data.input_shape', 'model', 'data.name', 'no.such.field')
  assert config_lib.differing_fields(config, record, fields) == []
  assert config_lib.get_field(record, 'data.input_shape') == [16, 20]
  assert config_lib.get_field(config, 'no.such.field', 'x') == 'x'
  record['data']['input_shape'] = [16, 24]
  record['model']['kwargs'] = {'width': 2}
  assert config_lib.differing_fields(config, record, fields) == [
      ('data.input_shape', (16, 20), (16, 24)),
      ('model', {**config.model.to_dict(), 'kwargs': {}},
       {**config.model.to_dict(), 'kwargs': {'width': 2}})]
