"""Cross-corpus evaluation: scoring a model on a dataset other than its training data.

`evaluation.run_evaluation(..., data='ser_tess')` (`launch/evaluate.py --data=ser_tess`)
evaluates a workdir's checkpoints or imported weights on another dataset of the shared
schema, read with the model's front end. Two things differ from evaluating on the
training dataset, and both are decided here:

- Classes (`class_map`): a model's class i is `labels.VOCABULARY[i]`, and every builder
  labels its clips in that vocabulary, so the mapping is by name. Only the emotions both
  have are scored: the model's classes the target dataset lacks (no clip of the whole
  dataset has them, e.g. calm for TESS, disgust and surprised for RAVDESS song) are
  masked: their logits are set to -inf, so the softmax, the argmax and the loss run over
  the shared classes only. Clips of emotions the model lacks (EmoDB's boredom for an
  8-class model) cannot be scored and are left out, counted in the report. Accuracy,
  macro precision, UAR (macro recall), macro F1 and the confusion matrix are then over the
  shared classes (`score`), named in every report (`notes`).
- Speakers (`default_speakers`): the clips of speakers the checkpoint never trained on.
  A corpus the run did not train on: all of its clips. The training dataset's own corpus
  (RAVDESS song for a RAVDESS speech run): the fold's held-out speakers, as for the
  training dataset (speaker ids are global: 'ravdess:04' is the same person in speech and
  song). A corpus that was in `config.data.extra_train` is refused: every clip of it that
  is not a test speaker of the fold was trained on.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Sequence

import numpy as np

from ser_jax import config_lib
from ser_jax import errors
from ser_jax import labels
from ser_jax import metrics as metrics_lib


@dataclasses.dataclass(frozen=True)
class ClassMap:
  """How a model's classes meet a target dataset's emotions.

  Attributes:
    num_classes: the model's classes (`labels.VOCABULARY[:num_classes]`).
    used: model class ids scored (the model's classes the target has), ascending; the
      reports' class i is `used[i]`.
    masked: model class ids the target lacks (logits set to -inf).
    excluded: target class ids the model lacks (their clips are not scored).
  """
  num_classes: int
  used: tuple[int, ...]
  masked: tuple[int, ...]
  excluded: tuple[int, ...]

  @property
  def names(self) -> list[str]:
    return [labels.VOCABULARY[c] for c in self.used]

  def notes(self, excluded_clips: int = 0) -> list[str]:
    """One line per fact the report must state."""
    masked = ', '.join(labels.VOCABULARY[c] for c in self.masked) or 'none'
    out = [f"Classes scored ({len(self.used)}): {', '.join(self.names)}.",
           f'Model classes the evaluated data lacks, masked (logits -inf): {masked}.']
    if self.excluded:
      out.append(f"Clips of emotions the model lacks, not scored: {excluded_clips} "
                 f"({', '.join(labels.VOCABULARY[c] for c in self.excluded)}).")
    return out


def class_map(num_classes: int, target_labels: Sequence[int]) -> ClassMap:
  """The ClassMap of a `num_classes` model and a dataset whose clips have `target_labels`.

  Args:
    num_classes: the model's width; its class i is `labels.VOCABULARY[i]`.
    target_labels: every clip's emotion id of the whole target dataset.

  Raises:
    UserError: the model and the data share no emotion, or the model is wider than the
      shared vocabulary (its classes have no emotion names).
  """
  if not 1 <= num_classes <= len(labels.VOCABULARY):
    raise errors.UserError(
        f'cross-corpus evaluation maps classes by emotion name, but a {num_classes}-class '
        f'model has classes beyond ser_jax.labels.VOCABULARY ({len(labels.VOCABULARY)})')
  present = {int(c) for c in np.unique(np.asarray(target_labels))}
  used = tuple(c for c in range(num_classes) if c in present)
  if not used:
    raise errors.UserError(
        f'the model ({", ".join(labels.VOCABULARY[:num_classes])}) and the evaluated data '
        f'({", ".join(labels.VOCABULARY[c] for c in sorted(present))}) share no emotion')
  return ClassMap(num_classes=num_classes, used=used,
                  masked=tuple(c for c in range(num_classes) if c not in present),
                  excluded=tuple(sorted(c for c in present if c >= num_classes)))


def scorable(target_labels: np.ndarray, cmap: ClassMap) -> np.ndarray:
  """Indices of the clips whose emotion the model has (the others are not evaluated)."""
  return np.flatnonzero(np.isin(np.asarray(target_labels), cmap.used))


def score(logits: np.ndarray, target_labels: np.ndarray, cmap: ClassMap) -> dict[str, Any]:
  """Metrics of `logits` `(N, num_classes)` on the shared classes.

  Masking a class's logit to -inf and dropping its column are the same thing for the
  softmax and the argmax, so the scores are over `logits[:, cmap.used]`, and label
  `cmap.used[i]` becomes class i (the confusion matrix is over the shared classes).

  Returns:
    `metrics.classification_metrics` over the shared classes plus `loss` (mean
    cross-entropy of the masked softmax).
  """
  logits = np.asarray(logits, np.float64)[:, list(cmap.used)]  # (N, shared)
  index = {c: i for i, c in enumerate(cmap.used)}
  try:
    y = np.asarray([index[int(c)] for c in target_labels], np.int64)
  except KeyError as e:  # a caller's bug: `scorable` leaves such clips out
    raise ValueError(f'clip of class {e} has no shared class; select with scorable()') from e
  m = metrics_lib.classification_metrics(y, logits.argmax(-1), len(cmap.used))
  z = logits - logits.max(-1, keepdims=True)
  log_norm = np.log(np.exp(z).sum(-1))
  m['loss'] = float(np.mean(log_norm - z[np.arange(len(y)), y])) if len(y) else 0.0
  return m


def foreign(config, data: str) -> bool:
  """Whether dataset `data` is of another corpus than `config.data.name`."""
  return config_lib.corpus_of(data) != config_lib.corpus_of(config.data.name)


def default_speakers(config, data: str, fold: int | None) -> tuple | str:
  """Target speakers to evaluate when none are given (see the module docstring).

  Args:
    config: the model's (training) config.
    data: the target dataset name, not `config.data.name` (only RAVDESS has several
      datasets of one corpus, so the same corpus means RAVDESS folds).
    fold: the checkpoint's fold (None: imported weights without a fold).

  Returns:
    'all', or the fold's held-out speakers (RAVDESS actor ints or speaker strings).

  Raises:
    UserError: `data` was in `config.data.extra_train`; imported weights evaluated on
      their own corpus without `fold` or explicit speakers.
  """
  corpus = config_lib.corpus_of(data)
  extra = [n for n in config.data.get('extra_train') or ()
           if config_lib.corpus_of(n) == corpus]
  if foreign(config, data):
    if extra:
      raise errors.UserError(
          f'{data}: the run trained on {extra[0]} (config.data.extra_train), so every '
          f'{corpus} speaker outside the fold\'s test set was trained on; evaluate '
          f'config.data.name ({config.data.name}) instead')
    return 'all'
  if fold is None:
    raise errors.UserError(
        f'{data} is of the same corpus as the model\'s data ({config.data.name}): choose '
        "the speakers it never trained on: --fold=<i> or --actors=...")
  return config_lib.fold_test_actors(config, fold)
