"""Tests of ser_jax/distill.py: soft targets from finished runs, and their checks.

Teachers are tiny runs of tests/test_train.py's model on its synthetic clips (3 epochs,
seconds each); the student's soft targets are compared with the teachers' own predictions.
"""
import numpy as np
import pytest

from ser_jax import config_lib
from ser_jax import distill
from ser_jax import inference
from ser_jax import input_pipeline
from ser_jax import train
import test_train


@pytest.fixture(scope='module')
def teachers(tmp_path_factory):
  """Two finished tiny runs (seeds 0 and 1) on fold `test_actors=(4,)`."""
  root = tmp_path_factory.mktemp('teachers')
  with test_train.registered():
    for seed in (0, 1):
      train.train_and_evaluate(test_train.tiny_config(seed=seed), root / f'seed_{seed}',
                               examples=test_train.synthetic_examples())
  return [str(root / 'seed_0'), str(root / 'seed_1')]


def _student_clips(config):
  examples = input_pipeline.prepare_images(test_train.synthetic_examples(), config.data)
  fold = dict(config_lib.get_folds(config))[0]
  return input_pipeline.fold_split(examples, fold, dataset_name='synthetic')[0]


@pytest.mark.parametrize('temperature', [1.0, 3.0])
def test_soft_targets_blend_the_teachers_mean_probabilities(teachers, temperature):
  config = test_train.tiny_config(**{'distill.teachers': tuple(teachers),
                                     'distill.weight': 0.25,
                                     'distill.temperature': temperature})
  with test_train.registered():
    train_ex = _student_clips(config)
    got = distill.soft_targets(config, 0, train_ex)
    probs, logits = [], []
    for t in teachers:  # each teacher alone, through the ordinary inference path
      loaded = inference.load_variables(config, workdir=t, fold=0)
      out = inference.Predictor(config, loaded.variables).evaluate(train_ex)
      probs.append(out['probabilities'])
      logits.append(out['logits'])
  soft = [np.exp(z / temperature) / np.exp(z / temperature).sum(-1, keepdims=True)
          for z in np.asarray(logits, np.float64)]
  want = 0.75 * np.eye(4)[train_ex.labels] + 0.25 * np.mean(soft, axis=0)
  np.testing.assert_allclose(got, want, atol=1e-6)
  np.testing.assert_allclose(got.sum(1), 1.0, atol=1e-5)
  assert not np.allclose(probs[0], probs[1])  # two different teachers were averaged
  if temperature == 1.0:  # the teachers' own probabilities
    np.testing.assert_allclose(np.mean(soft, axis=0), np.mean(probs, axis=0), atol=1e-6)
  else:  # softer: every teacher's largest probability shrinks
    assert np.all(np.max(soft, -1) < np.max(probs, -1) + 1e-7)
    assert np.mean(np.max(soft, -1)) < np.mean(np.max(probs, -1)) - 1e-3
  assert distill.soft_targets(test_train.tiny_config(), 0, train_ex) is None


def test_train_batches_use_the_given_targets_and_mix_them():
  cfg = test_train.tiny_config(**{'data.mixup_alpha': 0.4}).data
  ex = input_pipeline.prepare_images(test_train.synthetic_examples(), cfg)
  n = len(ex)
  plain = list(input_pipeline.train_batches(ex, cfg, batch_size=4, num_classes=4, seed=1,
                                            epoch=0))
  one_hot = list(input_pipeline.train_batches(
      ex, cfg, batch_size=4, num_classes=4, seed=1, epoch=0,
      targets=np.eye(4, dtype=np.float32)[ex.labels]))
  for a, b in zip(plain, one_hot):  # explicit one-hot rows are the default exactly
    for k in a:
      np.testing.assert_array_equal(a[k], b[k])
  # Soft targets: row i of the clip's targets, mixed with the partner's by mixup's weight.
  soft = np.random.default_rng(0).dirichlet(np.ones(4), n).astype(np.float32)
  tagged = list(input_pipeline.train_batches(ex, cfg, batch_size=4, num_classes=4, seed=1,
                                             epoch=0, targets=soft))
  for a, b in zip(plain, tagged):
    np.testing.assert_array_equal(a['image'], b['image'])
    np.testing.assert_allclose(b['targets'].sum(1), 1.0, atol=1e-6)
    assert not np.allclose(a['targets'], b['targets'])
  with pytest.raises(ValueError, match=r'targets of shape \(3, 4\)'):
    next(input_pipeline.train_batches(ex, cfg, batch_size=4, num_classes=4, seed=1,
                                      epoch=0, targets=soft[:3]))


def test_distilled_run_trains_and_records_its_teachers(teachers, tmp_path):
  config = test_train.tiny_config(**{'distill.teachers': tuple(teachers),
                                     'distill.weight': 1.0, 'num_epochs': 2})
  with test_train.registered():
    summary = train.train_and_evaluate(config, tmp_path / 'student',
                                       examples=test_train.synthetic_examples())
  assert 0.0 <= summary['mean']['accuracy'] <= 1.0
  results = (tmp_path / 'student' / 'results.md').read_text()
  assert 'distilled from 2 teacher run(s) (weight 1.0' in results
  assert teachers[0] in results


def test_teachers_of_other_speakers_unfinished_or_other_input_are_refused(teachers,
                                                                         tmp_path):
  with test_train.registered():
    other_fold = test_train.tiny_config(**{'distill.teachers': (teachers[0],),
                                           'distill.weight': 1.0, 'folds.test_actors': (3,)})
    with pytest.raises(ValueError, match=r'seed_0 fold 0 step \d+ trained on speakers '
                                         r'\[1, 2, 3\], the student trains on \[1, 2, 4\]'):
      distill.soft_targets(other_fold, 0, _student_clips(other_fold))
    # A run stopped early: its config asks for more epochs than its checkpoint has.
    short = tmp_path / 'short'
    train.train_and_evaluate(test_train.tiny_config(num_epochs=1), short,
                             examples=test_train.synthetic_examples())
    config_json = short / 'config.json'
    config_json.write_text(config_json.read_text().replace('"num_epochs": 1',
                                                           '"num_epochs": 3'))
    config = test_train.tiny_config(**{'distill.teachers': (str(short),),
                                       'distill.weight': 1.0})
    with pytest.raises(ValueError, match=r'short fold 0 step \d+ is epoch 1 of 3: finish'):
      distill.soft_targets(config, 0, _student_clips(config))
    missing = test_train.tiny_config(**{'distill.teachers': (str(tmp_path / 'typo'),),
                                        'distill.weight': 1.0})
    with pytest.raises(ValueError, match=r'distill.teachers: .*typo is not a training run'):
      train.train_and_evaluate(missing, tmp_path / 'student',
                               examples=test_train.synthetic_examples())
    assert not (tmp_path / 'student').exists()  # refused before anything was written
    wider = test_train.tiny_config(**{'distill.teachers': (teachers[0],),
                                      'distill.weight': 1.0, 'data.input_shape': (16, 20)})
    with pytest.raises(ValueError, match=r'data.input_shape=\(16, 16\), the student '
                                         r'\(16, 20\)'):
      distill.soft_targets(wider, 0, _student_clips(wider))


@pytest.mark.parametrize('settings, message', [
    ({'distill.weight': 1.5}, r'distill.weight=1.5 must be a number in \[0.0, 1.0\]'),
    ({'distill.temperature': 0.0}, r'distill.temperature=0.0 must be a number > 0.0'),
    ({'distill.teachers': ('/a',)}, r'weight is 0: the teachers would be computed and '
                                    r'ignored'),
    ({'distill.teachers': ('/a', '/a'), 'distill.weight': 1.0}, 'names a run twice'),
])
def test_bad_distill_settings_are_refused_before_training(settings, message):
  with test_train.registered():
    with pytest.raises(ValueError, match=message):
      config_lib.validate(test_train.tiny_config(**settings))
