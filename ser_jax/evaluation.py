"""Re-evaluating training checkpoints or imported weights: `run_evaluation` (launch/evaluate.py).

A training run's fold checkpoints are evaluated on their fold's held-out actors (or an
explicit actor set); imported weights on a fold's held-out actors or any actor set. Every
selected clip is evaluated exactly once (`inference.Predictor.evaluate`), and the reports
of `ser_jax.reports.write_fold_report` are written per evaluated checkpoint, plus a
cross-validation summary when several folds were evaluated:

  default output: <workdir>/evaluate/fold_<i>_step_<n>[_actors_...]   (a workdir)
                  ./evaluate_<weights name>/...                      (weights)
                  <parent>/evaluate_ensemble_<run>+<run>.../...       (an ensemble)

Ensembles: several training runs of one model (e.g. the `seed_<s>` runs of `--seeds`) are
evaluated together by averaging, clip by clip, the softmax probabilities of their fold
checkpoints (`Ensemble`). Every run must be of the same model (name, classes, constructor
arguments) and read its clips the same way (`data.` front end, input shape, crop mode,
normalisation, evaluation frames: one set of batches feeds them all); each fold is
evaluated on the first run's held-out actors, and the speaker check below applies to every
run (one that trained on any of them is refused). The reports name the runs and each run's
own accuracy beside the ensemble's.

Weight averages (`combine='weights'`, launch/evaluate.py --combine=weights): the same runs
become one model instead, their fold checkpoints' variables averaged leaf by leaf (a uniform
"model soup", Wortsman et al. 2022; BatchNorm's running statistics averaged alike). It costs
one model at inference instead of one per run, and it only makes sense for runs fine-tuned
from one pretrained start (a soup of runs trained from different random starts is no
model); the checks are the ensemble's. Default output: `<parent>/evaluate_soup_<runs>/`.

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

import os
import pathlib
from typing import Any, NamedTuple, Sequence

import jax
import numpy as np

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


def _workdirs(workdir) -> list[str]:
  """`workdir` as a list of runs: None -> [], 'a' -> ['a'], 'a,b' or ['a', 'b'] -> both."""
  if workdir is None:
    return []
  items = str(workdir).split(',') if isinstance(workdir, (str, pathlib.Path)) else workdir
  runs = [str(w).strip() for w in items if str(w).strip()]
  if len(set(runs)) != len(runs):
    raise errors.UserError(f'--workdir names a run twice: {",".join(runs)} (an ensemble '
                           'averages distinct runs)')
  return runs


# What a clip looks like to the model in evaluation: one set of batches feeds every run.
_EVAL_INPUT = ('frontend', 'input_shape', 'crop_mode', 'normalize', 'eval_frames')


def _check_members(config, workdirs: Sequence[str]) -> None:
  """Every run of an ensemble is a run of `config`'s model (restored with `config`) that
  reads its clips as `config` prepares them."""
  for w in workdirs[1:]:
    got = checkpoints.read_config(w)
    model = sorted(set(config.model.keys()) | set(got.model.keys()))
    differ = config_lib.differing_fields(
        got, config, [f'model.{k}' for k in model] + [f'data.{k}' for k in _EVAL_INPUT])
    if differ:
      raise errors.UserError(
          f'{w} differs from {workdirs[0]} in {", ".join(f for f, _, _ in differ)}: '
          f'{[g for _, g, _ in differ]} vs {[m for _, _, m in differ]}; an ensemble '
          'averages runs of one model on one input transform')


def _choose_folds(config, workdirs, weights, folds, actors, data) -> list[int | None]:
  """The folds to evaluate; every requested checkpoint and fold must exist."""
  if weights is None and not workdirs:
    raise errors.UserError('pass --workdir (a training run) or --weights (imported weights)')
  if weights is not None and workdirs:
    raise errors.UserError('pass either --workdir or --weights, not both')
  other_corpus = data is not None and cross_corpus.foreign(config, data)
  if weights is None:
    have = {w: checkpoints.available_folds(w) if pathlib.Path(w).is_dir() else []
            for w in workdirs}
    for w in workdirs:
      if not have[w]:
        raise errors.UserError(f'{w} holds no fold checkpoints '
                               '(expected fold_<i>/checkpoints/<step>/)')
    folds = have[workdirs[0]] if folds is None else folds
  elif folds is None and actors is None and not other_corpus:
    raise errors.UserError("with --weights, choose the data: --fold=<i> (that fold's "
                           "held-out actors) or --actors=4,9,... or --actors=all")
  folds = list(folds) if folds is not None else [None]
  if actors is not None and len(folds) > 1:
    raise errors.UserError(f'--actors applies to one checkpoint; pass --fold (folds '
                           f'available: {folds})')
  for fold in folds:
    for w in workdirs:
      ckpt_dir = checkpoints.checkpoint_dir(w, fold)
      if not ckpt_dir.is_dir():
        raise errors.UserError(f'no checkpoint for fold {fold}: {ckpt_dir} does not exist '
                               f'(folds with checkpoints in {w}: {have[w] or "none"})')
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


def _scorer(selection, cmap, num_classes):
  """(the clips to score, output -> metrics with `eval_loss`) for `selection`.

  Own dataset (`cmap` None): every clip, the model's classes. Cross-corpus: the clips whose
  emotion the model knows, scored on the shared classes (`ser_jax.cross_corpus`).
  """
  if cmap is None:
    def own(out):
      m = metrics_lib.classification_metrics(out['labels'], out['predictions'], num_classes)
      m['eval_loss'] = out['loss']
      return m
    return selection, own
  keep = cross_corpus.scorable(selection.labels, cmap)
  if keep.size == 0:
    raise errors.UserError('nothing to evaluate: no selected clip has an emotion the model '
                           'knows')
  scored = selection.take(keep.tolist())

  def cross(out):
    m = cross_corpus.score(out['logits'], scored.labels, cmap)
    m['eval_loss'] = m.pop('loss')
    m['classes'] = cmap.names
    m['notes'] = cmap.notes(len(selection) - len(scored))
    return m
  return scored, cross


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
                   allow_training_speakers: bool = False,
                   combine: str = 'probabilities') -> list[dict[str, Any]]:
  """Evaluates and writes reports; returns one metrics dict per evaluated fold.

  Args:
    config: the model/data config; None: `<workdir>/config.json` (of the first run).
    workdir: a training run (with `weights` None): evaluate its fold checkpoints. Several
      runs ('a,b' or a sequence): evaluate their ensemble (see the module docstring).
    folds: fold indices; None: every fold with a checkpoint (workdir), or required with
      weights unless `actors` is given.
    step: checkpoint step (workdir only, the same for every run); None: the latest.
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
    combine: how several runs are combined: 'probabilities' (an ensemble) or 'weights'
      (one model of their averaged variables); see the module docstring.

  Raises:
    UserError: bad selection, missing checkpoint, weights of another model or front end,
      actors the checkpoint trained on (unless allowed), ensemble runs of other models.
  """
  actors = parse_actors(actors) if isinstance(actors, (str, list)) else actors
  workdirs = _workdirs(workdir)
  if combine not in COMBINE:
    raise errors.UserError(f'--combine={combine!r}: expected one of {", ".join(COMBINE)}')
  if combine == 'weights' and len(workdirs) < 2:
    raise errors.UserError('--combine=weights averages the variables of several runs: pass '
                           f'at least two in --workdir (got {len(workdirs)})')
  if workdirs and weights is None:
    config = inference.resolve_config(config, workdirs[0])
    _check_members(config, workdirs)
  elif config is None:
    raise errors.UserError('pass --workdir (a training run) or --config with --weights')
  config_lib.validate(config, num_devices=jax.device_count(), training=False)
  # Cheap checks first (folds, weights, checkpoints), then the data, which may have to be
  # built.
  data = None if data is None or str(data) == str(config.data.name) else str(data)
  target = config.data if data is None else _target(config, data)
  folds = _choose_folds(config, workdirs, weights, folds, actors, data)
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
  report_root = _report_root(output_dir, workdirs, weights, data, combine)

  results, base = [], None
  for fold in folds:
    members = [loaded] if loaded else [
        inference.load_variables(config, workdir=w, fold=fold, step=step) for w in workdirs]
    predictors = []
    for this in members:  # one compiled model for every checkpoint
      base = (inference.Predictor(config, this.variables) if base is None
              else base.with_variables(this.variables))
      predictors.append(base)
    if len(predictors) == 1:
      predictor = predictors[0]
    elif combine == 'weights':
      predictor = WeightAverage(
          base.with_variables(average_variables([this.variables for this in members])),
          predictors)
    else:
      predictor = Ensemble(predictors)
    test = _test_actors(config, target, examples, fold, actors, data)
    selection = input_pipeline.select_speakers(examples, test, dataset_name=dataset_name)
    seen = input_pipeline.sort_speakers({a for this in members for a in _check_speakers(
        _training_actors(this.meta, config, fold), selection, this.source,
        allow_training_speakers)})
    scored, score = _scorer(selection, cmap, int(config.model.num_classes))
    out = predictor.evaluate(scored)
    m = score(out)
    if cmap is not None:
      m['notes'].insert(0, f'Cross-corpus: a model trained on {config.data.name} evaluated '
                        f'on {dataset_name}.')
    steps_ = {this.step for this in members}
    title = _title(config, fold, steps_.pop() if len(steps_) == 1 else None)
    if len(members) > 1:
      title = f'{COMBINE[combine].title} of {len(members)} runs: {title}'
      m['members'] = [{'checkpoint': this.source, 'accuracy': score(o)['accuracy']}
                      for this, o in zip(members, out['members'])]
      m.setdefault('notes', []).append(_members_note(m['members'], combine))
    title += f' ({reports.TRAINING_SPEAKERS})' if seen else ''
    m.update({'fold': fold, 'test_actors': selection.speaker_ids(),
              'checkpoint': ' + '.join(this.source for this in members),
              'title': title, 'includes_training_speakers': seen})
    results.append(m)
    if write and jax.process_index() == 0:
      fold_out = report_root / _fold_name(fold, members[0].step, actors)
      history = members[0].meta.get('history') if len(members) == 1 else None
      reports.write_fold_report(fold_out, m, history or [], names)
      m['report_dir'] = str(fold_out)
  if write and len(results) > 1 and jax.process_index() == 0:
    notes = list(results[0].get('notes', ()))
    if len(workdirs) > 1:  # the runs, not fold 0's checkpoints
      notes = notes[:-1] + [f'{COMBINE[combine].title} of {len(workdirs)} runs '
                            f'({COMBINE[combine].how}): {", ".join(workdirs)}.']
    reports.write_cv_report(report_root, results, metrics_lib.summarize_folds(results),
                            config, names, notes=notes)
  return results


class Ensemble:
  """Predictors of one model evaluated together: `evaluate` as `inference.Predictor`'s, on
  the softmax probabilities averaged over the members (`average_outputs`)."""

  def __init__(self, predictors: Sequence[inference.Predictor]):
    self.predictors = list(predictors)

  def evaluate(self, examples: input_pipeline.Examples) -> dict[str, Any]:
    return average_outputs([p.evaluate(examples) for p in self.predictors])


class WeightAverage:
  """One predictor of the runs' averaged variables; `evaluate` gives its output, with
  each run's own output under `members` (for the reports' per-run accuracies)."""

  def __init__(self, averaged: inference.Predictor,
               predictors: Sequence[inference.Predictor]):
    self.averaged = averaged
    self.predictors = list(predictors)

  def evaluate(self, examples: input_pipeline.Examples) -> dict[str, Any]:
    out = self.averaged.evaluate(examples)
    out['members'] = [p.evaluate(examples) for p in self.predictors]
    return out


def average_variables(trees: Sequence[Any]) -> Any:
  """The leaf-by-leaf mean of several variable trees of one model (in float64, cast back
  to each leaf's dtype). Leaves that are not floating point must agree and are kept.

  Raises:
    UserError: the trees differ in structure, shapes, or a non-float leaf.
  """
  structure = jax.tree.structure(trees[0])
  if any(jax.tree.structure(t) != structure for t in trees[1:]):
    raise errors.UserError('the runs\' checkpoints hold different variables; a weight '
                           'average needs runs of one model with the same trainable layout')

  def mean(path, *leaves):
    first = np.asarray(leaves[0])
    name = jax.tree_util.keystr(path)
    if any(np.shape(x) != first.shape for x in leaves):
      raise errors.UserError(f'the runs\' {name} differ in shape: '
                             f'{[np.shape(x) for x in leaves]}')
    if not np.issubdtype(first.dtype, np.floating):
      if any(not np.array_equal(x, first) for x in leaves[1:]):
        raise errors.UserError(f'the runs\' {name} ({first.dtype}) differ; only floating '
                               'point variables can be averaged')
      return first
    return np.mean([np.asarray(x, np.float64) for x in leaves], axis=0).astype(first.dtype)

  return jax.tree_util.tree_map_with_path(mean, *trees)


def average_outputs(outputs: Sequence[dict[str, Any]]) -> dict[str, Any]:
  """One `Predictor.evaluate` output from several on the same clips: mean probabilities.

  `logits` are log(mean probabilities) (so a softmax of them gives the mean back),
  `loss` their cross-entropy, `members` the outputs averaged.
  """
  labels_ = outputs[0]['labels']
  if any(not np.array_equal(o['labels'], labels_) for o in outputs):
    raise AssertionError('ensemble members were evaluated on different clips')
  probs = np.mean([o['probabilities'] for o in outputs], axis=0)
  logits = np.log(np.maximum(probs, np.finfo(np.float32).tiny))
  preds = np.argmax(probs, -1)
  return {'labels': labels_, 'predictions': preds, 'probabilities': probs, 'logits': logits,
          'loss': float(-np.mean(logits[np.arange(len(labels_)), labels_])),
          'accuracy': float(np.mean(preds == labels_)), 'num_examples': len(labels_),
          'members': list(outputs)}


class Combination(NamedTuple):
  """One way (--combine) of combining several runs, as the reports name it."""
  title: str  # what the reports call the result
  folder: str  # the default report folder: <parent>/evaluate_<folder>_<runs>
  how: str  # how the runs were combined


COMBINE = {'probabilities': Combination('Ensemble', 'ensemble',
                                        'softmax probabilities averaged clip by clip'),
           'weights': Combination('Weight average', 'soup',
                                  'variables averaged leaf by leaf into one model')}


def _members_note(members: Sequence[dict[str, Any]], combine: str) -> str:
  return (f'{COMBINE[combine].title}: {COMBINE[combine].how} over ' + ', '.join(
      f"{m['checkpoint']} (alone {reports.percent(m['accuracy'])})" for m in members) + '.')


def _title(config, fold, step) -> str:
  return (reports.display_name(config.model.name)
          + (f' fold {fold}' if fold is not None else '')
          + (f' step {step}' if step is not None else ''))


def _report_root(output_dir, workdirs, weights, data, combine) -> pathlib.Path:
  """The folder the fold reports go into (module docstring: default output)."""
  if output_dir:
    root = pathlib.Path(output_dir)
  elif len(workdirs) > 1:
    parent = pathlib.Path(os.path.commonpath([os.path.abspath(w) for w in workdirs]))
    if str(parent) in {os.path.abspath(w) for w in workdirs}:  # one run inside another
      parent = parent.parent
    root = parent / (f'evaluate_{COMBINE[combine].folder}_'
                     + '+'.join(pathlib.Path(w).name for w in workdirs))
  elif workdirs:
    root = pathlib.Path(workdirs[0]) / 'evaluate'
  else:
    root = pathlib.Path(f'evaluate_{pathlib.Path(weights).name}')
  if data is not None:
    root = root / str(data).replace('/', '_')
  return root


def _fold_name(fold, step, actors) -> str:
  parts = []
  if fold is not None:
    parts.append(f'fold_{fold}')
  if step is not None:
    parts.append(f'step_{step}')
  if actors == 'all':
    parts.append('actors_all')
  elif actors is not None:
    parts.append('actors_' + '-'.join(str(a) for a in actors))
  return '_'.join(parts) or 'evaluation'


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
