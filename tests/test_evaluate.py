"""Tests of ser_jax/evaluation.py (launch/evaluate.py): re-evaluating training checkpoints
and imported weights.

A tiny BatchNorm CNN (registered in the model registry, as tests/test_train.py does) is
trained once per session on in-memory synthetic clips, so restoring `params` and
`batch_stats` is exercised without compiling a big model. The command-line test uses the
real CNN-X (`configs/cnnx.py:tiny`) with imported weights on the `synthetic_data_dir` TFDS
dataset. tests/test_predict.py reuses the trained run from here.
"""
import importlib.util
import json
import os
import pathlib
import shutil
import subprocess
import sys

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]

from ser_jax import checkpoints  # pylint: disable=g-bad-import-order
from ser_jax import errors
from ser_jax import evaluation as evaluate
from ser_jax import inference
from ser_jax import input_pipeline
from ser_jax import metrics
from ser_jax import model_init
from ser_jax import models
from ser_jax import pretrained
from ser_jax import reports
from ser_jax import train
import test_train

TINY = 'tiny_eval_net'
NUM_CLASSES = 4


class TinyBNNet(nn.Module):
  """conv -> BatchNorm -> ReLU -> mean over time -> dense: cheap, with batch_stats."""
  num_classes: int = NUM_CLASSES
  dtype: object = jnp.float32

  @nn.compact
  def __call__(self, x, train=False, mask=None):  # pylint: disable=redefined-outer-name
    del mask
    x = nn.Conv(4, (3, 3), strides=2, name='conv')(x)  # (B, mel/2, time/2, 4)
    x = nn.BatchNorm(use_running_average=not train, name='bn')(x)
    x = nn.relu(x).mean(axis=2)  # (B, mel/2, 4)
    return nn.Dense(self.num_classes, name='head')(x.reshape(x.shape[0], -1))




def synthetic_examples(actors=(1, 2, 3), clips_per_actor=6, seed=0):
  """128-mel clips of varying length whose class is a bright mel band."""
  rng = np.random.RandomState(seed)
  items = []
  for actor in actors:
    for j in range(clips_per_actor):
      label = (j + actor) % NUM_CLASSES
      image = rng.randn(128, 40 + 7 * j).astype(np.float32) - 40.0
      image[32 * label:32 * label + 32] += 8.0
      items.append({'log_mel': image, 'emotion': label, 'actor': actor,
                    'file_name': f'{actor:02d}-{j}.wav'})
  return input_pipeline.read_source(items, dataset_name='synthetic')


def tiny_config():
  c = _load_config_module('default').get_config('tiny')
  c.model.name = TINY
  c.model.num_classes = NUM_CLASSES
  c.data.input_shape = (16, 16)
  c.folds.test_actors = (3,)
  c.batch_size = 4
  c.eval_batch_size = 4
  c.num_epochs = 2
  c.optimizer.learning_rate = 3e-2
  return c


def _load_config_module(name):
  spec = importlib.util.spec_from_file_location(f'cfg_{name}', ROOT / 'configs' / f'{name}.py')
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


_CACHE = {}


def trained_run(tmp_path_factory, seed=None):
  """(workdir, config, examples) of one tiny training run (per seed), shared by the session."""
  key = 'run' if seed is None else f'run_seed_{seed}'
  if key not in _CACHE:
    workdir = tmp_path_factory.mktemp('eval_run')
    config, examples = tiny_config(), synthetic_examples()
    if seed is not None:
      config.seed = seed
    with test_train.registered(TINY, TinyBNNet):
      train.train_and_evaluate(config, workdir, examples=examples)
    _CACHE[key] = (workdir, config, examples)
  return _CACHE[key]


def cnnx_weights(tmp_path_factory):
  """(weights dir, config) of an untrained CNN-X at the tiny input shape, imported format."""
  if 'cnnx' not in _CACHE:
    config = _load_config_module('cnnx').get_config('tiny')
    # Random weights without compiling an init: the structure from a trace, values from numpy.
    rng = np.random.default_rng(0)
    variables = jax.tree.map(
        lambda z: (0.05 * rng.standard_normal(z.shape)).astype(z.dtype),
        model_init.init_variables(config, abstract=True))
    out = tmp_path_factory.mktemp('cnnx_weights') / 'imported'
    pretrained.save_imported(out, variables, {'model': 'cnnx', 'source': 'test-init'})
    _CACHE['cnnx'] = (out, config)
  return _CACHE['cnnx']


@pytest.fixture
def run(tmp_path_factory, monkeypatch):
  monkeypatch.setitem(models.MODELS, TINY, TinyBNNet)
  return trained_run(tmp_path_factory)


def test_reevaluation_matches_training_report(run, tmp_path):
  workdir, _, examples = run
  results = evaluate.run_evaluation(workdir=workdir, examples=examples,
                                    output_dir=tmp_path)
  assert len(results) == 1
  m = results[0]
  report = json.loads((workdir / 'fold_0' / 'report.json').read_text())
  assert m['confusion'] == report['confusion']
  for k in ('accuracy', 'precision', 'recall', 'f1'):
    assert m[k] == pytest.approx(report[k], abs=1e-12)
  assert m['test_actors'] == [3]
  assert sum(map(sum, m['confusion'])) == m['num_examples'] == 6
  out = pathlib.Path(m['report_dir'])
  assert out.parent == tmp_path and out.name.startswith('fold_0_step_')
  for name in ('report.json', 'report.md', 'confusion_matrix.png', 'curves.png'):
    assert (out / name).stat().st_size > 0, name
  text = evaluate.format_results(results, checkpoints.read_config(workdir))
  assert '| | Accuracy | Precision | Recall | F1-Score |' in text
  assert f"{100 * m['accuracy']:.2f}%" in text


def test_actor_sets_cover_every_clip_once(run, tmp_path):
  workdir, _, examples = run
  # Actor 9 is not in the data: the report lists the actors actually evaluated.
  [m] = evaluate.run_evaluation(workdir=workdir, examples=examples, folds=[0],
                                actors=(1, 3, 9), output_dir=tmp_path,
                                allow_training_speakers=True)
  assert m['num_examples'] == 12 and m['test_actors'] == [1, 3]
  assert sum(m['per_class'][c]['support'] for c in range(NUM_CLASSES)) == 12
  [m_all] = evaluate.run_evaluation(workdir=workdir, examples=examples, folds=[0],
                                    actors='all', write=False, allow_training_speakers=True)
  assert m_all['num_examples'] == len(examples) == 18
  assert sorted(os.listdir(tmp_path)) == ['fold_0_step_' + m['checkpoint'].rsplit('/', 1)[1]
                                          + '_actors_1-3-9']
  report = json.loads((tmp_path / os.listdir(tmp_path)[0] / 'report.json').read_text())
  assert report['test_actors'] == [1, 3]


def test_training_speakers_are_refused_unless_allowed(run, tmp_path, monkeypatch):
  """Issue 11, item 3: fold 0 trained on actors 1 and 2 (its checkpoint records them)."""
  workdir, _, examples = run
  for actors in ((1,), (2, 3), 'all'):
    with pytest.raises(errors.UserError, match=r'speakers \[(1|2|1, 2)\] are in the training '
                       r'set of .*fold_0/checkpoints/\d+ \(it trained on speakers \[1, 2\]\).*'
                       r'--allow_training_speakers'):
      evaluate.run_evaluation(workdir=workdir, examples=examples, folds=[0], actors=actors,
                              output_dir=tmp_path / 'refused')
  assert not (tmp_path / 'refused').exists()
  titles = []
  for name in ('plot_confusion', 'plot_curves'):
    real = getattr(reports, name)
    monkeypatch.setattr(reports, name, lambda *a, real=real, **kw: titles.append(
        kw['title']) or real(*a, **kw))
  [m] = evaluate.run_evaluation(workdir=workdir, examples=examples, folds=[0], actors=(1, 3),
                                output_dir=tmp_path, allow_training_speakers=True)
  assert m['includes_training_speakers'] == [1]
  out = pathlib.Path(m['report_dir'])
  assert json.loads((out / 'report.json').read_text())['includes_training_speakers'] == [1]
  md = (out / 'report.md').read_text()
  assert md.startswith('# Report: tiny_eval_net fold 0 step ') and md.splitlines()[0].endswith(
      ' (includes training speakers)')
  assert "**Includes training speakers:** actor 1 was in the model's training set" in md
  assert len(titles) == 2 and all(t.endswith('(includes training speakers)') for t in titles)
  assert '(includes training speakers)' in evaluate.format_results(
      [m], checkpoints.read_config(workdir))
  # Held-out actors only: nothing is marked.
  [held_out] = evaluate.run_evaluation(workdir=workdir, examples=examples, write=False)
  assert held_out['includes_training_speakers'] == []
  assert 'training speakers' not in held_out['title']


def test_evaluate_errors(run, tmp_path):
  workdir, config, examples = run
  with pytest.raises(errors.UserError, match=r'has no step 999; it has steps \['):
    evaluate.run_evaluation(workdir=workdir, examples=examples, step=999, write=False)
  with pytest.raises(errors.UserError, match=r'no checkpoint for fold 5.*folds with '
                     r'checkpoints.*\[0\]'):
    evaluate.run_evaluation(workdir=workdir, examples=examples, folds=[5], write=False)
  other = config.copy_and_resolve_references()
  other.data.input_shape = (16, 32)
  with pytest.raises(errors.UserError, match='holds model .* but the config asks'):
    evaluate.run_evaluation(other, workdir=workdir, examples=examples, write=False)
  with pytest.raises(errors.UserError, match='outside 1..24'):
    evaluate.run_evaluation(workdir=workdir, examples=examples, actors=(0, 3), write=False)
  with pytest.raises(errors.UserError, match='Empty data selection'):
    evaluate.run_evaluation(workdir=workdir, examples=examples, actors=(20,), write=False)
  with pytest.raises(errors.UserError, match='config.json does not exist'):
    evaluate.run_evaluation(workdir=tmp_path, examples=examples, write=False)
  with pytest.raises(errors.UserError, match='choose the data'):
    evaluate.run_evaluation(config, weights=workdir, examples=examples, write=False)
  with pytest.raises(errors.UserError, match="--actors must be"):
    evaluate.parse_actors('4,x')
  assert evaluate.parse_actors(['9', '4', '4']) == (4, 9)


def test_imported_weights_give_the_checkpoint_metrics(run, tmp_path):
  workdir, config, examples = run
  variables, meta, step = checkpoints.restore_fold(workdir, 0)
  assert meta['epoch'] == 2 and step > 0
  assert set(variables) == {'params', 'batch_stats'} and variables['batch_stats']['bn']
  weights = pretrained.save_imported(tmp_path / 'w', variables, {'model': TINY})
  [from_weights] = evaluate.run_evaluation(config, weights=weights, examples=examples,
                                           actors=(3,), output_dir=tmp_path / 'out')
  [from_ckpt] = evaluate.run_evaluation(workdir=workdir, examples=examples, write=False)
  assert from_weights['confusion'] == from_ckpt['confusion']
  assert from_weights['eval_loss'] == pytest.approx(from_ckpt['eval_loss'], rel=1e-6)
  assert (tmp_path / 'out' / 'actors_3' / 'report.md').exists()
  # The same fold through --fold: the config's custom fold holds out actor 3.
  [by_fold] = evaluate.run_evaluation(config, weights=weights, examples=examples, folds=[0],
                                      write=False)
  assert by_fold['test_actors'] == [3]

  # Weights of another model: named in import_info, or caught by the strict merge.
  other = config.copy_and_resolve_references()
  other.model.name = 'cnnx'
  with pytest.raises(errors.UserError, match="imported for model 'tiny_eval_net'"):
    evaluate.run_evaluation(other, weights=weights, examples=examples, actors='all',
                            write=False)
  five = config.copy_and_resolve_references()
  five.model.num_classes = 5
  with pytest.raises(errors.UserError,
                     match=r"cannot load .* into model 'tiny_eval_net' \(5 classes.*does not fit"):
    evaluate.run_evaluation(five, weights=weights, examples=examples, actors='all',
                            write=False)
  with pytest.raises(errors.UserError, match='do not exist'):
    evaluate.run_evaluation(config, weights=tmp_path / 'nope', examples=examples,
                            actors='all', write=False)



def test_several_folds_write_a_summary(run, tmp_path):
  """A workdir with two fold checkpoints: each fold on its own actors, then mean +- std."""
  workdir, _, examples = run
  copy = tmp_path / 'run'
  shutil.copytree(workdir, copy)
  shutil.copytree(copy / 'fold_0', copy / 'fold_1')
  # Leave-one-actor-out: fold 0 holds out actor 1, fold 1 actor 2.
  config = json.loads((copy / 'config.json').read_text())
  config['folds'].update(scheme='loao', test_actors=[])
  (copy / 'config.json').write_text(json.dumps(config))
  # Both copies record training on actors 1 and 2, so each fold's held-out actor is one
  # they trained on: allowed here, and the summary says so.
  results = evaluate.run_evaluation(workdir=copy, examples=examples,
                                    allow_training_speakers=True)
  assert [(m['fold'], m['test_actors'], m['num_examples']) for m in results] == [
      (0, [1], 6), (1, [2], 6)]
  assert json.loads((copy / 'evaluate' / 'results.json').read_text())[
      'includes_training_speakers'] == [1, 2]
  assert '**Includes training speakers:** actors 1, 2' in (
      copy / 'evaluate' / 'results.md').read_text()
  summary = json.loads((copy / 'evaluate' / 'results.json').read_text())['summary']
  assert summary['num_folds'] == 2
  assert summary['mean']['accuracy'] == pytest.approx(
      (results[0]['accuracy'] + results[1]['accuracy']) / 2)
  assert '**mean +- std**' in (copy / 'evaluate' / 'results.md').read_text()
  with pytest.raises(errors.UserError, match='--actors applies to one checkpoint'):
    evaluate.run_evaluation(workdir=copy, examples=examples, actors=(1,), write=False)

@pytest.fixture
def two_seeds(run, tmp_path_factory, tmp_path):
  """Two different trained runs as `<tmp>/seeds/seed_{0,1}`: (runs, config, examples, the
  prepared clips of their test actor 3)."""
  workdir, config, examples = run
  other, _, _ = trained_run(tmp_path_factory, seed=7)
  runs = [tmp_path / 'seeds' / 'seed_0', tmp_path / 'seeds' / 'seed_1']
  shutil.copytree(workdir, runs[0])
  shutil.copytree(other, runs[1])
  selection = input_pipeline.select_speakers(
      input_pipeline.prepare_images(examples, config.data), (3,))
  return runs, config, examples, selection


def _check_combined(m, runs, examples, title, folder):
  """Checks one combined fold's per-run accuracies, title and report folder; returns its
  report.md."""
  alone = [evaluate.run_evaluation(workdir=w, examples=examples, write=False)[0] for w in runs]
  assert [r['accuracy'] for r in m['members']] == [a['accuracy'] for a in alone]
  assert m['title'].startswith(f'{title} of 2 runs: tiny_eval_net fold 0 step ')
  out = pathlib.Path(m['report_dir'])
  assert out.parent == runs[0].parent / f'evaluate_{folder}_seed_0+seed_1'
  return (out / 'report.md').read_text()


def test_ensemble_averages_the_runs_probabilities(two_seeds):
  """Two seeds of one experiment: the ensemble is the argmax of their mean softmax."""
  runs, config, examples, selection = two_seeds
  probs = [inference.Predictor(config, inference.load_variables(
      config, workdir=w, fold=0).variables).evaluate(selection)['probabilities'] for w in runs]
  assert np.abs(probs[0] - probs[1]).max() > 1e-3  # two different models
  mean = (probs[0] + probs[1]) / 2
  want = metrics.classification_metrics(selection.labels, mean.argmax(-1), NUM_CLASSES)

  [m] = evaluate.run_evaluation(workdir=','.join(map(str, runs)), examples=examples)
  assert m['confusion'] == want['confusion'] and m['accuracy'] == want['accuracy']
  assert m['eval_loss'] == pytest.approx(
      -np.mean(np.log(mean[np.arange(6), selection.labels])), rel=1e-6)
  md = _check_combined(m, runs, examples, 'Ensemble', 'ensemble')
  assert md.startswith('# Report: Ensemble of 2 runs: ') and 'averaged clip by clip' in md
  assert f"seed_1/fold_0/checkpoints/{m['checkpoint'].rsplit('/', 1)[1]} (alone " in md

  # A sequence of runs works as well as 'a,b'; a run with itself is not an ensemble.
  [again] = evaluate.run_evaluation(workdir=runs, examples=examples, write=False)
  assert again['confusion'] == m['confusion']
  with pytest.raises(errors.UserError, match='names a run twice'):
    evaluate.run_evaluation(workdir=[runs[0], runs[0]], examples=examples, write=False)


def test_ensemble_errors(run, tmp_path):
  workdir, _, examples = run
  seeds = tmp_path / 'seeds'
  for name in ('seed_0', 'seed_1'):
    shutil.copytree(workdir, seeds / name)
  # A --seeds root is not a run: the error names its runs and both ways to evaluate them.
  with pytest.raises(errors.UserError, match=r'seeds holds the runs of --seeds \(seed_0, '
                     r'seed_1\), not one run: pass one, e.g. --workdir=.*seeds/seed_0 .*'
                     r'ensemble: --workdir=.*seeds/seed_0,.*seeds/seed_1\)$'):
    evaluate.run_evaluation(workdir=seeds, examples=examples, write=False)
  recorded = (seeds / 'seed_1' / 'config.json').read_text()
  other = json.loads(recorded)
  other['model']['num_classes'] = 5
  (seeds / 'seed_1' / 'config.json').write_text(json.dumps(other))
  with pytest.raises(errors.UserError, match=r'seed_1 differs from .*seed_0 in '
                     r'model.num_classes: \[5\] vs \[4\]; an ensemble averages runs of one '
                     r'model on one input transform'):
    evaluate.run_evaluation(workdir=[seeds / 'seed_0', seeds / 'seed_1'], examples=examples,
                            write=False)
  # One set of batches feeds every run: a run trained on other inputs is refused too.
  other = json.loads(recorded)
  other['data']['normalize'] = 'mel'
  (seeds / 'seed_1' / 'config.json').write_text(json.dumps(other))
  with pytest.raises(errors.UserError, match=r"seed_1 differs from .*seed_0 in "
                     r"data.normalize: \['mel'\] vs \['none'\]"):
    evaluate.run_evaluation(workdir=[seeds / 'seed_0', seeds / 'seed_1'], examples=examples,
                            write=False)
  (seeds / 'seed_1' / 'config.json').write_text(recorded)
  shutil.rmtree(seeds / 'seed_1' / 'fold_0')
  with pytest.raises(errors.UserError, match=r'seed_1 holds no fold checkpoints'):
    evaluate.run_evaluation(workdir=[seeds / 'seed_0', seeds / 'seed_1'], examples=examples,
                            write=False)


def test_weight_average_is_one_model_of_the_runs_mean_variables(two_seeds):
  """--combine=weights: the runs' variables averaged leaf by leaf, evaluated as one model."""
  runs, config, examples, selection = two_seeds
  loaded = [inference.load_variables(config, workdir=w, fold=0).variables for w in runs]
  mean = jax.tree.map(lambda a, b: (np.float64(a) + np.float64(b)) / 2, *loaded)
  assert np.abs(mean['params']['head']['kernel'] - loaded[0]['params']['head']['kernel']
                ).max() > 1e-3  # two different models, so the average is a third
  want = inference.Predictor(config, jax.tree.map(np.float32, mean)).evaluate(selection)

  [m] = evaluate.run_evaluation(workdir=runs, examples=examples, combine='weights')
  assert m['accuracy'] == want['accuracy']
  assert m['eval_loss'] == pytest.approx(want['loss'], rel=1e-6)
  md = _check_combined(m, runs, examples, 'Weight average', 'soup')
  assert 'variables averaged leaf by leaf into one model over ' in md

  with pytest.raises(errors.UserError, match=r'--combine=weights averages the variables of '
                     r'several runs: pass at least two in --workdir \(got 1\)'):
    evaluate.run_evaluation(workdir=runs[0], examples=examples, combine='weights')
  with pytest.raises(errors.UserError, match=r"--combine='soup': expected one of "
                     r'probabilities, weights'):
    evaluate.run_evaluation(workdir=runs, examples=examples, combine='soup')


def test_average_variables_means_floats_and_keeps_agreeing_integers():
  a = {'params': {'w': np.array([1.0, 2.0], np.float32)}, 'count': np.array(3)}
  b = {'params': {'w': np.array([2.0, 5.0], np.float32)}, 'count': np.array(3)}
  c = {'params': {'w': np.array([0.0, 2.0], np.float32)}, 'count': np.array(3)}
  out = evaluate.average_variables([a, b, c])
  assert out['params']['w'].dtype == np.float32
  np.testing.assert_array_equal(out['params']['w'], [1.0, 3.0])
  assert out['count'] == 3
  with pytest.raises(errors.UserError, match=r"the runs' \['count'\] \(int64\) differ"):
    evaluate.average_variables([a, dict(b, count=np.array(4))])
  with pytest.raises(errors.UserError, match=r"\['params'\]\['w'\] differ in shape"):
    evaluate.average_variables([a, dict(b, params={'w': np.zeros(3, np.float32)})])
  with pytest.raises(errors.UserError, match='hold different variables'):
    evaluate.average_variables([a, {'params': {'v': np.zeros(2)}, 'count': np.array(3)}])


def test_average_outputs_is_the_mean_softmax():
  a = {'labels': np.array([0, 1]), 'probabilities': np.array([[0.9, 0.1], [0.6, 0.4]]),
       'accuracy': 0.5}
  b = {'labels': np.array([0, 1]), 'probabilities': np.array([[0.3, 0.7], [0.0, 1.0]]),
       'accuracy': 0.5}
  out = evaluate.average_outputs([a, b])
  np.testing.assert_allclose(out['probabilities'], [[0.6, 0.4], [0.3, 0.7]])
  assert out['predictions'].tolist() == [0, 1] and out['accuracy'] == 1.0
  np.testing.assert_allclose(out['loss'], -(np.log(0.6) + np.log(0.7)) / 2)
  np.testing.assert_allclose(np.exp(out['logits']), out['probabilities'])
  with pytest.raises(AssertionError, match='different clips'):
    evaluate.average_outputs([a, dict(b, labels=np.array([1, 1]))])


@pytest.mark.slow
def test_command_line_on_tfds_dataset(synthetic_data_dir, tmp_path_factory, tmp_path):
  """launch/evaluate.py end to end: CNN-X weights on every clip of a built TFDS dataset."""
  weights, _ = cnnx_weights(tmp_path_factory)
  out = tmp_path / 'report'
  proc = subprocess.run(
      [sys.executable, str(ROOT / 'launch' / 'evaluate.py'), '--config',
       f'{ROOT / "configs" / "cnnx.py"}:tiny', f'--weights={weights}', '--actors=all',
       f'--config.data.data_dir={synthetic_data_dir}', '--config.data.download=False',
       f'--output_dir={out}', '--format=json'],
      cwd=tmp_path, capture_output=True, text=True, timeout=600,
      env=dict(os.environ, PYTHONPATH=str(ROOT)))
  assert proc.returncode == 0, proc.stderr[-3000:]
  [m] = json.loads(proc.stdout)
  assert m['num_examples'] == 64 and sum(map(sum, m['confusion'])) == 64
  assert m['test_actors'] == list(range(1, 9))
  assert (out / 'actors_all' / 'confusion_matrix.png').stat().st_size > 0

  bad = subprocess.run(
      [sys.executable, str(ROOT / 'launch' / 'evaluate.py'), f'--workdir={tmp_path}/none'],
      cwd=tmp_path, capture_output=True, text=True, timeout=600,
      env=dict(os.environ, PYTHONPATH=str(ROOT)))
  assert bad.returncode != 0
  assert 'evaluate.py: error:' in bad.stderr and 'config.json does not exist' in bad.stderr
