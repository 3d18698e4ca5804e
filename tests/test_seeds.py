"""Tests of ser_jax/seeds.py: the over-seeds aggregate (exact, on hand-made runs) and a tiny
two-seed training run through train_over_seeds."""
import json
import pathlib

import numpy as np
import pytest

from ser_jax import errors
from ser_jax import seeds


def _fold(fold, actors, accuracy, confusion):
  return {'fold': fold, 'test_actors': actors, 'accuracy': accuracy, 'precision': accuracy,
          'recall': accuracy, 'f1': accuracy, 'confusion': confusion}


def _write_run(workdir, seed, accuracies, config=None, actors=((1,), (2,))):
  folds = [_fold(i, list(a), acc, [[i + seed, 1], [0, 2]])
           for i, (a, acc) in enumerate(zip(actors, accuracies))]
  std = float(np.std(accuracies, ddof=1))
  run = {'model': 'cnnx', 'display_name': 'CNN-X', 'class_names': ['a', 'b'],
         'folds': folds, 'config': dict(config or {'model': {'name': 'cnnx'}}, seed=seed),
         'summary': {'std': {k: std for k in ('accuracy', 'precision', 'recall', 'f1')}}}
  path = pathlib.Path(workdir) / f'seed_{seed}' / 'results.json'
  path.parent.mkdir(parents=True)
  path.write_text(json.dumps(run))


def test_aggregate_is_exact(tmp_path):
  _write_run(tmp_path, 41, [0.5, 0.7])  # fold mean 0.6
  _write_run(tmp_path, 42, [0.6, 1.0])  # fold mean 0.8
  summary = seeds.aggregate(tmp_path)
  assert summary['seeds'] == [41, 42]
  assert summary['mean']['accuracy'] == pytest.approx(0.7)
  assert summary['std']['accuracy'] == pytest.approx(np.std([0.6, 0.8], ddof=1))
  assert summary['per_seed']['accuracy'] == pytest.approx([0.6, 0.8])
  fold1 = summary['per_fold'][1]
  assert fold1['test_actors'] == [2] and fold1['accuracy'] == pytest.approx([0.7, 1.0])
  assert fold1['std']['accuracy'] == pytest.approx(np.std([0.7, 1.0], ddof=1))
  # Mean over seeds of each seed's std over folds.
  assert summary['fold_std_mean']['accuracy'] == pytest.approx(
      (np.std([0.5, 0.7], ddof=1) + np.std([0.6, 1.0], ddof=1)) / 2)
  # Confusions summed over 2 seeds x 2 folds: top-left is sum of (fold + seed).
  assert summary['confusion'] == [[0 + 41 + 1 + 41 + 0 + 42 + 1 + 42, 4], [0, 8]]
  written = json.loads((tmp_path / 'results.json').read_text())
  assert written['summary']['mean'] == summary['mean'] and len(written['runs']) == 2
  md = (tmp_path / 'results.md').read_text()
  assert '| CNN-X | 70.00% +- 14.14 |' in md
  assert '| 1 | 2 | 70.00% | 100.00% | 85.00% +- 21.21 |' in md
  # The protocol line names every seed, not the first run's config.seed alone.
  protocol = next(line for line in md.splitlines() if line.startswith('Protocol:'))
  assert protocol.endswith(', seeds 41, 42.'), protocol
  assert (tmp_path / 'confusion_matrix.png').stat().st_size > 0
  # Only the named seeds are read.
  assert seeds.aggregate(tmp_path, [42])['mean']['accuracy'] == pytest.approx(0.8)


def test_aggregate_refuses_other_experiments_and_missing_runs(tmp_path):
  _write_run(tmp_path, 1, [0.5, 0.7])
  _write_run(tmp_path, 2, [0.5, 0.7], config={'model': {'name': 'cnn_lstm'}})
  with pytest.raises(errors.UserError, match=r"config fields \['model.name'\] differ"):
    seeds.aggregate(tmp_path)
  _write_run(tmp_path, 3, [0.5, 0.7], actors=((1,), (3,)))
  with pytest.raises(errors.UserError, match='same folds'):
    seeds.aggregate(tmp_path, [1, 3])
  with pytest.raises(errors.UserError, match='seed_7.*has not finished'):
    seeds.aggregate(tmp_path, [1, 7])
  with pytest.raises(errors.UserError, match='no seed_'):
    seeds.aggregate(tmp_path / 'empty')


def test_parse_seeds():
  assert seeds.parse_seeds(['41', '42']) == [41, 42]
  for bad, message in ((['4x'], 'integers'), ([], 'at least one'), (['1', '1'], 'twice')):
    with pytest.raises(errors.UserError, match=message):
      seeds.parse_seeds(bad)


def test_train_over_seeds_runs_each_seed_and_aggregates(tmp_path, monkeypatch):
  from ser_jax import models  # pylint: disable=g-import-not-at-top
  import test_train  # pylint: disable=g-import-not-at-top
  monkeypatch.setitem(models.MODELS, 'tiny', test_train.TinyNet)
  config = test_train.tiny_config(num_epochs=1)
  examples = test_train.synthetic_examples()
  summary = seeds.train_over_seeds(config, tmp_path, [3, 5], examples=examples)
  runs = [json.loads((tmp_path / f'seed_{s}' / 'results.json').read_text()) for s in (3, 5)]
  assert [r['config']['seed'] for r in runs] == [3, 5]
  assert summary['per_seed']['accuracy'] == pytest.approx(
      [r['folds'][0]['accuracy'] for r in runs])
  assert summary['num_examples'] == 2 * 5  # actor 4's 5 clips, once per seed
  assert config.seed == 41  # the caller's config is not changed


@pytest.mark.slow
def test_launcher_seeds_flag_on_real_clips(mini_data_dir, tmp_path):
  """launch/train.py --seeds with configs/ser_jax_best.py:tiny on RAVDESS actors 1-4."""
  import os  # pylint: disable=g-import-not-at-top
  import subprocess  # pylint: disable=g-import-not-at-top
  import sys  # pylint: disable=g-import-not-at-top
  import test_train  # pylint: disable=g-import-not-at-top
  cmd = [sys.executable, str(test_train.ROOT / 'launch' / 'train.py'),
         f'--config={test_train.ROOT / "configs" / "ser_jax_best.py"}:tiny',
         f'--workdir={tmp_path}', f'--config.data.data_dir={mini_data_dir}',
         '--config.data.download=False', '--config.folds.test_actors=4',
         '--config.num_epochs=1', '--seeds=3,5']
  env = dict(os.environ, PYTHONPATH=str(test_train.ROOT))
  proc = subprocess.run(cmd, capture_output=True, text=True, timeout=900, env=env)
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert 'ser_cnn: accuracy' in proc.stdout
  runs = [json.loads((tmp_path / f'seed_{s}' / 'results.json').read_text()) for s in (3, 5)]
  assert [r['config']['seed'] for r in runs] == [3, 5]
  assert [r['folds'][0]['num_examples'] for r in runs] == [60, 60]  # actor 4, once each
  written = json.loads((tmp_path / 'results.json').read_text())
  assert written['summary']['seeds'] == [3, 5]
  assert written['summary']['num_examples'] == 120
  md = (tmp_path / 'results.md').read_text()
  assert md.startswith('# Results: ') and ', 2 seeds' in md.splitlines()[0]
  assert 'Selection rule: settings chosen on validation actors only' in md
  bad = subprocess.run(cmd[:-1] + ['--seeds=3,x'], capture_output=True, text=True,
                       timeout=300, env=env)
  assert bad.returncode == 1
  assert bad.stderr.strip().splitlines()[-1].startswith('train.py: error: --seeds must be '
                                                         'integers')
