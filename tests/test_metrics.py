"""Tests of ser_jax.metrics: hand-computed cases, a plain numpy reimplementation, sklearn."""
import json

import numpy as np
import pytest

from ser_jax import metrics


def _reference(labels, predictions, num_classes):
  """A deliberately plain loop version of the documented definitions."""
  labels, predictions = list(labels), list(predictions)
  cm = [[0] * num_classes for _ in range(num_classes)]
  for t, p in zip(labels, predictions):
    cm[t][p] += 1
  per_class, present = [], []
  for c in range(num_classes):
    tp = cm[c][c]
    npred = sum(cm[r][c] for r in range(num_classes))
    ntrue = sum(cm[c])
    prec = tp / npred if npred else 0.0
    rec = tp / ntrue if ntrue else 0.0
    f1 = 2 * prec * rec / (prec + rec) if prec + rec else 0.0
    per_class.append((prec, rec, f1, ntrue))
    if ntrue:
      present.append(c)
  macro = [sum(per_class[c][i] for c in present) / len(present) for i in range(3)]
  acc = sum(cm[c][c] for c in range(num_classes)) / len(labels)
  return cm, per_class, acc, macro


def test_hand_computed_case():
  # Class 0: 2 true, both predicted 0 -> P = 2/3 (one class-1 example also predicted 0), R = 1.
  # Class 1: 2 true, one right -> P = 1/2 (one class-2 example predicted 1), R = 1/2.
  # Class 2: 2 true, one right -> P = 1, R = 1/2.
  labels = [0, 0, 1, 1, 2, 2]
  preds = [0, 0, 0, 1, 1, 2]
  m = metrics.classification_metrics(labels, preds, 3)
  assert m['confusion'] == [[2, 0, 0], [1, 1, 0], [0, 1, 1]]
  assert m['accuracy'] == pytest.approx(4 / 6)
  p = [2 / 3, 1 / 2, 1.0]
  r = [1.0, 1 / 2, 1 / 2]
  f = [2 * a * b / (a + b) for a, b in zip(p, r)]  # 0.8, 0.5, 2/3
  assert f == pytest.approx([0.8, 0.5, 2 / 3])
  assert m['precision'] == pytest.approx(np.mean(p))
  assert m['recall'] == pytest.approx(np.mean(r))
  assert m['f1'] == pytest.approx(np.mean(f))
  assert [pc['support'] for pc in m['per_class']] == [2, 2, 2]
  assert [pc['precision'] for pc in m['per_class']] == pytest.approx(p)
  assert m['num_examples'] == 6


def test_confusion_orientation_rows_are_true_class():
  # Every true 0 is predicted as 2: the count sits in row 0, column 2.
  m = metrics.classification_metrics([0, 0, 0, 1], [2, 2, 2, 1], 3)
  assert m['confusion'][0] == [0, 0, 3]
  assert m['confusion'][2] == [0, 0, 0]
  assert m['per_class'][0]['support'] == 3
  assert m['per_class'][2]['support'] == 0


def test_zero_division_gives_zero():
  # Class 1 is never predicted (precision 0/0 -> 0); class 2 never occurs as a label but is
  # predicted (recall 0/0 -> 0, precision 0/1 = 0); class 3 occurs nowhere. Classes 2 and 3
  # have no true examples: they are left out of the macro average.
  m = metrics.classification_metrics([0, 1, 1], [0, 2, 0], 4)
  pc = m['per_class']
  assert pc[1] == {'precision': 0.0, 'recall': 0.0, 'f1': 0.0, 'support': 2}
  assert pc[2] == {'precision': 0.0, 'recall': 0.0, 'f1': 0.0, 'support': 0}
  assert pc[3] == {'precision': 0.0, 'recall': 0.0, 'f1': 0.0, 'support': 0}
  # Class 0: P = 1/2, R = 1, F1 = 2/3; macro over the present classes 0 and 1.
  assert m['precision'] == pytest.approx(0.5 / 2)
  assert m['recall'] == pytest.approx(1.0 / 2)
  assert m['f1'] == pytest.approx((2 / 3) / 2)
  assert m['accuracy'] == pytest.approx(1 / 3)
  assert all(np.isfinite([m['precision'], m['recall'], m['f1']]))


def test_empty_input_is_all_zero():
  m = metrics.classification_metrics([], [], 3)
  assert (m['accuracy'], m['precision'], m['recall'], m['f1']) == (0.0, 0.0, 0.0, 0.0)
  assert m['confusion'] == [[0] * 3] * 3


def test_mask_drops_padding():
  labels = np.array([[0, 1], [2, 0]])  # any shape is flattened
  preds = np.array([[0, 1], [0, 1]])
  mask = np.array([[True, True], [False, False]])
  m = metrics.classification_metrics(labels, preds, 3, mask=mask)
  assert m['num_examples'] == 2
  assert m['accuracy'] == 1.0


@pytest.mark.parametrize('seed', range(5))
def test_matches_plain_reimplementation(seed):
  rng = np.random.default_rng(seed)
  num_classes = int(rng.integers(2, 9))
  n = int(rng.integers(1, 60))
  labels = rng.integers(0, num_classes, n)
  preds = np.where(rng.random(n) < 0.5, labels, rng.integers(0, num_classes, n))
  m = metrics.classification_metrics(labels, preds, num_classes)
  cm, per_class, acc, macro = _reference(labels, preds, num_classes)
  assert m['confusion'] == cm
  assert m['accuracy'] == pytest.approx(acc)
  assert [m['precision'], m['recall'], m['f1']] == pytest.approx(macro)
  got = [(pc['precision'], pc['recall'], pc['f1'], pc['support']) for pc in m['per_class']]
  assert np.allclose(got, per_class)


def test_matches_sklearn():
  skm = pytest.importorskip('sklearn.metrics')
  rng = np.random.default_rng(0)
  for _ in range(20):
    k = int(rng.integers(2, 9))
    n = int(rng.integers(1, 40))
    y, p = rng.integers(0, k, n), rng.integers(0, k, n)
    m = metrics.classification_metrics(y, p, k)
    ref = skm.precision_recall_fscore_support(y, p, labels=np.unique(y), average='macro',
                                              zero_division=0)
    assert [m['precision'], m['recall'], m['f1']] == pytest.approx(ref[:3])
    assert m['confusion'] == skm.confusion_matrix(y, p, labels=range(k)).tolist()


def test_bad_inputs_raise():
  with pytest.raises(ValueError, match='lie in'):
    metrics.classification_metrics([0, 3], [0, 1], 3)
  with pytest.raises(ValueError, match='differ in size'):
    metrics.classification_metrics([0, 1], [0], 3)
  with pytest.raises(ValueError, match='integer'):
    metrics.classification_metrics([0.5], [0], 3)


def test_result_is_json_serialisable():
  m = metrics.classification_metrics(np.array([0, 1]), np.array([1, 1]), 2)
  assert json.loads(json.dumps(m)) == m


def test_summarize_folds():
  folds = [metrics.classification_metrics([0, 1, 1, 0], p, 2)
           for p in ([0, 1, 1, 0], [0, 1, 0, 0], [1, 0, 0, 1])]
  s = metrics.summarize_folds(folds)
  acc = [1.0, 0.75, 0.0]
  assert s['num_folds'] == 3
  assert s['per_fold']['accuracy'] == acc
  assert s['mean']['accuracy'] == pytest.approx(np.mean(acc))
  # Sample standard deviation (ddof=1), written out.
  mu = sum(acc) / 3
  assert s['std']['accuracy'] == pytest.approx((sum((a - mu) ** 2 for a in acc) / 2) ** 0.5)
  assert s['mean']['f1'] == pytest.approx(np.mean([f['f1'] for f in folds]))
  assert s['confusion'] == (np.sum([f['confusion'] for f in folds], axis=0)).tolist()
  assert s['num_examples'] == 12
  assert set(s['mean']) == {'accuracy', 'precision', 'recall', 'f1'}


def test_summarize_single_fold_and_errors():
  s = metrics.summarize_folds([metrics.classification_metrics([0, 1], [0, 0], 2)])
  assert s['std'] == {'accuracy': 0.0, 'precision': 0.0, 'recall': 0.0, 'f1': 0.0}
  with pytest.raises(ValueError, match='at least one'):
    metrics.summarize_folds([])
  with pytest.raises(ValueError, match='lack'):
    metrics.summarize_folds([{'accuracy': 1.0}])


def test_macro_averages_skip_classes_without_true_examples():
  # RAVDESS song has no disgust (6) or surprised (7). A speech model that predicts them for
  # some song clips: those clips are recall misses of their true classes, but the two
  # absent classes add no zeros to the averages.
  labels = [0, 1, 2, 3, 4, 5] * 2
  preds = [0, 1, 2, 3, 4, 5, 0, 1, 2, 3, 6, 7]
  m = metrics.classification_metrics(labels, preds, 8)
  recalls = [pc['recall'] for pc in m['per_class']]
  assert recalls == [1, 1, 1, 1, 0.5, 0.5, 0, 0]
  assert m['recall'] == pytest.approx(5 / 6)  # UAR over the 6 present classes, not 5/8
  assert m['precision'] == 1.0  # every prediction of a present class is right; not 6/8
  assert m['confusion'][4][6] == m['confusion'][5][7] == 1  # the misses stay visible
  # With every class present (every fold of the predecessor's protocol) nothing changes:
  full = metrics.classification_metrics(list(range(8)) * 2, list(range(8)) + [1] * 8, 8)
  per_class = full['per_class']
  assert full['recall'] == pytest.approx(np.mean([pc['recall'] for pc in per_class]))
  assert full['f1'] == pytest.approx(np.mean([pc['f1'] for pc in per_class]))
