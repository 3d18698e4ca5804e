"""One experiment over several seeds, and the aggregate of the per-seed runs.

`train_over_seeds(config, workdir, seeds)` trains `config` once per seed into
`workdir/seed_<s>/` (a complete cross-validation run each, resumable like any other), then
`aggregate(workdir)` writes the summary into `workdir/`:
  results.json          per seed: the fold means and per-fold metrics; over seeds: mean and
                        sample std of the fold means, per-fold mean and std over seeds, the
                        confusion matrix summed over seeds and folds
  results.md            the table row (mean over seeds of the fold means, +- std over seeds),
                        the protocol, a fold x seed accuracy table, the summed confusion
  confusion_matrix.png  the summed confusion matrix

Why the std over seeds of the fold means: it is the run-to-run spread of the number a
table reports (the fold std mixes the speakers' difficulty into it); the per-fold table
shows both. `aggregate` also works on per-seed workdirs trained separately (e.g. in
parallel): it only reads their results.json, and refuses runs whose configs differ in
anything but the seed or whose folds differ.
"""

from __future__ import annotations

import json
import pathlib
import re
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from ser_jax import config_lib
from ser_jax import errors
from ser_jax import metrics as metrics_lib
from ser_jax import reports

_SEED_DIR = re.compile(r'^seed_(-?\d+)$')


def seed_dir(workdir: str | pathlib.Path, seed: int) -> pathlib.Path:
  return pathlib.Path(workdir) / f'seed_{int(seed)}'


def parse_seeds(values: Sequence[str | int]) -> list[int]:
  """['41', '42'] -> [41, 42]; empty, repeated or non-integer seeds are an error."""
  try:
    seeds = [int(v) for v in values]
  except ValueError as e:
    raise errors.UserError(f'--seeds must be integers, e.g. --seeds=41,42,43; got '
                           f'{list(values)}') from e
  if not seeds:
    raise errors.UserError('--seeds needs at least one seed')
  if len(set(seeds)) != len(seeds):
    raise errors.UserError(f'--seeds lists a seed twice: {seeds}')
  return seeds


def train_over_seeds(config, workdir: str | pathlib.Path, seeds: Sequence[int], *,
                     examples=None) -> dict[str, Any]:
  """Trains `config` once per seed (`workdir/seed_<s>/`), then aggregates; returns it.

  Args:
    config: an experiment config; only `config.seed` changes between the runs.
    workdir: the experiment's folder.
    seeds: the seeds, run in this order; finished ones are re-evaluated, not retrained.
    examples: optional preloaded clips (see `train.train_and_evaluate`).
  """
  import jax  # pylint: disable=g-import-not-at-top
  from ser_jax import train  # pylint: disable=g-import-not-at-top
  seeds = parse_seeds(seeds)
  for seed in seeds:
    run_config = config.copy_and_resolve_references()
    run_config.seed = int(seed)
    train.train_and_evaluate(run_config, seed_dir(workdir, seed), examples=examples)
  if jax.process_index() != 0:  # reports are written once, by process 0
    return summarize_seeds(_load_runs(pathlib.Path(workdir), seeds))
  return aggregate(workdir, seeds)


def _load_runs(workdir: pathlib.Path, seeds: Sequence[int] | None
               ) -> list[tuple[int, dict[str, Any]]]:
  if seeds is None:
    seeds = sorted(int(m.group(1)) for p in workdir.iterdir()
                   if (m := _SEED_DIR.match(p.name)) and p.is_dir()) if workdir.is_dir() else []
  runs = []
  for seed in seeds:
    path = seed_dir(workdir, seed) / 'results.json'
    if not path.is_file():
      raise errors.UserError(f'{path} is missing: seed {seed} has not finished (rerun the '
                             'same command to resume it)')
    runs.append((int(seed), json.loads(path.read_text())))
  if not runs:
    raise errors.UserError(f'{workdir} holds no seed_<s>/results.json to aggregate')
  return runs


def _check_same_experiment(runs: Sequence[tuple[int, Mapping[str, Any]]]) -> None:
  """Raises UserError unless the runs differ only in their seed and share their folds."""
  first_seed, first = runs[0]
  base = config_lib._flatten(first['config'])  # pylint: disable=protected-access
  base.pop('seed', None)
  folds = [f.get('test_actors') for f in first['folds']]
  for seed, run in runs[1:]:
    other = config_lib._flatten(run['config'])  # pylint: disable=protected-access
    other.pop('seed', None)
    differ = sorted(k for k in set(base) | set(other) if base.get(k) != other.get(k))
    if differ:
      raise errors.UserError(f'seed {seed} and seed {first_seed} are different experiments: '
                             f'config fields {differ[:10]} differ')
    other_folds = [f.get('test_actors') for f in run['folds']]
    if other_folds != folds:
      raise errors.UserError(f'seed {seed} evaluated folds {other_folds}, seed {first_seed} '
                             f'{folds}; aggregate needs the same folds in every seed')


def summarize_seeds(runs: Sequence[tuple[int, Mapping[str, Any]]]) -> dict[str, Any]:
  """Mean/std over seeds of the fold means, per-fold spread, summed confusion.

  Args:
    runs: (seed, results.json dict) pairs of the same experiment.

  Returns:
    `{'seeds', 'num_seeds', 'num_folds', 'mean', 'std' (sample, over seeds; 0 for one),
      'per_seed': {metric: [fold mean per seed]}, 'per_fold': [{'fold', 'test_actors',
      'accuracy': [per seed], 'mean': {metric}, 'std': {metric}}], 'fold_std_mean':
      {metric: mean over seeds of the std over folds}, 'confusion', 'num_examples'}`.
  """
  keys = metrics_lib.SCALAR_METRICS
  seeds = [s for s, _ in runs]
  n = len(runs)
  per_seed = {k: [float(np.mean([f[k] for f in r['folds']])) for _, r in runs]
              for k in keys}
  std = {k: float(np.std(v, ddof=1)) if n > 1 else 0.0 for k, v in per_seed.items()}
  per_fold = []
  for i, fold in enumerate(runs[0][1]['folds']):
    values = {k: [float(r['folds'][i][k]) for _, r in runs] for k in keys}
    per_fold.append({
        'fold': fold.get('fold', i), 'test_actors': fold.get('test_actors'),
        'accuracy': values['accuracy'],
        'mean': {k: float(np.mean(v)) for k, v in values.items()},
        'std': {k: float(np.std(v, ddof=1)) if n > 1 else 0.0 for k, v in values.items()}})
  fold_std = {k: float(np.mean([r['summary']['std'][k] for _, r in runs])) for k in keys}
  confusion = np.sum([np.asarray(f['confusion'], np.int64)
                      for _, r in runs for f in r['folds']], axis=0)
  return {'seeds': seeds, 'num_seeds': n, 'num_folds': len(per_fold),
          'mean': {k: float(np.mean(v)) for k, v in per_seed.items()}, 'std': std,
          'per_seed': per_seed, 'per_fold': per_fold, 'fold_std_mean': fold_std,
          'confusion': confusion.tolist(), 'num_examples': int(confusion.sum())}


def _markdown(summary: Mapping[str, Any], row_name: str, config: Any,
              class_names: Sequence[str]) -> str:
  keys = metrics_lib.SCALAR_METRICS
  mean, std = summary['mean'], summary['std']
  seeds = summary['seeds']
  md = [f'# Results: {row_name}, {len(seeds)} seed{"s" if len(seeds) != 1 else ""}', '',
        f'Mean over seeds {", ".join(str(s) for s in seeds)} of the mean over '
        f'{summary["num_folds"]} folds (final epoch, speaker-independent; accuracy and '
        'macro precision, recall, F1 on the held-out actors); +- is the sample std over '
        'seeds of the fold means.', '',
        reports.TABLE_HEADER, '| --- | --- | --- | --- | --- |',
        f'| {row_name} | ' + ' | '.join(f'{reports.percent(mean[k])} +- {100 * std[k]:.2f}'
                                       for k in keys) + ' |', '',
        reports.protocol_line(config, seeds), '',
        '## Per seed (mean over folds)', '',
        '| Seed | Accuracy | Precision | Recall | F1-Score |', '| --- | --- | --- | --- | --- |']
  for i, seed in enumerate(seeds):
    md.append(f'| {seed} | ' + ' | '.join(reports.percent(summary['per_seed'][k][i])
                                          for k in keys) + ' |')
  md += ['', '## Per fold: accuracy per seed, mean +- std over seeds', '',
         '| Fold | Test actors | ' + ' | '.join(f'seed {s}' for s in seeds)
         + ' | mean +- std |', '| --- | --- |' + ' --- |' * (len(seeds) + 1)]
  for f in summary['per_fold']:
    actors = ', '.join(str(a) for a in f['test_actors'] or [])
    md.append(f"| {f['fold']} | {actors} | " + ' | '.join(
        reports.percent(a) for a in f['accuracy']) + f" | {reports.percent(f['mean']['accuracy'])}"
        f" +- {100 * f['std']['accuracy']:.2f} |")
  md += ['', 'Spread over folds (sample std of the fold accuracies, mean over seeds): '
         f"{100 * summary['fold_std_mean']['accuracy']:.2f} points.", '',
         '## Confusion matrix summed over seeds and folds (rows: true class, columns: '
         'predicted)', '', reports.confusion_markdown(summary['confusion'], class_names), '']
  return '\n'.join(md)


def aggregate(workdir: str | pathlib.Path, seeds: Sequence[int] | None = None
              ) -> dict[str, Any]:
  """Aggregates `workdir/seed_<s>/results.json` into `workdir/results.{json,md}` (+ PNG).

  Args:
    workdir: the folder holding the per-seed runs.
    seeds: which seeds to read; None: every `seed_<s>` folder in `workdir`.

  Returns:
    `summarize_seeds` of the runs.
  """
  workdir = pathlib.Path(workdir)
  runs = _load_runs(workdir, seeds)
  _check_same_experiment(runs)
  summary = summarize_seeds(runs)
  first = runs[0][1]
  config = first['config']
  row_name = first.get('display_name') or reports.display_name(first.get('model', 'model'))
  names = reports.class_names_for(len(summary['confusion']), first.get('class_names'))
  results = {'model': first.get('model'), 'display_name': row_name, 'class_names': names,
             'summary': summary, 'config': config,
             'runs': [{'seed': s, 'summary': r['summary'], 'folds': r['folds']}
                      for s, r in runs]}
  reports.atomic_write_json(workdir / 'results.json', results)
  reports.atomic_write_text(workdir / 'results.md', _markdown(summary, row_name, config, names))
  reports.plot_confusion(summary['confusion'], names, workdir / 'confusion_matrix.png',
                         title=f'{row_name}: {len(runs)} seeds, all folds')
  return summary
