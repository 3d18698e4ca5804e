"""AudioSet class names and top-k tags of an AudioSet tagger's logits (e.g. EfficientAT mn04).

    labels = audioset.read_labels('class_labels_indices.csv')  # beside the checkpoint
    logits = model.apply(variables, log_mels)  # (batch, 527)
    for tags in audioset.top_k(logits, labels, k=5):
      print(tags)  # [(0, 'Speech', 0.93), (1, 'Male speech, man speaking', 0.41), ...]

AudioSet is multi-label: each class's score is the sigmoid of its logit (not a softmax).
"""
import csv
import os

import numpy as np

NUM_CLASSES = 527
LABELS_FILE = 'class_labels_indices.csv'  # AudioSet's own name for the list
_HEADER = ['index', 'mid', 'display_name']


def read_labels(path: str | os.PathLike) -> list[str]:
  """Display names by class index from AudioSet's `class_labels_indices.csv`.

  Raises:
    ValueError: naming the file, when it is not that csv (header index,mid,display_name;
      indices 0, 1, 2, ... in order).
  """
  path = os.fspath(path)
  with open(path, newline='', encoding='utf-8') as f:
    rows = list(csv.reader(f))
  if not rows or [h.strip() for h in rows[0]] != _HEADER:
    raise ValueError(f'{path}: not an AudioSet class list (expected the header '
                     f'{",".join(_HEADER)}, got {rows[0] if rows else "an empty file"})')
  labels = []
  for line, row in enumerate(rows[1:], start=2):
    if len(row) != 3 or row[0].strip() != str(len(labels)):
      raise ValueError(f'{path}, line {line}: expected "{len(labels)},<mid>,<name>", got '
                       f'{row}')
    labels.append(row[2])
  if not labels:
    raise ValueError(f'{path}: holds no classes')
  return labels


def scores(logits) -> np.ndarray:
  """Per-class probabilities of multi-label logits: the sigmoid, float32 (batch, classes)."""
  logits = np.asarray(logits, np.float32)
  return 1.0 / (1.0 + np.exp(-logits))


def top_k(logits, labels: list[str], k: int = 5) -> list[list[tuple[int, str, float]]]:
  """The k highest-scoring (class index, name, sigmoid score) of each row of (batch, classes)
  logits, best first.

  Raises:
    ValueError: the logits have another number of classes than `labels`.
  """
  p = scores(logits)
  if p.ndim != 2 or p.shape[1] != len(labels):
    raise ValueError(f'top_k: logits of shape {p.shape} for {len(labels)} labels; expected '
                     f'(batch, {len(labels)})')
  order = np.argsort(-p, axis=1, kind='stable')[:, :k]
  return [[(int(i), labels[i], float(row[i])) for i in idx] for row, idx in zip(p, order)]
