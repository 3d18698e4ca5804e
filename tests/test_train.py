"""Tests of ser_jax/train.py: optimiser, errors, smoke/overfit run, non-finite stop, resume.

Training runs use a tiny BatchNorm CNN on synthetic clips (16 mel x 16 frames) so each
compile and step is cheap; the resume test kills a real training subprocess. This module
also serves as the subprocess runner (`python tests/test_train.py ...`) for
tests/test_parallel.py, so both use the same model and data.
"""
import json
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
import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from ser_jax import input_pipeline  # pylint: disable=g-import-not-at-top,wrong-import-position
from ser_jax import train  # pylint: disable=g-import-not-at-top,wrong-import-position


class TinyNet(nn.Module):
  """conv -> BatchNorm -> ReLU -> mean over time -> (dropout) -> dense. BN axis settable (pmap)."""
  num_classes: int = 8
  dtype: object = jnp.float32
  bn_axis_name: str | None = None
  dropout: float = 0.0

  @nn.compact
  def __call__(self, x, train=False, mask=None):  # pylint: disable=redefined-outer-name
    x = nn.Conv(4, (3, 3), strides=2, name='conv')(x)  # (B, mel/2, time/2, 4)
    x = nn.BatchNorm(use_running_average=not train, axis_name=self.bn_axis_name,
                     name='bn')(x)
    x = nn.relu(x).mean(axis=2)  # (B, mel/2, 4): keeps where in mel the energy is
    x = x.reshape(x.shape[0], -1)  # (B, mel/2 * 4)
    x = nn.Dropout(self.dropout, deterministic=not train)(x)
    return nn.Dense(self.num_classes, name='head')(x)


def tiny_get_model(name, **kwargs):
  """train.get_model replacement: 'tiny' is TinyNet, anything else the real registry."""
  if name == 'tiny':
    return TinyNet(num_classes=kwargs['num_classes'], **{
        k: v for k, v in kwargs.items() if k in ('dropout',)})
  from ser_jax import models  # pylint: disable=g-import-not-at-top
  return models.get_model(name, **kwargs)


def synthetic_examples(clips_per_actor=5, actors=(1, 2, 3, 4), num_classes=4, seed=0):
  """Clips whose class is visible as a bright mel band; odd, varying lengths."""
  rng = np.random.RandomState(seed)
  items = []
  for actor in actors:
    for j in range(clips_per_actor):
      label = (j + actor) % num_classes
      frames = 17 + 3 * j  # 17.. frames, resized to 16
      image = rng.randn(16, frames).astype(np.float32) - 40.0
      image[4 * label:4 * label + 4] += 6.0
      items.append({'log_mel': image, 'emotion': label, 'actor': actor,
                    'file_name': f'{actor:02d}-{j}.wav'})
  return input_pipeline.read_source(items, dataset_name='synthetic')


def tiny_config(**overrides):
  sys.path.insert(0, str(ROOT / 'configs'))
  import default  # pylint: disable=g-import-not-at-top
  c = default.get_config('tiny')
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
  monkeypatch.setattr(train, 'get_model', tiny_get_model)


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
  tx = train.create_optimizer(config, train.create_learning_rate_fn(config, 10))
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


def test_schedule_and_clipping():
  config = tiny_config(**{'schedule.name': 'warmup_cosine', 'schedule.warmup_epochs': 1.0,
                          'num_epochs': 4, 'optimizer.learning_rate': 1.0,
                          'optimizer.grad_clip_norm': 1.0, 'optimizer.weight_decay': 0.0})
  lr = train.create_learning_rate_fn(config, steps_per_epoch=10)
  assert float(lr(0)) == 0.0
  assert float(lr(10)) == pytest.approx(1.0)
  assert float(lr(25)) == pytest.approx(0.5 * (1 + np.cos(np.pi * 15 / 30)), rel=1e-5)
  assert float(lr(40)) == pytest.approx(0.0, abs=1e-6)
  tx = train.create_optimizer(config, lr)
  state = tx.init(jnp.zeros(3))
  # Clipping happens before Adam: a huge gradient and a unit one give the same first step.
  big, _ = tx.update(jnp.array([300.0, 400.0, 0.0]), state, jnp.zeros(3))
  unit, _ = tx.update(jnp.array([0.6, 0.8, 0.0]), state, jnp.zeros(3))
  np.testing.assert_allclose(np.asarray(big), np.asarray(unit), rtol=1e-6)
  with pytest.raises(ValueError, match='schedule.name'):
    train.create_learning_rate_fn(tiny_config(**{'schedule.name': 'step'}), 10)
  with pytest.raises(ValueError, match='optimizer.name'):
    train.create_optimizer(tiny_config(**{'optimizer.name': 'sgd'}), lr)


# ----------------------------------------------------------------------------- errors


def test_fold_errors():
  with pytest.raises(ValueError, match=r'outside 1\.\.24'):
    train.get_folds(tiny_config(**{'folds.test_actors': (3, 25)}))
  with pytest.raises(ValueError, match='folds.scheme'):
    train.get_folds(tiny_config(**{'folds.test_actors': (), 'folds.scheme': 'random'}))
  with pytest.raises(ValueError, match='folds.which'):
    train.get_folds(tiny_config(**{'folds.test_actors': (), 'folds.which': (4,)}))
  folds = train.get_folds(tiny_config(**{'folds.test_actors': (), 'folds.which': ()}))
  assert [f.test for _, f in folds] == [(4, 9, 10, 14, 15, 17), (5, 13, 16, 18, 20, 23),
                                        (1, 2, 6, 8, 19, 21), (3, 7, 11, 12, 22, 24)]
  assert all(len(f.train) == 18 for _, f in folds)


def test_unknown_model_and_parallel_errors(tmp_path):
  with pytest.raises(ValueError, match=r"Unknown model 'nope'.*cnnx"):
    train.train_and_evaluate(tiny_config(**{'model.name': 'nope'}), tmp_path,
                             examples=synthetic_examples())
  assert not (tmp_path / 'model.json').exists()  # refused before writing anything


def test_empty_selection_error(tmp_path, tiny_models):
  config = tiny_config(**{'folds.test_actors': (7, 8)})
  with pytest.raises(ValueError, match=r'no clips of actors \[7, 8\] in ravdess\/speech_seed48k \(preloaded\).*'
                     r'holds actors \[1, 2, 3, 4\]'):
    train.train_and_evaluate(config, tmp_path, examples=synthetic_examples())


def test_workdir_of_another_model_is_refused(tmp_path, tiny_models):
  (tmp_path / 'fold_0' / 'checkpoints' / '10').mkdir(parents=True)
  (tmp_path / 'model.json').write_text(json.dumps(
      {'name': 'cnn14', 'num_classes': 8, 'kwargs': {}, 'input_shape': [128, 256]}))
  with pytest.raises(ValueError, match='different model.*cnn14'):
    train.train_and_evaluate(tiny_config(), tmp_path, examples=synthetic_examples())


# ----------------------------------------------------------------------------- training


@pytest.mark.slow
def test_smoke_overfit_and_reports(tmp_path, tiny_models):
  """Overfits 15 clips: the loss falls; every held-out clip is evaluated once; reports."""
  config = tiny_config(**{'num_epochs': 8, 'folds.test_actors': (4,),
                          'checkpoint.every_epochs': 3, 'checkpoint.keep': 2})
  examples = synthetic_examples(clips_per_actor=5)  # 15 train clips: 4 steps, last partial
  summary = train.train_and_evaluate(config, tmp_path, examples=examples)
  fold = summary['folds'][0]
  assert fold['num_examples'] == 5 and fold['num_train_examples'] == 15
  assert sum(map(sum, fold['confusion'])) == 5
  report = json.loads((tmp_path / 'fold_0' / 'report.json').read_text())
  history = report['history']
  assert [h['epoch'] for h in history] == list(range(1, 9))
  assert history[-1]['train_loss'] < 0.5 * history[0]['train_loss']
  assert history[-1]['train_accuracy'] == 1.0
  # Checkpoints: epochs 3, 6 and the final 8 were saved; the last 2 are kept (4 steps/epoch).
  steps = sorted(int(p.name) for p in (tmp_path / 'fold_0' / 'checkpoints').iterdir()
                 if p.name.isdigit())
  assert steps == [24, 32]
  for name in ('results.json', 'results.md', 'model.json', 'config.json',
               'fold_0/confusion_matrix.png', 'fold_0/curves.png'):
    assert (tmp_path / name).exists(), name
  assert list((tmp_path / 'tensorboard' / 'fold_0').glob('events.out.tfevents.*'))
  results = json.loads((tmp_path / 'results.json').read_text())
  assert results['summary']['mean']['accuracy'] == pytest.approx(fold['accuracy'])


def test_non_finite_loss_stops_and_keeps_last_good_checkpoint(tmp_path, tiny_models,
                                                             monkeypatch):
  real = input_pipeline.train_batches

  def poisoned(*args, epoch, **kwargs):
    for batch in real(*args, epoch=epoch, **kwargs):
      if epoch == 1:
        batch['image'][0] = np.nan
      yield batch

  monkeypatch.setattr(input_pipeline, 'train_batches', poisoned)
  config = tiny_config(**{'num_epochs': 3, 'checkpoint.every_epochs': 1,
                          'log_every_steps': 10})
  with pytest.raises(train.NonFiniteLossError,
                     match=r'fold 0, epoch 2, step 5\b.*not saved.*step 4'):
    train.train_and_evaluate(config, tmp_path, examples=synthetic_examples())
  steps = [p.name for p in (tmp_path / 'fold_0' / 'checkpoints').iterdir()
           if p.name.isdigit()]
  assert steps == ['4']


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
def test_resume_after_kill_gives_identical_metrics(tmp_path, tiny_models):
  config_args = ['--num_epochs=5', '--every=1']
  # The killed run: slowed down from epoch 3 on so the kill lands mid-training.
  killed = tmp_path / 'killed'
  proc = run_subprocess(['train', str(killed), *config_args, '--slow_from_epoch=2'])
  try:
    _wait_for(proc, 'checkpoint saved at step 8 (epoch 2)', timeout=240)
    _wait_for(proc, 'SLOW BATCH', timeout=60)  # inside epoch 3
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
  finally:
    if proc.poll() is None:
      proc.kill()
  assert proc.returncode == -signal.SIGKILL
  assert not (killed / 'results.json').exists()
  # The same command again resumes and finishes.
  proc = run_subprocess(['train', str(killed), *config_args])
  out, _ = proc.communicate(timeout=300)
  assert proc.returncode == 0, out[-3000:]
  assert 'resuming from checkpoint step 8 (epoch 2 of 5)' in out
  # An uninterrupted run (in this process) ends with the same numbers.
  whole = tmp_path / 'whole'
  train.train_and_evaluate(_cli_config(config_args), whole, examples=synthetic_examples())
  assert_outcomes_close(fold_outcome(whole), fold_outcome(killed), tol=0.0)


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
  rest = []
  for a in args:
    if a.startswith('--slow_from_epoch='):
      slow_from = int(a.split('=')[1])
    else:
      rest.append(a)
  train.get_model = tiny_get_model
  if slow_from is not None:
    real = input_pipeline.train_batches

    def slow(*a, epoch, **kw):
      for batch in real(*a, epoch=epoch, **kw):
        if epoch >= slow_from:
          print('SLOW BATCH', flush=True)
          time.sleep(1.0)
        yield batch

    input_pipeline.train_batches = slow
  summary = train.train_and_evaluate(_cli_config(rest), workdir,
                                     examples=synthetic_examples())
  print('SUMMARY ' + json.dumps(summary['mean']), flush=True)


if __name__ == '__main__':
  _main(sys.argv[1:])
