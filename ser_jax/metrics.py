"""Classification metrics of one fold and their cross-validation summary.

Everything here is plain numpy on host values (labels and predictions gathered after the
eval step), so the numbers do not depend on the device count.

Definitions (they match scikit-learn's `precision_recall_fscore_support` with
`average='macro', zero_division=0` and `labels=` the classes present in the true labels):
- per class c: precision = TP / (TP + FP), recall = TP / (TP + FN),
  F1 = 2 P R / (P + R); a ratio whose denominator is 0 is 0 (no predictions of c gives
  precision 0, no true examples of c gives recall 0, P + R = 0 gives F1 0).
- macro precision/recall/F1: the unweighted mean of the per-class values over the classes
  PRESENT in the evaluated set, i.e. with at least one true example (support > 0). A class
  without true examples has no recall to measure; averaging its 0 in would only measure
  which classes the set lacks (a speech model evaluated on RAVDESS song, which has no
  disgust or surprised, would lose a quarter of its macro recall for predicting them).
  Its wrong predictions still count: they are misses of the present classes' recall and
  appear in the confusion matrix and the per-class report. Every fold of the predecessor's
  speech protocol holds every class, so there this is the mean over all classes. Macro
  recall is the unweighted average recall (UAR) of the emotion literature. Macro F1 is the
  mean of per-class F1, not the harmonic mean of macro P and macro R.
- confusion[i][j]: how many examples of true class i were predicted as class j
  (rows = true class, columns = predicted class).
"""

from collections.abc import Sequence
from typing import Any

import numpy as np

# The scalar metrics of a fold, in the order of the predecessor's results table.
SCALAR_METRICS = ('accuracy', 'precision', 'recall', 'f1')


def _as_int_vector(x: Any, name: str) -> np.ndarray:
  a = np.asarray(x)
  if a.ndim != 1:
    a = a.reshape(-1)
  if a.size and not np.issubdtype(a.dtype, np.integer):
    if not np.all(np.equal(np.mod(a, 1), 0)):
      raise ValueError(f'{name} must hold integer class ids, got dtype {a.dtype}')
  return a.astype(np.int64)


def confusion_matrix(labels: Any, predictions: Any, num_classes: int,
                     mask: Any = None) -> np.ndarray:
  """Counts `(num_classes, num_classes)` int64, rows = true class, columns = predicted.

  Args:
    labels: true class ids, any shape (flattened).
    predictions: predicted class ids, same number of elements as `labels`.
    num_classes: number of classes; ids must lie in [0, num_classes).
    mask: optional bool/0-1 array like `labels`; False entries (batch padding) are ignored.
  """
  labels = _as_int_vector(labels, 'labels')
  predictions = _as_int_vector(predictions, 'predictions')
  if labels.shape != predictions.shape:
    raise ValueError(f'labels and predictions differ in size: {labels.shape[0]} vs '
                     f'{predictions.shape[0]}')
  if mask is not None:
    mask = np.asarray(mask).reshape(-1).astype(bool)
    if mask.shape != labels.shape:
      raise ValueError(f'mask has {mask.shape[0]} entries, labels {labels.shape[0]}')
    labels, predictions = labels[mask], predictions[mask]
  for name, a in (('labels', labels), ('predictions', predictions)):
    if a.size and (a.min() < 0 or a.max() >= num_classes):
      raise ValueError(f'{name} must lie in [0, {num_classes}), got range '
                       f'[{a.min()}, {a.max()}]')
  counts = np.zeros((num_classes, num_classes), np.int64)
  np.add.at(counts, (labels, predictions), 1)
  return counts


def _safe_divide(num: np.ndarray, den: np.ndarray) -> np.ndarray:
  """num / den elementwise with 0 where den == 0 (sklearn's zero_division=0)."""
  num = np.asarray(num, np.float64)
  den = np.asarray(den, np.float64)
  out = np.zeros(np.broadcast(num, den).shape, np.float64)
  np.divide(num, den, out=out, where=den != 0)
  return out


def metrics_from_confusion(confusion: Any) -> dict:
  """The metrics dict of `classification_metrics` from a confusion matrix."""
  cm = np.asarray(confusion, np.int64)
  if cm.ndim != 2 or cm.shape[0] != cm.shape[1]:
    raise ValueError(f'confusion must be square, got shape {cm.shape}')
  tp = np.diag(cm)
  support = cm.sum(axis=1)  # true examples per class
  predicted = cm.sum(axis=0)  # predictions per class
  precision = _safe_divide(tp, predicted)
  recall = _safe_divide(tp, support)
  f1 = _safe_divide(2 * precision * recall, precision + recall)
  present = support > 0  # classes with true examples (see the module docstring)
  total = int(cm.sum())

  def macro(v):
    return float(v[present].mean()) if present.any() else 0.0

  return {
      'accuracy': float(tp.sum() / total) if total else 0.0,
      'precision': macro(precision),
      'recall': macro(recall),
      'f1': macro(f1),
      'num_examples': total,
      'confusion': cm.tolist(),
      'per_class': [
          {'precision': float(precision[c]), 'recall': float(recall[c]),
           'f1': float(f1[c]), 'support': int(support[c])}
          for c in range(cm.shape[0])],
  }


def classification_metrics(labels: Any, predictions: Any, num_classes: int,
                           mask: Any = None) -> dict:
  """Accuracy, macro precision/recall/F1, confusion matrix and per-class report.

  Args:
    labels: true class ids (any shape, flattened).
    predictions: predicted class ids (e.g. argmax of logits), same size.
    num_classes: number of classes.
    mask: optional; False entries (padding) are left out.

  Returns:
    A JSON-serialisable dict: `accuracy`, `precision`, `recall`, `f1` (floats in [0, 1]),
    `num_examples` (int), `confusion` (list of lists, rows = true class), `per_class`
    (a list indexed by class of `{'precision', 'recall', 'f1', 'support'}`).
  """
  return metrics_from_confusion(
      confusion_matrix(labels, predictions, num_classes, mask=mask))


def summarize_folds(fold_metrics: Sequence[dict]) -> dict:
  """Mean and standard deviation of the scalar metrics over folds.

  The standard deviation is the sample one (ddof=1), the usual spread of cross-validation
  folds; it is 0.0 for a single fold.

  Args:
    fold_metrics: one `classification_metrics` dict per fold (extra keys are ignored).

  Returns:
    `{'num_folds': n, 'mean': {metric: float}, 'std': {metric: float},
      'per_fold': {metric: [float per fold]}, 'confusion': summed counts (if every fold has
      one), 'num_examples': total}` for the metrics accuracy, precision, recall, f1.
  """
  if not fold_metrics:
    raise ValueError('summarize_folds needs at least one fold')
  for i, m in enumerate(fold_metrics):
    missing = [k for k in SCALAR_METRICS if k not in m]
    if missing:
      raise ValueError(f'fold {i} metrics lack {missing}')
  per_fold = {k: [float(m[k]) for m in fold_metrics] for k in SCALAR_METRICS}
  n = len(fold_metrics)
  summary = {
      'num_folds': n,
      'mean': {k: float(np.mean(v)) for k, v in per_fold.items()},
      'std': {k: float(np.std(v, ddof=1)) if n > 1 else 0.0 for k, v in per_fold.items()},
      'per_fold': per_fold,
  }
  if all('confusion' in m for m in fold_metrics):
    shapes = {np.shape(m['confusion']) for m in fold_metrics}
    if len(shapes) != 1:
      raise ValueError(f'folds have confusion matrices of different shapes: {shapes}')
    summary['confusion'] = np.sum(
        [np.asarray(m['confusion'], np.int64) for m in fold_metrics], axis=0).tolist()
  if all('num_examples' in m for m in fold_metrics):
    summary['num_examples'] = int(sum(m['num_examples'] for m in fold_metrics))
  return summary
