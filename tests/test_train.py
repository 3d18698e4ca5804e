"""Tests of ser_jax/train.py (and steps.py): optimiser, errors, smoke/overfit run,
non-finite stop, resume.

Training runs use a tiny BatchNorm CNN registered in the model registry as 'tiny', on
synthetic clips (16 mel x 16 frames), so each compile and step is cheap; the resume test
kills a real training subprocess. This module also serves as the subprocess runner
(`python tests/test_train.py ...`) for tests/test_parallel.py, so both use the same model
and data.
"""
import contextlib
import json
import re
import os
import pathlib
import signal
import subprocess
import sys
import time

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]

from ser_jax import config_lib  # pylint: disable=g-bad-import-order
from ser_jax import errors
from ser_jax import inference
from ser_jax import input_pipeline
from ser_jax import model_init
from ser_jax import models
from ser_jax import parallel
from ser_jax import splits
from ser_jax import steps
from ser_jax import train


class TinyNet(nn.Module):
  """conv -> BatchNorm -> ReLU -> mean over time -> (dropout) -> dense. BN axis settable (pmap)."""
  num_classes: int = 8
  dtype: object = jnp.float32
  bn_axis_name: str | None = None
  dropout: float = 0.0

  @nn.compact
  def __call__(self, x, train=False, mask=None):  # pylint: disable=redefined-outer-name
    # No conv bias before BatchNorm (as in CNN14): its true gradient is 0, and Adam would
    # blow float noise in it up to lr-sized steps that differ between device counts.
    x = nn.Conv(4, (3, 3), strides=2, use_bias=False, name='conv')(x)  # (B, mel/2, time/2, 4)
    x = nn.BatchNorm(use_running_average=not train, axis_name=self.bn_axis_name,
                     name='bn')(x)
    x = nn.relu(x).mean(axis=2)  # (B, mel/2, 4): keeps where in mel the energy is
    x = x.reshape(x.shape[0], -1)  # (B, mel/2 * 4)
    x = nn.Dropout(self.dropout, deterministic=not train)(x)
    return nn.Dense(self.num_classes, name='head')(x)


@contextlib.contextmanager
def registered(name='tiny', module=TinyNet):
  """`module` in the model registry as `name` (for code that cannot take monkeypatch)."""
  with pytest.MonkeyPatch.context() as mp:
    mp.setitem(models.MODELS, name, module)
    yield


def synthetic_examples(clips_per_actor=5, actors=(1, 2, 3, 4), num_classes=4, seed=0,
                       offset=-40.0):
  """Clips whose class is visible as a bright mel band; odd, varying lengths.

  `offset` (dB) shifts every value; 0 keeps BatchNorm's early running statistics close to
  the data, so eval logits stay small and comparisons across device counts well-conditioned.
  """
  rng = np.random.RandomState(seed)
  items = []
  for actor in actors:
    for j in range(clips_per_actor):
      label = (j + actor) % num_classes
      frames = 17 + 3 * j  # 17.. frames, resized to 16
      image = rng.randn(16, frames).astype(np.float32) + offset
      image[4 * label:4 * label + 4] += 6.0
      items.append({'log_mel': image, 'emotion': label, 'actor': actor,
                    'file_name': f'{actor:02d}-{j}.wav'})
  return input_pipeline.read_source(items, dataset_name='synthetic')


def tiny_config(**overrides):
  c = config_lib.with_variant(config_lib.default(), 'tiny', 'tiny_config')
  c.model.name = 'tiny'
  c.model.num_classes = 4
  c.data.input_shape = (16, 16)
  c.folds.test_actors = (4,)
  c.batch_size = 4
  c.eval_batch_size = 4
  c.num_epochs = 3
  c.optimizer.learning_rate = 3e-2
  c.log_every_steps = 2
  for key, value in overrides.items():
    target = c
    *path, last = key.split('.')
    for p in path:
      target = target[p]
    target[last] = value
  return c


def fold_outcome(workdir):
  """The numbers that must match between runs: final metrics and every epoch's losses."""
  report = json.loads((pathlib.Path(workdir) / 'fold_0' / 'report.json').read_text())
  keep = ('train_loss', 'train_accuracy', 'eval_loss', 'eval_accuracy')
  return {'metrics': {k: report[k] for k in ('accuracy', 'precision', 'recall', 'f1')},
          'confusion': report['confusion'],
          'history': [{k: h[k] for k in keep if k in h} for h in report['history']]}


def assert_outcomes_close(a, b, tol):
  assert a['confusion'] == b['confusion']
  for k in a['metrics']:
    assert abs(a['metrics'][k] - b['metrics'][k]) <= tol, k
  assert len(a['history']) == len(b['history'])
  for ha, hb in zip(a['history'], b['history']):
    assert ha.keys() == hb.keys()
    for k in ha:
      assert abs(ha[k] - hb[k]) <= tol * max(1.0, abs(ha[k])), (k, ha, hb)


def run_subprocess(args, env_extra=None, **kwargs):
  env = dict(os.environ, PYTHONPATH=str(ROOT), **(env_extra or {}))
  return subprocess.Popen([sys.executable, __file__, *args], env=env, cwd=str(ROOT),
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                          **kwargs)


@pytest.fixture
def tiny_models(monkeypatch):
  monkeypatch.setitem(models.MODELS, 'tiny', TinyNet)


# ----------------------------------------------------------------------------- optimiser


def _torch_steps(torch_opt_name, params0, grads_seq, lr, wd):
  torch = pytest.importorskip('torch')
  p = torch.nn.Parameter(torch.tensor(params0, dtype=torch.float64))
  opt = getattr(torch.optim, torch_opt_name)([p], lr=lr, weight_decay=wd)
  for g in grads_seq:
    opt.zero_grad()
    p.grad = torch.tensor(g, dtype=torch.float64)
    opt.step()
  return p.detach().numpy()


@pytest.mark.parametrize('name,torch_name', [('adam_l2', 'Adam'), ('adamw', 'AdamW')])
def test_optimizer_matches_pytorch(name, torch_name):
  config = tiny_config(**{'optimizer.name': name, 'optimizer.learning_rate': 0.1,
                          'optimizer.weight_decay': 0.05})
  tx = steps.create_optimizer(config, steps.create_learning_rate_fn(config, 10))
  rng = np.random.RandomState(1)
  params = rng.randn(5)
  grads_seq = [rng.randn(5) for _ in range(4)]
  want = _torch_steps(torch_name, params, grads_seq, 0.1, 0.05)
  p = jnp.asarray(params, jnp.float32)
  opt_state = tx.init(p)
  for g in grads_seq:
    updates, opt_state = tx.update(jnp.asarray(g, jnp.float32), opt_state, p)
    p = p + updates
  np.testing.assert_allclose(np.asarray(p), want, rtol=2e-5, atol=2e-6)
  # Coupled L2 and decoupled decay really differ (the test can tell them apart).
  other = _torch_steps('AdamW' if torch_name == 'Adam' else 'Adam', params, grads_seq,
                       0.1, 0.05)
  assert np.max(np.abs(other - want)) > 1e-3


@pytest.mark.parametrize('name', ['adam_l2', 'adamw'])
def test_trainable_regex_freezes_the_rest_decay_included(name):
  config = tiny_config(**{'optimizer.name': name, 'optimizer.weight_decay': 0.5,
                          'optimizer.trainable': '^head/'})
  tx = steps.create_optimizer(config, lambda step: 0.1)
  params = {'body': {'kernel': jnp.ones((2, 3))}, 'head': {'kernel': jnp.ones((3,)),
                                                           'bias': jnp.ones(())}}
  state = tx.init(params)
  grads = jax.tree.map(jnp.ones_like, params)
  for _ in range(2):
    updates, state = tx.update(grads, state, params)
    params = optax.apply_updates(params, updates)
  np.testing.assert_array_equal(params['body']['kernel'], 1.0)  # gradient and decay ignored
  assert np.all(np.asarray(params['head']['kernel']) < 0.9)  # the head did move
  assert np.all(np.asarray(params['head']['bias']) < 0.9)
  with pytest.raises(errors.UserError, match=r"trainable='\^nothing/' matches no parameter"):
    steps.create_optimizer(tiny_config(**{'optimizer.trainable': '^nothing/'}),
                           lambda step: 0.1).init(params)
  with pytest.raises(errors.UserError, match='invalid regex'):
    steps.create_optimizer(tiny_config(**{'optimizer.trainable': '('}), lambda step: 0.1)


@pytest.mark.parametrize('name', ['adam_l2', 'adamw'])
def test_layer_decay_scales_each_groups_updates(name):
  """optimizer.layer_decay: group k's updates are decay**k times what they are without it."""
  groups = ('^head/', '^mid/', '^body/')
  params = {'body': {'kernel': jnp.ones((2, 3))}, 'mid': {'kernel': jnp.full((3,), 2.0)},
            'head': {'kernel': jnp.ones((3,)), 'bias': jnp.ones(())}}
  grads = jax.tree.map(lambda p: jnp.full_like(p, 0.3), params)

  def updates(**changes):
    config = tiny_config(**{'optimizer.name': name, 'optimizer.weight_decay': 0.5,
                            'optimizer.trainable': '^(head|mid|body)/', **changes})
    tx = steps.create_optimizer(config, lambda step: 0.1)
    state, out = tx.init(params), None
    for _ in range(2):
      out, state = tx.update(grads, state, params)
    return out

  plain = updates()
  decayed = updates(**{'optimizer.layer_decay': 0.5, 'optimizer.layer_groups': groups})
  for part, factor in (('head', 1.0), ('mid', 0.5), ('body', 0.25)):
    for key in plain[part]:
      np.testing.assert_allclose(decayed[part][key], factor * plain[part][key], rtol=1e-6)
  assert np.abs(plain['body']['kernel']).min() > 1e-3  # the factors are seen, not zeros
  with pytest.raises(errors.UserError, match=r"no group matches the trainable parameter "
                     r"'body/kernel'"):
    updates(**{'optimizer.layer_decay': 0.5, 'optimizer.layer_groups': groups[:2]})
  with pytest.raises(errors.UserError, match='layer_decay=0.5 needs config.optimizer.'
                     'layer_groups'):
    updates(**{'optimizer.layer_decay': 0.5})
  # Frozen params need no group: only the trainable ones are scaled.
  frozen = updates(**{'optimizer.layer_decay': 0.5, 'optimizer.layer_groups': groups[:1],
                      'optimizer.trainable': '^head/'})
  np.testing.assert_array_equal(frozen['body']['kernel'], 0.0)


def test_schedule_and_clipping():
  config = tiny_config(**{'schedule.name': 'warmup_cosine', 'schedule.warmup_epochs': 1.0,
                          'num_epochs': 4, 'optimizer.learning_rate': 1.0,
                          'optimizer.grad_clip_norm': 1.0, 'optimizer.weight_decay': 0.0})
  lr = steps.create_learning_rate_fn(config, steps_per_epoch=10)
  assert float(lr(0)) == 0.0
  assert float(lr(10)) == pytest.approx(1.0)
  assert float(lr(25)) == pytest.approx(0.5 * (1 + np.cos(np.pi * 15 / 30)), rel=1e-5)
  assert float(lr(40)) == pytest.approx(0.0, abs=1e-6)
  tx = steps.create_optimizer(config, lr)
  state = tx.init(jnp.zeros(3))
  # Clipping happens before Adam: a huge gradient and a unit one give the same first step.
  big, _ = tx.update(jnp.array([300.0, 400.0, 0.0]), state, jnp.zeros(3))
  unit, _ = tx.update(jnp.array([0.6, 0.8, 0.0]), state, jnp.zeros(3))
  np.testing.assert_allclose(np.asarray(big), np.asarray(unit), rtol=1e-6)
  with pytest.raises(ValueError, match='schedule.name'):
    steps.create_learning_rate_fn(tiny_config(**{'schedule.name': 'step'}), 10)
  with pytest.raises(ValueError, match='optimizer.name'):
    steps.create_optimizer(tiny_config(**{'optimizer.name': 'sgd'}), lr)


# ----------------------------------------------------------------------------- errors


def test_fold_errors():
  with pytest.raises(ValueError, match=r'outside 1\.\.24'):
    config_lib.get_folds(tiny_config(**{'folds.test_actors': (3, 25)}))
  with pytest.raises(ValueError, match='folds.scheme'):
    config_lib.get_folds(tiny_config(**{'folds.test_actors': (), 'folds.scheme': 'random'}))
  with pytest.raises(ValueError, match='folds.which'):
    config_lib.get_folds(tiny_config(**{'folds.test_actors': (), 'folds.which': (4,)}))
  folds = config_lib.get_folds(tiny_config(**{'folds.test_actors': (), 'folds.which': ()}))
  assert [f.test for _, f in folds] == [(4, 9, 10, 14, 15, 17), (5, 13, 16, 18, 20, 23),
                                        (1, 2, 6, 8, 19, 21), (3, 7, 11, 12, 22, 24)]
  assert all(len(f.train) == 18 for _, f in folds)


def test_validation_folds_never_use_test_actors():
  config = tiny_config(**{'folds.test_actors': (), 'folds.which': (),
                          'folds.validation_actors': 3})
  val_folds = config_lib.get_folds(config)
  for (_, full), (_, val) in zip(config_lib.get_folds(
      tiny_config(**{'folds.test_actors': (), 'folds.which': ()})), val_folds):
    assert len(val.train) == 15 and len(val.test) == 3
    assert set(val.train) | set(val.test) == set(full.train)  # test actors in neither


def test_unknown_model_and_parallel_errors(tmp_path):
  with pytest.raises(ValueError, match=r"Unknown model 'nope'.*cnnx"):
    train.train_and_evaluate(tiny_config(**{'model.name': 'nope'}), tmp_path,
                             examples=synthetic_examples())
  assert not (tmp_path / 'model.json').exists()  # refused before writing anything


def test_empty_selection_error(tmp_path, tiny_models):
  config = tiny_config(**{'folds.test_actors': (7, 8)})
  with pytest.raises(ValueError, match=r'no clips of actors \[7, 8\] in '
                     r'ravdess/speech_predecessor48k \(preloaded\).*holds actors \[1, 2, 3, 4\]'):
    train.train_and_evaluate(config, tmp_path, examples=synthetic_examples())


def test_workdir_of_another_model_is_refused(tmp_path, tiny_models):
  (tmp_path / 'fold_0' / 'checkpoints' / '10').mkdir(parents=True)
  (tmp_path / 'model.json').write_text(json.dumps(
      {'name': 'cnn14', 'num_classes': 8, 'kwargs': {}, 'input_shape': [128, 256]}))
  with pytest.raises(ValueError, match='different model.*cnn14'):
    train.train_and_evaluate(tiny_config(), tmp_path, examples=synthetic_examples())


# ----------------------------------------------------------------------------- training


RUN_ARGS = ['--num_epochs=5', '--every=1']  # 15 training clips: 4 steps/epoch, last partial


@pytest.fixture(scope='module')
def whole_run(tmp_path_factory):
  """One uninterrupted tiny run (in this process): the smoke test and resume's reference."""
  workdir = tmp_path_factory.mktemp('whole')
  with registered():
    summary = train.train_and_evaluate(_cli_config(RUN_ARGS), workdir,
                                       examples=synthetic_examples())
  return workdir, summary


@pytest.mark.slow
def test_smoke_overfit_and_reports(whole_run):
  """Overfits 15 clips: the loss falls; every held-out clip is evaluated once; reports."""
  workdir, summary = whole_run
  fold = summary['folds'][0]
  assert fold['num_examples'] == 5 and fold['num_train_examples'] == 15
  assert sum(map(sum, fold['confusion'])) == 5
  report = json.loads((workdir / 'fold_0' / 'report.json').read_text())
  history = report['history']
  assert [h['epoch'] for h in history] == list(range(1, 6))
  assert history[-1]['train_loss'] < 0.25 * history[0]['train_loss']
  assert history[-1]['train_accuracy'] == 1.0
  # A checkpoint every epoch; the last 2 are kept (4 steps per epoch).
  steps = sorted(int(p.name) for p in (workdir / 'fold_0' / 'checkpoints').iterdir()
                 if p.name.isdigit())
  assert steps == [16, 20]
  for name in ('results.json', 'results.md', 'model.json', 'config.json',
               'fold_0/confusion_matrix.png', 'fold_0/curves.png'):
    assert (workdir / name).exists(), name
  assert list((workdir / 'tensorboard' / 'fold_0').glob('events.out.tfevents.*'))
  results = json.loads((workdir / 'results.json').read_text())
  assert results['summary']['mean']['accuracy'] == pytest.approx(fold['accuracy'])


def _poison(monkeypatch, key, from_epoch):
  """Makes `key` of every training batch NaN from `from_epoch` (0-based) on."""
  real = input_pipeline.train_batches

  def poisoned(*args, epoch, **kwargs):
    for batch in real(*args, epoch=epoch, **kwargs):
      if epoch >= from_epoch:
        batch[key][0] = np.nan
      yield batch

  monkeypatch.setattr(input_pipeline, 'train_batches', poisoned)


def _saved_steps(workdir):
  return sorted(int(p.name) for p in (workdir / 'fold_0' / 'checkpoints').iterdir()
                if p.name.isdigit())


def test_non_finite_loss_stops_and_keeps_last_good_checkpoint(tmp_path, tiny_models,
                                                             monkeypatch):
  _poison(monkeypatch, 'targets', from_epoch=1)  # finite inputs, NaN loss
  config = tiny_config(**{'num_epochs': 3, 'checkpoint.every_epochs': 1,
                          'log_every_steps': 10})
  with pytest.raises(train.NonFiniteLossError,
                     match=r'fold 0, epoch 2, step 5\b.*not saved.*step 4'):
    train.train_and_evaluate(config, tmp_path, examples=synthetic_examples())
  assert _saved_steps(tmp_path) == [4]


def test_non_finite_inputs_stop_training(tmp_path, tiny_models, monkeypatch):
  """NaN features stop training, naming their step (issue 11, item 2), like a NaN loss."""
  _poison(monkeypatch, 'image', from_epoch=1)
  config = tiny_config(**{'num_epochs': 3, 'checkpoint.every_epochs': 1,
                          'log_every_steps': 10})
  with pytest.raises(train.NonFiniteInputError,
                     match=r'Non-finite input features \(NaN or Inf\) in 1 batch row\(s\) of '
                     r'fold 0, epoch 2, step 5 \(no stored clip is non-finite.*not saved.*'
                     r'step 4'):
    train.train_and_evaluate(config, tmp_path, examples=synthetic_examples())
  assert _saved_steps(tmp_path) == [4]


def test_non_finite_inputs_name_the_clips(tmp_path, tiny_models):
  """A stored clip with Inf features stops the first epoch, naming the clip."""
  examples = synthetic_examples()
  examples.images[7][3, 5] = np.inf  # 02-2.wav, a training clip (actor 2)
  with pytest.raises(train.NonFiniteInputError,
                     match=r'fold 0, epoch 1, step [1-4] \(clips with NaN/Inf features: '
                     r'02-2\.wav\).*No checkpoint was saved'):
    train.train_and_evaluate(tiny_config(), tmp_path, examples=examples)
  assert not (tmp_path / 'fold_0' / 'checkpoints' / '4').exists()


def test_batch_larger_than_the_fold_and_actors_in_the_data(tmp_path, tiny_models):
  """A batch of 64 for 15 training clips trains (one step: every clip once, weight 1);
  reports list the actors present (1-4), not every actor the fold names (issue 11,
  items 5 and 16)."""
  config = tiny_config(**{'batch_size': 64, 'eval_batch_size': 64, 'num_epochs': 1})
  summary = train.train_and_evaluate(config, tmp_path, examples=synthetic_examples())
  [fold] = summary['folds']
  assert fold['num_train_examples'] == 15 and fold['num_examples'] == 5
  assert fold['train_actors'] == [1, 2, 3] and fold['test_actors'] == [4]
  report = json.loads((tmp_path / 'fold_0' / 'report.json').read_text())
  assert report['history'][0]['step'] == 1  # ceil(15 / 64)
  assert (report['train_actors'], report['test_actors']) == ([1, 2, 3], [4])
  assert '| 0 | 4 | 5 |' in (tmp_path / 'results.md').read_text()


# ----------------------------------------------------------------------------- resume


def _wait_for(proc, pattern, timeout):
  """Reads proc's output until a line contains `pattern`; returns all lines read."""
  lines, deadline = [], time.time() + timeout
  for line in proc.stdout:
    lines.append(line)
    if pattern in line:
      return lines
    if time.time() > deadline:
      break
  raise AssertionError(f'{pattern!r} not seen; output:\n{"".join(lines[-40:])}')


@pytest.mark.slow
def test_resume_after_kill_gives_identical_metrics(tmp_path, whole_run):
  # The killed run: slowed down from epoch 3 on so the kill lands mid-training.
  killed = tmp_path / 'killed'
  proc = run_subprocess(['train', str(killed), *RUN_ARGS, '--slow_from_epoch=2'])
  try:
    # 'saved' is logged once Orbax has committed the step, so step 12 is on disk.
    _wait_for(proc, 'checkpoint saved at step 12 (epoch 3)', timeout=240)
    _wait_for(proc, 'SLOW BATCH', timeout=60)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
  finally:
    if proc.poll() is None:
      proc.kill()
  assert proc.returncode == -signal.SIGKILL
  assert not (killed / 'results.json').exists()
  # The same command again resumes and finishes.
  proc = run_subprocess(['train', str(killed), *RUN_ARGS])
  out, _ = proc.communicate(timeout=300)
  assert proc.returncode == 0, out[-3000:]
  assert re.search(r'resuming from checkpoint step (8|12) \(epoch [23] of 5\)', out), out
  # It ends exactly where the uninterrupted run did.
  assert_outcomes_close(fold_outcome(whole_run[0]), fold_outcome(killed), tol=0.0)


@pytest.mark.slow
def test_growing_num_epochs_continues_like_a_longer_plan(tmp_path, whole_run):
  """3 epochs, then the same workdir with num_epochs=5 (constant learning rate): the same
  metrics and history as the run planned for 5 epochs from the start (issue 11, item 1)."""
  with registered():
    train.train_and_evaluate(_cli_config(['--num_epochs=3', '--every=1']), tmp_path,
                             examples=synthetic_examples())
    train.train_and_evaluate(_cli_config(RUN_ARGS), tmp_path, examples=synthetic_examples())
  assert_outcomes_close(fold_outcome(whole_run[0]), fold_outcome(tmp_path), tol=0.0)
  assert json.loads((tmp_path / 'config.json').read_text())['num_epochs'] == 5


# ----------------------------------------------------------------------------- TFDS data

# From-scratch configs with small models: the whole loop (checkpoints included). CNN-X's
# :tiny runs end to end in test_launcher_on_real_clips.
SMALL_CONFIGS = ('cnn_lstm',)
# 11M-80M parameters: a checkpoint with Adam's moments is up to ~1 GB, so these run one
# training step and a full evaluation through the training loop's own Runner (about 3
# minutes for all five on an idle 2-core CPU, most of it compiling CNN14).
LARGE_CONFIGS = ('cnn14', 'cnn14_attn', 'vgg19_attn', 'alexnet_attn', 'resnet18')


def _load_config(name, variant='tiny'):
  import importlib.util  # pylint: disable=g-import-not-at-top
  spec = importlib.util.spec_from_file_location(f'cfg_{name}', ROOT / 'configs' / f'{name}.py')
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config(variant)


def _tfds_config(name, data_dir):
  config = _load_config(name)
  config.data.data_dir = data_dir
  config.data.download = False
  config.folds.test_actors = (2, 7)  # the synthetic set has actors 1..8, 8 clips each
  config.num_epochs = 1
  config.init.expect_pretrained = False  # no weights here; the warning is tested below
  return config


@pytest.mark.slow
@pytest.mark.parametrize('name', SMALL_CONFIGS)
def test_small_config_tiny_trains_on_the_tfds_dataset(name, synthetic_data_dir, tmp_path):
  """The :tiny variant trains and evaluates on the built TFDS dataset, end to end."""
  summary = train.train_and_evaluate(_tfds_config(name, synthetic_data_dir), tmp_path)
  fold = summary['folds'][0]
  assert fold['num_examples'] == 16 and fold['num_train_examples'] == 48
  assert sum(map(sum, fold['confusion'])) == 16
  assert np.isfinite(fold['eval_loss'])


@pytest.mark.slow
@pytest.mark.parametrize('name', LARGE_CONFIGS)
def test_large_config_tiny_steps_on_the_tfds_dataset(name, synthetic_data_dir):
  """The :tiny variant's train step and evaluation run on TFDS clips (no checkpoint)."""
  config = _tfds_config(name, synthetic_data_dir)
  [(_, fold)] = config_lib.get_folds(config)
  examples = input_pipeline.prepare_images(input_pipeline.load_all(config.data),
                                           config.data)
  train_ex = input_pipeline.select_speakers(examples, fold.train)
  test_ex = input_pipeline.select_speakers(examples, fold.test)
  model = model_init.build_model(config)
  tx = steps.create_optimizer(config, steps.create_learning_rate_fn(config, 6))
  runner = parallel.make_runner(config, model, jax.random.PRNGKey(1))
  state = runner.place_state(steps.create_state(
      model.apply, model_init.initial_variables(config, model, jax.random.PRNGKey(0)), tx))
  batch = next(input_pipeline.train_batches(
      train_ex, config.data, batch_size=config.batch_size, num_classes=8, seed=0, epoch=0))
  state, metrics = runner.train(state, runner.place_batch(batch))
  assert np.isfinite(float(metrics['loss'])) and float(metrics['count']) == config.batch_size
  assert int(runner.host_state(state).step) == 1
  result = inference.evaluate_examples(runner, state, test_ex, config)
  assert result['num_examples'] == 16 and np.isfinite(result['loss'])
  assert sorted(result['labels'].tolist()) == sorted(test_ex.labels.tolist())


@pytest.mark.slow
def test_launcher_on_real_clips(mini_data_dir, tmp_path):
  """launch/train.py on RAVDESS clips (actors 1-4): CNN-X :tiny, overrides, then a resume."""
  cmd = [sys.executable, str(ROOT / 'launch' / 'train.py'),
         f'--config={ROOT / "configs" / "cnnx.py"}:tiny', f'--workdir={tmp_path}',
         f'--config.data.data_dir={mini_data_dir}', '--config.data.download=False',
         '--config.folds.test_actors=4', '--config.num_epochs=1']
  env = dict(os.environ, PYTHONPATH=str(ROOT))  # as installed: the package importable
  proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=env,
                        cwd=tmp_path)
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert 'cnnx: accuracy' in proc.stdout
  results = json.loads((tmp_path / 'results.json').read_text())
  assert results['folds'][0]['num_examples'] == 60  # actor 4's 60 speech clips, each once
  assert results['folds'][0]['num_train_examples'] == 180
  assert json.loads((tmp_path / 'config.json').read_text())['data']['input_shape'] == [32, 64]
  # An unknown config key is refused by the launcher, naming it.
  bad = subprocess.run(cmd[:3] + ['--workdir=' + str(tmp_path / 'x'), '--config.nope=1'],
                       capture_output=True, text=True, timeout=300, env=env)
  assert bad.returncode != 0 and 'nope' in bad.stderr


def test_cnnx_config_is_the_predecessor_protocol():
  """configs/cnnx.py as train.py reads it: the predecessor's CNN-X recipe, nothing added."""
  c = _load_config('cnnx', None)
  folds = config_lib.get_folds(c)
  assert [f.test for _, f in folds] == [tuple(t) for t in splits.PREDECESSOR_TEST_FOLDS]
  assert all(len(f.train) == 18 and not set(f.train) & set(f.test) for _, f in folds)
  assert (c.model.name, c.model.num_classes, c.data.name, c.data.frontend) == (
      'cnnx', 8, 'ravdess/speech', 'predecessor48k')
  assert config_lib.tfds_name(c.data) == 'ravdess/speech_predecessor48k'
  assert (tuple(c.data.input_shape), c.data.crop_mode) == ((128, 256), 'resize')
  assert not c.data.specaugment.enabled and c.data.mixup_alpha == 0
  assert (c.batch_size, c.num_epochs, c.seed) == (32, 60, 41)
  assert (c.optimizer.name, c.optimizer.learning_rate, c.optimizer.weight_decay) == (
      'adam_l2', 1e-4, 1e-5)
  assert c.optimizer.grad_clip_norm == 0 and c.optimizer.label_smoothing == 0
  lr = steps.create_learning_rate_fn(c, steps_per_epoch=34)
  assert float(lr(0)) == float(lr(2039)) == pytest.approx(1e-4)
  # 18 actors x 60 clips = 1080 per fold: 34 steps, the last with 24 real clips (no drop).
  assert input_pipeline.steps_per_epoch(1080, c.batch_size) == 34
  assert c.parallel in config_lib.PARALLEL_MODES


def test_expect_pretrained_warns_loudly(caplog):
  config = _load_config('vgg19_attn')
  assert config.init.expect_pretrained and not config.init.pretrained
  config.model.name = 'tiny'
  with pytest.warns(UserWarning, match='TRAINED FROM RANDOM INITIALISATION'):
    model_init.initial_variables(config, TinyNet(), jax.random.PRNGKey(0))
  assert '!!!!!' in caplog.text


# ----------------------------------------------------------------------------- runner


def _cli_config(args):
  """tiny_config from `--key=value` runner arguments (shared with test_parallel)."""
  overrides = {}
  for a in args:
    key, value = a[2:].split('=', 1)
    if key == 'num_epochs':
      overrides['num_epochs'] = int(value)
    elif key == 'every':
      overrides['checkpoint.every_epochs'] = int(value)
    elif key == 'parallel':
      overrides['parallel'] = value
    elif key == 'batch_size':
      overrides['batch_size'] = overrides['eval_batch_size'] = int(value)
    elif key == 'dropout':
      overrides['model.kwargs'] = {'dropout': float(value)}
  return tiny_config(**overrides)


def _main(argv):
  """Subprocess entry: `train WORKDIR [--key=value ...]`."""
  import logging  # pylint: disable=g-import-not-at-top
  logging.basicConfig(level=logging.INFO, stream=sys.stdout, format='%(message)s')
  logging.getLogger('absl').setLevel(logging.WARNING)
  command, workdir, *args = argv
  assert command == 'train'
  slow_from = None
  offset = -40.0
  rest = []
  for a in args:
    if a.startswith('--slow_from_epoch='):
      slow_from = int(a.split('=')[1])
    elif a.startswith('--offset='):
      offset = float(a.split('=')[1])
    else:
      rest.append(a)
  models.MODELS['tiny'] = TinyNet  # this process only
  if slow_from is not None:
    real = input_pipeline.train_batches

    def slow(*a, epoch, **kw):
      for batch in real(*a, epoch=epoch, **kw):
        if epoch >= slow_from:
          print('SLOW BATCH', flush=True)
          time.sleep(0.5)
        yield batch

    input_pipeline.train_batches = slow
  # `--parallel=pmap,jit` runs each mode in turn, into WORKDIR/<mode>.
  modes = [a.split('=')[1].split(',') for a in rest if a.startswith('--parallel=')]
  rest = [a for a in rest if not a.startswith('--parallel=')]
  for mode in (modes[0] if modes else [None]):
    args = rest + ([f'--parallel={mode}'] if mode else [])
    out = os.path.join(workdir, mode) if mode else workdir
    summary = train.train_and_evaluate(_cli_config(args), out,
                                       examples=synthetic_examples(offset=offset))
    print(f'SUMMARY {mode} ' + json.dumps(summary['mean']), flush=True)
  print(f'DEVICES {jax.device_count()}', flush=True)


if __name__ == '__main__':
  _main(sys.argv[1:])
