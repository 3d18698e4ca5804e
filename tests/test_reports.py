"""Tests of ser_jax.reports: files written, markdown format, valid PNGs, atomic writes."""
import json
import os
import re

import ml_collections
import numpy as np
import pytest

from ser_jax import labels
from ser_jax import metrics
from ser_jax import reports

PNG_MAGIC = b'\x89PNG\r\n\x1a\n'


def _png_size(path):
  """(width, height) from the IHDR chunk; asserts the file is a PNG."""
  data = path.read_bytes()
  assert data[:8] == PNG_MAGIC, f'{path} is not a PNG'
  assert data[12:16] == b'IHDR'
  return int.from_bytes(data[16:20], 'big'), int.from_bytes(data[20:24], 'big')


def _fold_metrics(seed, n=40, k=8):
  rng = np.random.default_rng(seed)
  y = rng.integers(0, k, n)
  p = np.where(rng.random(n) < 0.6, y, rng.integers(0, k, n))
  return metrics.classification_metrics(y, p, k)


def _history(epochs=3):
  return [{'epoch': e, 'train_loss': 2.0 / e, 'train_accuracy': 0.2 * e,
           'eval_loss': 2.2 / e, 'eval_accuracy': 0.15 * e} for e in range(1, epochs + 1)]


def test_percent_format():
  assert reports.percent(0.5493) == '54.93%'
  assert reports.percent(1.0) == '100.00%'
  assert reports.percent(float('nan')) == 'n/a'


def test_write_fold_report(tmp_path):
  m = _fold_metrics(0)
  m['test_actors'] = [4, 9]
  paths = reports.write_fold_report(tmp_path / 'fold_0', m, _history(), None)
  assert set(paths) == {'json', 'markdown', 'confusion_png', 'curves_png'}
  for p in paths.values():
    assert p.exists() and p.stat().st_size > 0
  w, h = _png_size(paths['confusion_png'])
  assert w > 400 and h > 200
  _png_size(paths['curves_png'])

  report = json.loads(paths['json'].read_text())
  assert report['class_names'] == list(labels.EMOTIONS)
  assert report['accuracy'] == pytest.approx(m['accuracy'])
  assert report['per_class_by_name']['calm'] == m['per_class'][1]
  assert report['history'][-1]['epoch'] == 3
  assert report['test_actors'] == [4, 9]

  md = paths['markdown'].read_text()
  assert '| Class | Precision | Recall | F1-Score | Support |' in md
  row = m['per_class'][2]
  assert (f"| happy | {100 * row['precision']:.2f}% | {100 * row['recall']:.2f}% | "
          f"{100 * row['f1']:.2f}% | {row['support']} |") in md
  assert f"| **accuracy** | | | {100 * m['accuracy']:.2f}% | 40 |" in md
  assert 'Test actors: 4, 9' in md
  # No temporary files left behind.
  assert not [f for f in os.listdir(tmp_path / 'fold_0') if f.endswith('.tmp')]


def test_fold_report_without_history_and_with_gaps(tmp_path):
  m = _fold_metrics(1, k=3)
  paths = reports.write_fold_report(tmp_path / 'a', m, [], ['x', 'y', 'z'])
  assert 'curves_png' not in paths
  assert '| y |' in paths['markdown'].read_text()
  # Eval every other epoch only, and a NaN loss: both are skipped in the curves; JSON has
  # no NaN (it is written as null).
  hist = _history(4)
  hist[0]['eval_loss'] = None
  hist[2]['train_loss'] = float('nan')
  paths = reports.write_fold_report(tmp_path / 'b', m, hist, ['x', 'y', 'z'])
  _png_size(paths['curves_png'])
  report = json.loads(paths['json'].read_text())
  assert report['history'][2]['train_loss'] is None
  with pytest.raises(ValueError, match='2 class names for 3 classes'):
    reports.write_fold_report(tmp_path / 'c', m, [], ['x', 'y'])


def test_write_cv_report(tmp_path):
  folds = []
  for i in range(3):
    m = _fold_metrics(i)
    m.update(fold=i, test_actors=[i + 1, i + 5])
    folds.append(m)
  summary = metrics.summarize_folds(folds)
  config = ml_collections.ConfigDict({'model': {'name': 'cnnx'},
                                      'data': {'input_shape': (128, 256)}})
  paths = reports.write_cv_report(tmp_path, folds, summary, config)
  assert {p.name for p in paths.values()} == {'results.json', 'results.md', 'confusion_matrix.png'}
  _png_size(tmp_path / 'confusion_matrix.png')

  results = json.loads((tmp_path / 'results.json').read_text())
  assert results['model'] == 'cnnx'
  assert results['display_name'] == 'CNN-X'
  assert results['config']['data']['input_shape'] == [128, 256]
  assert results['summary']['mean']['f1'] == pytest.approx(summary['mean']['f1'])
  assert len(results['folds']) == 3
  assert np.sum(results['summary']['confusion']) == 120

  md = (tmp_path / 'results.md').read_text()
  lines = md.splitlines()
  # The predecessor's table: header, separator, then the model row with 2-decimal percents.
  i = lines.index('| | Accuracy | Precision | Recall | F1-Score |')
  mean = summary['mean']
  expected = '| CNN-X | ' + ' | '.join(
      f'{100 * mean[k]:.2f}%' for k in ('accuracy', 'precision', 'recall', 'f1')) + ' |'
  assert lines[i + 2] == expected
  assert re.fullmatch(r'\| CNN-X( \| \d{1,3}\.\d\d%){4} \|', lines[i + 2])
  assert 'Protocol: data `?`, input 128 x 256' in md  # what the config says, '?' if unset
  # Per-fold rows and mean +- std.
  assert f"| 1 | 2, 6 | 40 | {100 * folds[1]['accuracy']:.2f}% |" in md
  std = summary['std']['accuracy']
  assert f"{100 * mean['accuracy']:.2f}% +- {100 * std:.2f}" in md


def test_cv_report_names_unknown_model_and_plain_dict_config(tmp_path):
  folds = [_fold_metrics(0, k=2)]
  reports.write_cv_report(tmp_path, folds, metrics.summarize_folds(folds),
                          {'model': {'name': 'mynet'}})
  assert '| mynet | ' in (tmp_path / 'results.md').read_text()


def test_atomic_write_keeps_old_file_on_failure(tmp_path, monkeypatch):
  target = tmp_path / 'results.json'
  reports.atomic_write_json(target, {'a': 1})

  def boom(*args, **kwargs):
    raise OSError('disk full')

  monkeypatch.setattr(os, 'replace', boom)
  with pytest.raises(OSError, match='disk full'):
    reports.atomic_write_json(target, {'a': 2})
  assert json.loads(target.read_text()) == {'a': 1}
  assert os.listdir(tmp_path) == ['results.json']  # the temporary file was removed
