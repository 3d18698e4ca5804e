"""Re-evaluating training checkpoints or imported weights: `run_evaluation` (launch/evaluate.py).

A training run's fold checkpoints are evaluated on their fold's held-out actors (or an
explicit actor set); imported weights on a fold's held-out actors or any actor set. Every
selected clip is evaluated exactly once (`inference.Predictor.evaluate`), and the reports
of `ser_jax.reports.write_fold_report` are written per evaluated checkpoint, plus a
cross-validation summary when several folds were evaluated:

  default output: <workdir>/evaluate/fold_<i>_step_<n>[_actors_...]   (a workdir)
                  ./evaluate_<weights name>/...                      (weights)

Speaker independence: a training checkpoint records the actors it trained on; evaluating
it on any of them is refused unless `allow_training_speakers` (launch/evaluate.py
--allow_training_speakers), and then every report of the run says so (its title, hence
the markdown heading and the plot titles, a line in the markdown, and
`includes_training_speakers` in the JSON). Imported weights carry no such record.

Cross-corpus (`data='ser_tess'`, any dataset other than `config.data.name`): the model is
evaluated on that dataset, with its own front end, on the emotions both share and on
speakers it never trained on (`ser_jax.cross_corpus`); reports go to
`<default output root>/<data>/...` and name the classes scored.
"""

from __future__ import annotations

import pathlib
from typing import Any, Sequence

import jax

from ser_jax import checkpoints
from ser_jax import config_lib
from ser_jax import cross_corpus
from ser_jax import errors
from ser_jax import inference
from ser_jax import input_pipeline
from ser_jax import labels
from ser_jax import metrics as metrics_lib
from ser_jax import reports
from ser_jax import splits


def parse_actors(value: Sequence[str] | str | None) -> tuple[int | str, ...] | str | None:
  """'4,9' or ['4', '9'] -> (4, 9); 'savee:DC' -> ('savee:DC',); 'all' -> 'all'; None -> None."""
  if value is None:
    return None
  items = value.split(',') if isinstance(value, str) else list(value)
  items = [str(v).strip() for v in items if str(v).strip()]
  if not items:
    return None
  if items == ['all']:
    return 'all'
  if all(':' in v for v in items):  # speaker ids of the corpus builders
    return tuple(sorted(set(items)))
  try:
    return tuple(sorted({int(v) for v in items}))
  except ValueError:
    raise errors.UserError("--actors must be comma-separated RAVDESS actor ids (1..24), "
                           "speaker ids (e.g. savee:DC,savee:JK) or 'all', got "
                           f'{",".join(items)}') from None


def _choose_folds(config, workdir, weights, folds, actors, data) -> list[int | None]:
  """The folds to evaluate; every requested checkpoint and fold must exist."""
  if weights is None and workdir is None:
    raise errors.UserError('pass --workdir (a training run) or --weights (imported weights)')
  if weights is not None and workdir is not None:
    raise errors.UserError('pass either --workdir or --weights, not both')
  other_corpus = data is not None and cross_corpus.foreign(config, data)
  if weights is None:
    have = checkpoints.available_folds(workdir) if pathlib.Path(workdir).is_dir() else []
    if folds is None and not have:
      raise errors.UserError(f'{workdir} holds no fold checkpoints '
                             '(expected fold_<i>/checkpoints/<step>/)')
    folds = have if folds is None else folds
  elif folds is None and actors is None and not other_corpus:
    raise errors.UserError("with --weights, choose the data: --fold=<i> (that fold's "
                           "held-out actors) or --actors=4,9,... or --actors=all")
  folds = list(folds) if folds is not None else [None]
  if actors is not None and len(folds) > 1:
    raise errors.UserError(f'--actors applies to one checkpoint; pass --fold (folds '
                           f'available: {folds})')
  for fold in folds:
    ckpt_dir = None if weights is not None else checkpoints.checkpoint_dir(workdir, fold)
    if ckpt_dir is not None and not ckpt_dir.is_dir():
      raise errors.UserError(f'no checkpoint for fold {fold}: {ckpt_dir} does not exist '
                             f'(folds with checkpoints in {workdir}: '
                             f'{checkpoints.available_folds(workdir) or "none"})')
    if actors is None and not other_corpus and config_lib.actor_folds(config.data):
      config_lib.fold_test_actors(config, fold)  # other datasets' folds: once data is read
  return folds


def _test_actors(config, target, examples, fold, actors, data) -> tuple[int | str, ...]:
  """The speakers to evaluate: `actors`, else the fold's (or, cross-corpus, the default)."""
  if actors is None and data is not None:
    actors = cross_corpus.default_speakers(config, data, fold)
  if actors == 'all':
    if config_lib.actor_folds(target):
      return tuple(sorted({int(a) for a in examples.actors}))
    return tuple(sorted(set(examples.speakers.tolist())))
  if actors is not None:
    bad = [a for a in actors if isinstance(a, int) and not 1 <= a <= splits.NUM_ACTORS]
    if bad:
      raise errors.UserError(f'actors {bad} are outside 1..{splits.NUM_ACTORS}')
    return tuple(actors)
  return config_lib.fold_test_actors(config, fold,
                                     input_pipeline.fold_speakers(config.data, examples))


def _target(config, data):
  """`config.data` for evaluating on dataset `data` (the model's front end and input)."""
  target = config.data.copy_and_resolve_references()
  with target.unlocked():
    target.name = str(data)
    target.extra_train, target.sampling_weights = (), ()
    target.manual_dir = None  # config.data.manual_dir holds the training corpus
  config_lib.tfds_name(target)  # refuses unknown datasets
  return target


def _cross_metrics(predictor, selection, cmap) -> dict[str, Any]:
  """Metrics of `selection` on the shared classes (`ser_jax.cross_corpus`)."""
  keep = cross_corpus.scorable(selection.labels, cmap)
  if keep.size == 0:
    raise errors.UserError('nothing to evaluate: no selected clip has an emotion the model '
                           'knows')
  scored = selection.take(keep.tolist())
  out = predictor.evaluate(scored)
  m = cross_corpus.score(out['logits'], scored.labels, cmap)
  m['eval_loss'] = m.pop('loss')
  m['classes'] = cmap.names
  m['notes'] = cmap.notes(len(selection) - len(scored))
  return m


def _training_actors(meta: dict, config, fold: int | None) -> list[int | str]:
  """The speakers a training checkpoint trained on, from its record (as `speaker_ids`).

  Its meta's `train_actors` (those present in the data); checkpoints from before that
  was recorded: the training actors of its fold under the config it recorded (or, older
  still, the run's config). [] for imported weights (no record).
  """
  if not meta or fold is None:  # imported weights
    return []
  if 'train_actors' in meta:
    return input_pipeline.sort_speakers(meta['train_actors'])
  recorded = config_lib.from_dict(meta['config']) if meta.get('config') else config
  return sorted(config_lib.fold_of(recorded, int(meta.get('fold', fold))).train)


def _check_speakers(trained: list[int | str], selection, source: str, allow: bool
                    ) -> list[int | str]:
  """The evaluated speakers the model trained on; refused unless `allow`."""
  seen = input_pipeline.sort_speakers(set(trained) & set(selection.speaker_ids()))
  if seen and not allow:
    raise errors.UserError(
        f'speakers {seen} are in the training set of {source} (it trained on speakers '
        f'{trained}), so its metrics on them are not speaker-independent. Evaluate on '
        'held-out actors, or pass --allow_training_speakers to evaluate anyway (every '
        'report of the run is then marked "includes training speakers").')
  return seen


def run_evaluation(config=None, *, workdir=None, folds: Sequence[int] | None = None,
                   step: int | None = None, weights=None, actors=None, data=None,
                   output_dir=None, examples=None, write: bool = True,
                   allow_training_speakers: bool = False) -> list[dict[str, Any]]:
  """Evaluates and writes reports; returns one metrics dict per evaluated fold.

  Args:
    config: the model/data config; None: `<workdir>/config.json`.
    workdir: a training run (with `weights` None): evaluate its fold checkpoints.
    folds: fold indices; None: every fold with a checkpoint (workdir), or required with
      weights unless `actors` is given.
    step: checkpoint step (workdir only); None: the latest.
    weights: imported weights (directory or .pth) instead of a workdir.
    actors: explicit held-out actors (tuple of ints, or '4,9'; speaker ids such as
      'savee:DC' for other corpora) or 'all', instead of the fold's.
    data: evaluate on this dataset (e.g. 'ser_tess', 'ravdess/song') instead of
      `config.data.name`: cross-corpus evaluation (see the module docstring).
    output_dir: where reports go (see the module docstring for the default).
    examples: preloaded clips (`input_pipeline.Examples`); None: the TFDS dataset.
    write: write report files (process 0 only).
    allow_training_speakers: evaluate a checkpoint on actors it trained on (refused
      otherwise); the results and reports are then marked.

  Raises:
    UserError: bad selection, missing checkpoint, weights of another model or front end,
      actors the checkpoint trained on (unless allowed).
  """
  actors = parse_actors(actors) if isinstance(actors, (str, list)) else actors
  if workdir is not None and weights is None:
    config = inference.resolve_config(config, workdir)
  elif config is None:
    raise errors.UserError('pass --workdir (a training run) or --config with --weights')
  config_lib.validate(config, num_devices=jax.device_count(), training=False)
  # Cheap checks first (folds, weights, checkpoints), then the data, which may have to be
  # built.
  data = None if data is None or str(data) == str(config.data.name) else str(data)
  target = config.data if data is None else _target(config, data)
  folds = _choose_folds(config, workdir, weights, folds, actors, data)
  loaded = (inference.load_variables(config, weights=weights) if weights is not None
            else None)
  dataset_name = config_lib.tfds_name(target)
  if examples is None:
    examples = input_pipeline.load_all(target)
  else:
    dataset_name += ' (preloaded)'
  cmap = None if data is None else cross_corpus.class_map(int(config.model.num_classes),
                                                          examples.labels)
  names = labels.class_names(config.model.num_classes) if cmap is None else cmap.names
  examples = input_pipeline.prepare_images(examples, config.data)

  results, predictor = [], None
  for fold in folds:
    this = loaded or inference.load_variables(config, workdir=workdir, fold=fold, step=step)
    predictor = (inference.Predictor(config, this.variables) if predictor is None
                 else predictor.with_variables(this.variables))
    test = _test_actors(config, target, examples, fold, actors, data)
    selection = input_pipeline.select_speakers(examples, test, dataset_name=dataset_name)
    seen = _check_speakers(_training_actors(this.meta, config, fold), selection,
                           this.source, allow_training_speakers)
    if cmap is None:
      out = predictor.evaluate(selection)
      m = metrics_lib.classification_metrics(out['labels'], out['predictions'],
                                             int(config.model.num_classes))
      m['eval_loss'] = out['loss']
    else:
      m = _cross_metrics(predictor, selection, cmap)
      m['notes'].insert(0, f'Cross-corpus: a model trained on {config.data.name} evaluated '
                        f'on {dataset_name}.')
    title = _title(config, fold, this.step) + (f' ({reports.TRAINING_SPEAKERS})'
                                               if seen else '')
    m.update({'fold': fold, 'test_actors': selection.speaker_ids(), 'checkpoint': this.source,
              'title': title, 'includes_training_speakers': seen})
    results.append(m)
    if write and jax.process_index() == 0:
      fold_out = _fold_output_dir(output_dir, workdir, weights, fold, this.step, actors, data)
      reports.write_fold_report(fold_out, m, this.meta.get('history') or [], names)
      m['report_dir'] = str(fold_out)
  if write and len(results) > 1 and jax.process_index() == 0:
    root = _fold_output_dir(output_dir, workdir, weights, None, None, None, data).parent
    reports.write_cv_report(root, results, metrics_lib.summarize_folds(results), config,
                            names, notes=results[0].get('notes', ()))
  return results


def _title(config, fold, step) -> str:
  return (reports.display_name(config.model.name)
          + (f' fold {fold}' if fold is not None else '')
          + (f' step {step}' if step is not None else ''))


def _fold_output_dir(output_dir, workdir, weights, fold, step, actors, data=None
                     ) -> pathlib.Path:
  parts = []
  if fold is not None:
    parts.append(f'fold_{fold}')
  if step is not None:
    parts.append(f'step_{step}')
  if actors == 'all':
    parts.append('actors_all')
  elif actors is not None:
    parts.append('actors_' + '-'.join(str(a) for a in actors))
  name = '_'.join(parts) or 'evaluation'
  if output_dir:
    root = pathlib.Path(output_dir)
  elif workdir is not None:
    root = pathlib.Path(workdir) / 'evaluate'
  else:
    root = pathlib.Path(f'evaluate_{pathlib.Path(weights).name}')
  if data is not None:
    root = root / str(data).replace('/', '_')
  return root / name


def format_results(results: Sequence[dict], config) -> str:
  """The predecessor's table (one row per evaluated fold) and each per-class report."""
  parts = [reports.results_table([(m['title'], m) for m in results]), '']
  for m in results:
    names = m.get('classes') or labels.class_names(config.model.num_classes)
    parts += [f"## {m['title']}: speakers {', '.join(str(a) for a in m['test_actors'])}, "
              f"{m['num_examples']} clips, loss {m['eval_loss']:.4f}", '']
    if m.get('notes'):
      parts += [*m['notes'], '']
    parts += [reports.per_class_markdown(m, names), '']
    if m.get('report_dir'):
      parts += [f"Report written to {m['report_dir']}", '']
  return '\n'.join(parts)
