"""Reports of a fold and of a cross-validation run: JSON, markdown tables, PNG plots.

Files of one fold (`write_fold_report(fold_dir, ...)`):
  report.json            metrics, per-class report with class names, training history
  report.md              per-class precision/recall/F1/support table, macro averages, confusion
  confusion_matrix.png   counts and row-normalised (recall per true class) side by side
  curves.png             train/eval loss and accuracy per epoch (when there is a history)

Files of a run (`write_cv_report(workdir, ...)`):
  results.json           model, config, per-fold metrics and the mean/std summary
  results.md             the predecessor's results table (one model row, percentages with 2
                         decimals), a per-fold table and mean +- std
  confusion_matrix.png   the confusion matrix summed over all folds

Every file is written to a temporary name in the same folder and renamed into place, so a
killed run leaves either the previous file or the new one, never half of one. Plots use
matplotlib's Agg canvas directly (no pyplot, no global backend switch), so this module works
headless and does not disturb a notebook's backend.
"""

from collections.abc import Mapping, Sequence
import functools
import io
import json
import math
import os
import pathlib
import tempfile
from typing import Any

import numpy as np

from ser_jax import config_lib
from ser_jax import labels
from ser_jax import metrics as metrics_lib


# Row names the predecessor's results table used, by registry model name.
DISPLAY_NAMES = {
    'cnn14': 'CNN-14',
    'cnn14_attn': 'CNN-14 + Attn',
    'cnn14_panns': 'CNN-14 (PANNs)',
    'cnnx': 'CNN-X',
    'cnn_lstm': '1DCNNLSTM',
    'vgg19_attn': 'VGG19 + Attn',
    'alexnet_attn': 'AlexNet + Attn',
    'resnet18': 'ResNet',
}

TABLE_HEADER = '| | Accuracy | Precision | Recall | F1-Score |'
# The mark of metrics measured on actors the model trained on (ser_jax.evaluation): in
# titles (markdown headings, plot titles) and as a line of the markdown.
TRAINING_SPEAKERS = 'includes training speakers'
_MACRO_NOTE = ('Precision, Recall and F1-Score are macro averages over the {} classes present '
               'in the evaluated clips (ser_jax.metrics); Recall is the unweighted average '
               'recall (UAR).')
_COLUMN_NAMES = {'accuracy': 'Accuracy', 'precision': 'Precision', 'recall': 'Recall',
                 'f1': 'F1-Score'}


# ----------------------------------------------------------------------------- file writing


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> pathlib.Path:
  """Writes `data` to `path` via a temporary file in the same folder and a rename."""
  path = pathlib.Path(path)
  path.parent.mkdir(parents=True, exist_ok=True)
  fd, tmp = tempfile.mkstemp(prefix=f'.{path.name}.', suffix='.tmp', dir=path.parent)
  try:
    with os.fdopen(fd, 'wb') as f:
      f.write(data)
      f.flush()
      os.fsync(f.fileno())
    os.replace(tmp, path)
  except BaseException:
    try:
      os.unlink(tmp)
    except FileNotFoundError:
      pass
    raise
  return path


def atomic_write_text(path: str | os.PathLike, text: str) -> pathlib.Path:
  return atomic_write_bytes(path, text.encode('utf-8'))


def _json_default(obj: Any) -> Any:
  if isinstance(obj, np.generic):
    return obj.item()
  if isinstance(obj, np.ndarray):
    return obj.tolist()
  if isinstance(obj, (set, frozenset)):
    return sorted(obj)
  if isinstance(obj, os.PathLike):
    return os.fspath(obj)
  to_dict = getattr(obj, 'to_dict', None)  # ml_collections.ConfigDict
  if callable(to_dict):
    return to_dict()
  return str(obj)


def _nan_to_none(obj: Any) -> Any:
  """Replaces non-finite floats by None: JSON has no NaN (json.dumps would write `NaN`)."""
  if isinstance(obj, float) and not math.isfinite(obj):
    return None
  if isinstance(obj, Mapping):
    return {k: _nan_to_none(v) for k, v in obj.items()}
  if isinstance(obj, (list, tuple)):
    return [_nan_to_none(v) for v in obj]
  return obj


def atomic_write_json(path: str | os.PathLike, obj: Any) -> pathlib.Path:
  text = json.dumps(_nan_to_none(_to_plain(obj)), indent=2, default=_json_default,
                    allow_nan=False)
  return atomic_write_text(path, text + '\n')


def _to_plain(obj: Any) -> Any:
  """ConfigDicts and numpy values to JSON-friendly Python values, recursively."""
  if not isinstance(obj, (dict, list, tuple)) and callable(getattr(obj, 'to_dict', None)):
    obj = obj.to_dict()
  if isinstance(obj, Mapping):
    return {str(k): _to_plain(v) for k, v in obj.items()}
  if isinstance(obj, (list, tuple)):
    return [_to_plain(v) for v in obj]
  if isinstance(obj, np.generic):
    return obj.item()
  if isinstance(obj, np.ndarray):
    return obj.tolist()
  return obj


def _save_figure(fig, path: str | os.PathLike) -> pathlib.Path:
  from matplotlib.backends import backend_agg  # pylint: disable=g-import-not-at-top
  backend_agg.FigureCanvasAgg(fig)
  buf = io.BytesIO()
  fig.savefig(buf, format='png', dpi=100, bbox_inches='tight')
  return atomic_write_bytes(path, buf.getvalue())


# ----------------------------------------------------------------------------- helpers


def class_names_for(num_classes: int, class_names: Sequence[str] | None = None) -> list[str]:
  """`class_names` checked against `num_classes`; RAVDESS emotions or `class_i` by default."""
  if class_names is None:
    return labels.class_names(num_classes)
  names = [str(n) for n in class_names]
  if len(names) != num_classes:
    raise ValueError(f'{len(names)} class names for {num_classes} classes: {names}')
  return names


def display_name(model_name: str) -> str:
  """The predecessor's table row name of a registry model name (the name itself if new)."""
  return DISPLAY_NAMES.get(model_name, model_name)


def percent(value: float | None) -> str:
  """0.5493 -> '54.93%' (the predecessor's table format)."""
  if value is None or not math.isfinite(value):
    return 'n/a'
  return f'{100.0 * value:.2f}%'


# ----------------------------------------------------------------------------- plots


def plot_confusion(confusion: Any, class_names: Sequence[str], path: str | os.PathLike,
                   title: str = '') -> pathlib.Path:
  """Writes a PNG with the counts and the row-normalised matrix side by side."""
  from matplotlib import figure  # pylint: disable=g-import-not-at-top
  cm = np.asarray(confusion, np.int64)
  n = cm.shape[0]
  row_sums = cm.sum(axis=1, keepdims=True)
  # Row-normalised: the share of each true class predicted as each class (rows sum to 1,
  # an empty row stays 0).
  norm = np.divide(cm, row_sums, out=np.zeros(cm.shape, np.float64), where=row_sums != 0)
  size = max(4.0, 0.55 * n + 2.0)
  fig = figure.Figure(figsize=(2 * size + 2, size), layout='constrained')
  axes = fig.subplots(1, 2)
  panels = ((cm, 'Counts', lambda v: f'{int(v)}', max(int(cm.max(initial=0)), 1)),
            (norm, 'Row-normalised (recall)', lambda v: f'{v:.2f}', 1.0))
  for ax, (values, name, fmt, vmax) in zip(axes, panels):
    image = ax.imshow(values, cmap='Blues', vmin=0, vmax=vmax)
    fig.colorbar(image, ax=ax, shrink=0.8)
    ax.set_xticks(range(n))
    ax.set_yticks(range(n))
    ax.set_xticklabels(class_names, rotation=45, ha='right')
    ax.set_yticklabels(class_names)
    ax.set_xlabel('Predicted')
    ax.set_ylabel('True')
    ax.set_title(name)
    for i in range(n):
      for j in range(n):
        ax.text(j, i, fmt(values[i, j]), ha='center', va='center', fontsize=8,
                color='white' if values[i, j] > 0.6 * vmax else 'black')
  if title:
    fig.suptitle(title)
  return _save_figure(fig, path)


def _series(history: Sequence[Mapping[str, Any]], key: str) -> tuple[list, list]:
  xs, ys = [], []
  for i, h in enumerate(history):
    v = h.get(key)
    if v is None:
      continue
    v = float(v)
    if math.isfinite(v):
      xs.append(h.get('epoch', i + 1))
      ys.append(v)
  return xs, ys


def plot_curves(history: Sequence[Mapping[str, Any]], path: str | os.PathLike,
                title: str = '') -> pathlib.Path:
  """Writes a PNG of loss and accuracy per epoch (train and eval; missing values skipped)."""
  from matplotlib import figure  # pylint: disable=g-import-not-at-top
  fig = figure.Figure(figsize=(11, 4), layout='constrained')
  axes = fig.subplots(1, 2)
  for ax, what in zip(axes, ('loss', 'accuracy')):
    for split, style in (('train', '-'), ('eval', '--')):
      xs, ys = _series(history, f'{split}_{what}')
      if xs:
        ax.plot(xs, ys, style, marker='o' if len(xs) < 30 else None, markersize=3,
                label=split)
    ax.set_xlabel('epoch')
    ax.set_ylabel(what)
    ax.set_title(what.capitalize())
    ax.grid(alpha=0.3)
    if ax.get_legend_handles_labels()[0]:
      ax.legend()
  if title:
    fig.suptitle(title)
  return _save_figure(fig, path)


# ----------------------------------------------------------------------------- markdown


def per_class_markdown(metrics: Mapping[str, Any], class_names: Sequence[str]) -> str:
  """A classification report table: one row per class, then macro average and accuracy."""
  lines = ['| Class | Precision | Recall | F1-Score | Support |',
           '| --- | --- | --- | --- | --- |']
  for name, pc in zip(class_names, metrics['per_class']):
    lines.append(f"| {name} | {percent(pc['precision'])} | {percent(pc['recall'])} | "
                 f"{percent(pc['f1'])} | {pc['support']} |")
  total = sum(pc['support'] for pc in metrics['per_class'])
  lines.append(f"| **macro avg** | {percent(metrics['precision'])} | "
               f"{percent(metrics['recall'])} | {percent(metrics['f1'])} | {total} |")
  lines.append(f"| **accuracy** | | | {percent(metrics['accuracy'])} | {total} |")
  return '\n'.join(lines)


def confusion_markdown(confusion: Any, class_names: Sequence[str]) -> str:
  """The confusion matrix as a markdown table (rows = true class, columns = predicted)."""
  cm = np.asarray(confusion, np.int64)
  lines = ['| true \\ predicted | ' + ' | '.join(class_names) + ' |',
           '| --- |' + ' --- |' * len(class_names)]
  for name, row in zip(class_names, cm):
    lines.append(f'| {name} | ' + ' | '.join(str(int(v)) for v in row) + ' |')
  return '\n'.join(lines)


def results_table(rows: Sequence[tuple[str, Mapping[str, float]]]) -> str:
  """The predecessor's table: `| | Accuracy | Precision | Recall | F1-Score |`, one row each."""
  lines = [TABLE_HEADER, '| --- | --- | --- | --- | --- |']
  for name, values in rows:
    lines.append(f'| {name} | ' + ' | '.join(percent(values.get(k))
                                              for k in metrics_lib.SCALAR_METRICS) + ' |')
  return '\n'.join(lines)


def protocol_line(config: Any, seeds: Sequence[int] | None = None) -> str:
  """One line naming what produced the numbers (data, input, folds, optimiser, epochs).

  `seeds`: the seeds of an aggregate over runs (then `config` is one run's, whose own seed
  would misname the others).
  """
  g = functools.partial(config_lib.get_field, config)
  seed_text = (f"seeds {', '.join(str(s) for s in seeds)}" if seeds is not None
               else f"seed {g('seed', '?')}")
  shape = g('data.input_shape')
  shape = ' x '.join(str(s) for s in shape) if shape is not None else '?'
  pretrained = g('init.pretrained')
  custom = g('folds.test_actors')
  folds = (f"held-out actors {', '.join(str(a) for a in custom)}" if custom
           else f"folds `{g('folds.scheme', '?')}`")
  if g('folds.validation_actors'):
    folds += (f" (VALIDATION: {g('folds.validation_actors')} of each fold's training actors "
              f"held out, validation_seed {g('folds.validation_seed', 0)}; test actors unused)")
  data = f"`{g('data.name', '?')}`" + (f" (front end `{g('data.frontend')}`)"
                                       if g('data.frontend') else '')
  if g('data.extra_train'):
    weights = g('data.sampling_weights')
    data += (' trained with ' + ', '.join(f'`{n}`' for n in g('data.extra_train'))
             + (f" (sampling weights {', '.join(f'{w:g}' for w in weights)})" if weights
                else ''))
  teachers = g('distill.teachers')
  distilled = (f", distilled from {len(teachers)} teacher run(s) (weight "
               f"{g('distill.weight', '?')}, temperature {g('distill.temperature', 1.0)}: "
               f"{', '.join(f'`{t}`' for t in teachers)})"
               if teachers else '')
  return (f"Protocol: data {data}, input {shape} ({g('data.crop_mode', '?')}), "
          f"{folds}, {g('num_epochs', '?')} epochs, batch "
          f"{g('batch_size', '?')}, `{g('optimizer.name', '?')}` lr "
          f"{g('optimizer.learning_rate', '?')} wd {g('optimizer.weight_decay', '?')}, "
          f"{seed_text}" + (f', initialised from `{pretrained}`' if pretrained else '')
          + distilled
          + '.' + (f" Selection rule: {g('selection_rule')}" if g('selection_rule') else ''))


# ----------------------------------------------------------------------------- reports


def write_fold_report(fold_dir: str | os.PathLike, metrics: Mapping[str, Any],
                      history: Sequence[Mapping[str, Any]] | None,
                      class_names: Sequence[str] | None) -> dict[str, pathlib.Path]:
  """Writes the report of one fold (or one evaluation) into `fold_dir`.

  Args:
    fold_dir: folder to write into (created if missing).
    metrics: a `ser_jax.metrics.classification_metrics` dict (extra keys such as
      `test_actors` are kept in report.json).
    history: per-epoch dicts `{'epoch', 'train_loss', 'train_accuracy', 'eval_loss',
      'eval_accuracy'}` (missing or None values are skipped); empty or None: no curves.
    class_names: names of the classes in label order; None: RAVDESS emotions.

  Returns:
    The written paths by kind: `json`, `markdown`, `confusion_png`, and `curves_png` when
    there is a history.
  """
  fold_dir = pathlib.Path(fold_dir)
  num_classes = len(metrics['confusion'])
  names = class_names_for(num_classes, class_names)
  history = list(history or [])
  per_class = {name: dict(pc) for name, pc in zip(names, metrics['per_class'])}
  report = dict(metrics)
  report['class_names'] = names
  report['per_class_by_name'] = per_class
  report['history'] = history
  paths = {'json': atomic_write_json(fold_dir / 'report.json', report)}

  title = str(metrics.get('title', fold_dir.name))
  md = [f'# Report: {title}', ''] + _training_speakers_lines(_training_speakers([metrics]))
  md += [*metrics.get('notes', ()), ''] if metrics.get('notes') else []
  if metrics.get('test_actors') is not None:
    md += [f"Test actors: {', '.join(str(a) for a in metrics['test_actors'])}", '']
  examples = metrics.get('num_examples', sum(p['support'] for p in metrics['per_class']))
  md += [f'Examples: {examples}',
         '', results_table([(title, metrics)]), '', _MACRO_NOTE.format(
             sum(p['support'] > 0 for p in metrics['per_class'])), '',
         '## Per class', '', per_class_markdown(metrics, names), '',
         '## Confusion matrix (rows: true class, columns: predicted)', '',
         confusion_markdown(metrics['confusion'], names), '']
  if history:
    last = history[-1]
    md += ['## Last epoch', '']
    md += [f'- {k}: {v}' for k, v in last.items()]
    md.append('')
  paths['markdown'] = atomic_write_text(fold_dir / 'report.md', '\n'.join(md))
  paths['confusion_png'] = plot_confusion(metrics['confusion'], names,
                                          fold_dir / 'confusion_matrix.png', title=title)
  if history:
    paths['curves_png'] = plot_curves(history, fold_dir / 'curves.png', title=title)
  return paths


def write_cv_report(workdir: str | os.PathLike, fold_results: Sequence[Mapping[str, Any]],
                    summary: Mapping[str, Any], config: Any,
                    class_names: Sequence[str] | None = None,
                    notes: Sequence[str] = ()) -> dict[str, pathlib.Path]:
  """Writes results.json, results.md and the aggregated confusion-matrix PNG into `workdir`.

  Args:
    workdir: the run's folder.
    fold_results: one dict per fold, each a `classification_metrics` dict, optionally with
      `fold` (index in the fold scheme) and `test_actors` (held-out actors).
    summary: `ser_jax.metrics.summarize_folds(fold_results)`.
    config: the run's config (ConfigDict or mapping); `model.name` names the table row.
    class_names: class names in label order; None: RAVDESS emotions.
    notes: lines stated under the title (e.g. a cross-corpus evaluation's classes).

  Returns:
    The written paths by kind: `json`, `markdown`, `confusion_png`.
  """
  workdir = pathlib.Path(workdir)
  if not fold_results:
    raise ValueError('write_cv_report needs at least one fold result')
  model_name = str(config_lib.get_field(config, 'model.name', 'model'))
  row_name = display_name(model_name)
  confusion = summary.get('confusion')
  if confusion is None:
    confusion = np.sum([np.asarray(f['confusion'], np.int64) for f in fold_results],
                       axis=0).tolist()
  names = class_names_for(len(confusion), class_names)

  seen = _training_speakers(fold_results)
  results = {
      'model': model_name,
      'display_name': row_name,
      'class_names': names,
      'summary': dict(summary),
      'folds': [dict(f) for f in fold_results],
      'config': config,
  }
  if seen:
    results['includes_training_speakers'] = seen
  paths = {'json': atomic_write_json(workdir / 'results.json', results)}

  mean, std = summary['mean'], summary['std']
  n = summary.get('num_folds', len(fold_results))
  mark = f' ({TRAINING_SPEAKERS})' if seen else ''
  md = [f'# Results: {row_name}{mark}', ''] + _training_speakers_lines(seen) + [
        f'Mean over {n} fold{"s" if n != 1 else ""} of '
        f'{"" if seen else "speaker-independent "}cross-validation '
        '(accuracy and macro-averaged precision, recall, F1 on the held-out actors).', '',
        *(list(notes) + [''] if notes else []),
        results_table([(row_name, mean)]), '',
        protocol_line(config), '',
        '## Per fold', '',
        '| Fold | Test actors | Examples | Accuracy | Precision | Recall | F1-Score |',
        '| --- | --- | --- | --- | --- | --- | --- |']
  for i, f in enumerate(fold_results):
    actors = f.get('test_actors')
    actors = ', '.join(str(a) for a in actors) if actors is not None else ''
    examples = f.get('num_examples', sum(p['support'] for p in f.get('per_class', [])))
    md.append(f"| {f.get('fold', i)} | {actors} | {examples} | " +
              ' | '.join(percent(f[k]) for k in metrics_lib.SCALAR_METRICS) + ' |')
  md.append('| **mean +- std** | | | ' + ' | '.join(
      f'{percent(mean[k])} +- {100.0 * std[k]:.2f}' for k in metrics_lib.SCALAR_METRICS)
      + ' |')
  md += ['', '(std: sample standard deviation over folds, in percentage points.)', '',
         '## Confusion matrix over all folds (rows: true class, columns: predicted)', '',
         confusion_markdown(confusion, names), '']
  paths['markdown'] = atomic_write_text(workdir / 'results.md', '\n'.join(md))
  paths['confusion_png'] = plot_confusion(confusion, names, workdir / 'confusion_matrix.png',
                                          title=f'{row_name}: all folds{mark}')
  return paths


def _training_speakers(results: Sequence[Mapping[str, Any]]) -> list[int]:
  """Actors the model trained on among those evaluated (`includes_training_speakers`)."""
  return sorted({int(a) for m in results for a in m.get('includes_training_speakers') or ()})


def _training_speakers_lines(seen: Sequence[int]) -> list[str]:
  """The markdown warning when metrics include actors the model trained on, else []."""
  if not seen:
    return []
  actors = (f"actors {', '.join(map(str, seen))} were" if len(seen) > 1
            else f'actor {seen[0]} was')
  return [f"**{TRAINING_SPEAKERS.capitalize()}:** {actors} in the model's training set, so "
          'these metrics are not speaker-independent.', '']
