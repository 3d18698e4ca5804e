"""Distillation: training targets from an ensemble of finished runs (`config.distill`).

`config.distill.teachers` names training workdirs (one or more runs, e.g. three seeds of
a config). For fold i, every teacher's final fold-i checkpoint predicts the student's
training clips in evaluation mode; their softmax probabilities, averaged clip by clip
(the ensemble `launch/evaluate.py --workdir=a,b,c` scores), become soft targets:

    target = (1 - weight) * one_hot(label) + weight * mean_t softmax(logits_t / temperature)

(`config.distill.weight`, `config.distill.temperature`; mixup and label smoothing then act
on these targets as on the one-hot ones). A temperature above 1 softens each teacher's
distribution before the average: teachers fit their own training clips almost perfectly,
so at temperature 1 their targets are nearly one-hot and say little about which wrong
classes a clip resembles. The student's own softmax stays at temperature 1 (the targets
are labels, not Hinton et al.'s temperature-matched KL term). One student can thereby
learn what the ensemble knows at one model's cost.

A teacher must have trained on exactly the student's training speakers of that fold (its
checkpoint records them), so no teacher has seen the student's held-out actors, and to its
final epoch; and it must see the clips as the student does (the same dataset, front end,
normalisation, crop mode and input shape), since it predicts the student's prepared clips.
Anything else is refused with the teacher's path and what differs.
"""

from __future__ import annotations

import logging
import numpy as np

from ser_jax import checkpoints
from ser_jax import config_lib
from ser_jax import errors
from ser_jax import input_pipeline

log = logging.getLogger(__name__)

# What a teacher's config must share with the student's to predict the student's clips.
_SAME_INPUT = ('data.name', 'data.frontend', 'data.normalize', 'data.crop_mode',
               'data.input_shape', 'model.num_classes')


def teachers(config) -> tuple[str, ...]:
  """The teacher workdirs `config.distill.teachers` names (empty: no distillation)."""
  distill = config.get('distill')
  return tuple(str(t) for t in (distill.get('teachers') or ())) if distill else ()


def check_teacher_config(config, teacher_config, teacher: str) -> None:
  """Raises UserError unless `teacher` sees the clips as the student (`config`) does."""
  differ = config_lib.differing_fields(config, teacher_config, _SAME_INPUT)
  if differ:
    field, mine, theirs = differ[0]
    raise errors.UserError(
        f'config.distill.teachers: {teacher} has {field}={theirs!r}, the student '
        f'{mine!r}; a teacher must see the clips as the student does')


def teacher_config(config, teacher: str):
  """`teacher`'s recorded config, checked against the student's input (`config`).

  Raises:
    UserError: `teacher` is not a training workdir, or sees the clips differently.
  """
  try:
    recorded = checkpoints.read_config(teacher)
  except errors.UserError as e:
    raise errors.UserError(f'config.distill.teachers: {teacher} is not a training run '
                           f'({e})') from None
  check_teacher_config(config, recorded, teacher)
  return recorded


def check_teachers(config) -> None:
  """Checks every teacher's config before a run writes anything (a typo in a path must not
  leave a workdir that then refuses the corrected command)."""
  for teacher in teachers(config):
    teacher_config(config, teacher)


def _teacher_variables(teacher: str, teacher_config, fold: int,
                       train_speakers: list) -> dict:
  """The final fold-`fold` variables of `teacher`, checked against the student's fold."""
  variables, meta, step = checkpoints.restore_fold(teacher, fold, None, teacher_config)
  where = f'config.distill.teachers: {teacher} fold {fold} step {step}'
  if int(meta.get('epoch', -1)) != int(teacher_config.num_epochs):
    raise errors.UserError(f'{where} is epoch {meta.get("epoch")} of '
                           f'{teacher_config.num_epochs}: finish that run first')
  trained = meta.get('train_actors')
  if trained is None or list(trained) != list(train_speakers):
    raise errors.UserError(
        f'{where} trained on speakers {trained}, the student trains on {train_speakers}: '
        'a teacher must train on exactly the student fold\'s training speakers (the same '
        'folds and validation actors), or it would have seen held-out ones')
  return variables


def soft_targets(config, fold: int, train: input_pipeline.Examples) -> np.ndarray | None:
  """Training targets `(N, num_classes)` of the fold's clips `train`; None: no teachers.

  Args:
    config: the student's config (`distill.teachers`, `.weight`, `.temperature`, `data`,
      `model`).
    fold: the fold index (each teacher's `fold_<fold>` checkpoint is used).
    train: the student's training clips after `input_pipeline.prepare_images`.

  Raises:
    UserError: a teacher that is missing, unfinished, trained on other speakers, or sees
      the clips differently.
  """
  names = teachers(config)
  if not names:
    return None
  from ser_jax import inference  # pylint: disable=g-import-not-at-top
  num_classes = int(config.model.num_classes)
  temperature = float(config.distill.get('temperature', 1.0))
  speakers = train.speaker_ids()
  probs, base = [], None
  for teacher in names:
    recorded = teacher_config(config, teacher)
    variables = _teacher_variables(teacher, recorded, fold, speakers)
    # One compiled evaluation step for the teachers of one model and evaluation layout.
    same = base is not None and not config_lib.differing_fields(
        base.config, recorded, ('model', 'data', 'eval_batch_size'))
    base = (base.with_variables(variables) if same
            else inference.Predictor(recorded, variables))
    out = base.evaluate(train)  # (N, C), in the order of `train`
    log.info('Fold %d: teacher %s scores %.2f%% on the training clips', fold, teacher,
             100 * out['accuracy'])
    probs.append(inference.softmax(out['logits'] / temperature))
  weight = float(config.distill.weight)
  one_hot = np.eye(num_classes, dtype=np.float32)[train.labels]
  return ((1.0 - weight) * one_hot + weight * np.mean(probs, axis=0)).astype(np.float32)


def check_config(config) -> None:
  """Raises UserError for teachers without weight or named twice (called by
  `config_lib.validate`, whose number rules bound `distill.weight` to [0, 1])."""
  distill = config.get('distill')
  if not distill:
    return
  if teachers(config) and float(distill.get('weight', 0.0)) == 0.0:
    raise errors.UserError('config.distill.teachers is set but config.distill.weight is 0: '
                           'the teachers would be computed and ignored')
  if len(set(teachers(config))) != len(teachers(config)):
    raise errors.UserError(f'config.distill.teachers names a run twice: {teachers(config)}')
