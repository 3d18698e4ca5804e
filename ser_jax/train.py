"""Training and cross-validation: `train_and_evaluate(config, workdir)`.

For every fold of the configured scheme: build the model, initialise (or import) its
weights or restore the fold's latest checkpoint, train for `config.num_epochs` on the
fold's training actors, evaluate every held-out clip, and write the fold's report; then
the cross-validation summary. `train_fold` reads as that sequence of named steps.

Parallelism (`config.parallel`, 'pmap' or 'jit') lives in `ser_jax.parallel`; the step
functions in `ser_jax.steps`; the workdir layout and every Orbax call in
`ser_jax.checkpoints`; evaluation in `ser_jax.inference`.

Determinism and resume: the data order and augmentation are functions of (seed, fold,
epoch) (see input_pipeline), the dropout key of (seed, fold, step), and checkpoints are
taken at epoch ends, so rerunning the same command after a kill restores the latest
checkpoint and ends with the same metrics as an uninterrupted run (on CPU). The
per-epoch history travels inside the checkpoint so curves and reports cover the whole run.

A rerun whose config differs from the checkpoints' record in a training-relevant field is
refused before anything is written (`checkpoints.check_workdir`); one run at a time holds
the workdir (`checkpoints.training_lock`). Non-finite input features or a non-finite loss
stop training without saving the state they produced.

Files written (process 0 only, except Orbax which coordinates its own multi-host writes):
  workdir/config.json, workdir/model.json     the run's config; the model's identity
  workdir/train.lock                          held while a run trains
  workdir/fold_{i}/checkpoints/<step>/        Orbax checkpoints (state + JSON meta)
  workdir/fold_{i}/report.{json,md}, *.png     per-fold metrics, confusion, curves
  workdir/results.{json,md}, confusion_matrix.png   the cross-validation summary
  workdir/tensorboard/fold_{i}/               TensorBoard scalars
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import pathlib
import time
from typing import Any

import jax
import ml_collections
import numpy as np

from ser_jax import checkpoints
from ser_jax import config_lib
from ser_jax import distill
from ser_jax import ema
from ser_jax import errors
from ser_jax import glibc_malloc
from ser_jax import inference
from ser_jax import input_pipeline
from ser_jax import labels
from ser_jax import metrics as metrics_lib
from ser_jax import model_init
from ser_jax import parallel
from ser_jax import reports
from ser_jax import splits
from ser_jax import steps

log = logging.getLogger(__name__)


class NonFiniteLossError(errors.UserError):
  """The training loss became NaN or infinite."""


class NonFiniteInputError(errors.UserError):
  """A training batch holds NaN or infinite features (damaged data, not divergence)."""


@dataclasses.dataclass
class EpochStats:
  """Running sums over an epoch's real (weight 1) training clips."""
  loss_sum: float = 0.0  # sum of (mean loss of a step) * (real clips in it)
  correct: float = 0.0
  count: float = 0.0

  def add(self, loss: float, correct: float, count: float) -> None:
    self.loss_sum += loss * count
    self.correct += correct
    self.count += count

  @property
  def loss(self) -> float:
    return self.loss_sum / max(self.count, 1.0)

  @property
  def accuracy(self) -> float:
    return self.correct / max(self.count, 1.0)


@dataclasses.dataclass
class FoldRun:
  """What one fold's training loop works with (built once per fold)."""
  index: int
  fold: splits.Fold
  train: input_pipeline.Examples
  test: input_pipeline.Examples
  steps_per_epoch: int
  runner: Any  # parallel.PmapRunner | parallel.JitRunner
  learning_rate_fn: Any
  checkpoints: checkpoints.FoldCheckpoints
  last_good: str = 'No checkpoint was saved before it.'  # for a non-finite-loss error
  targets: np.ndarray | None = None  # (N, C) distillation targets of `train`; None: labels


# ----------------------------------------------------------------------------- logging


class _TensorBoard:
  """TensorBoard scalars via tensorboardX on process 0 (a no-op elsewhere)."""

  def __init__(self, logdir: pathlib.Path | None):
    self._writer = None
    if logdir is not None and jax.process_index() == 0:
      from tensorboardX import SummaryWriter  # pylint: disable=g-import-not-at-top
      self._writer = SummaryWriter(str(logdir))

  def scalars(self, step: int, values: dict[str, float]) -> None:
    if self._writer is not None:
      for k, v in values.items():
        if v is not None and np.isfinite(v):
          self._writer.add_scalar(k, float(v), int(step))

  def close(self):
    if self._writer is not None:
      self._writer.flush()
      self._writer.close()


class _Progress:
  """A tqdm bar of training steps on process 0 (a no-op elsewhere)."""

  def __init__(self, total: int, initial: int, desc: str):
    self._bar = None
    if jax.process_index() == 0:
      from tqdm.auto import tqdm  # pylint: disable=g-import-not-at-top
      self._bar = tqdm(total=total, initial=initial, desc=desc, unit='step',
                       dynamic_ncols=True, leave=True)

  def update(self, steps_done: int, **postfix) -> None:
    if self._bar is not None:
      self._bar.update(steps_done)
      self._bar.set_postfix(**postfix)

  def close(self):
    if self._bar is not None:
      self._bar.close()


# ----------------------------------------------------------------------------- one fold


def _fold_data(config, examples, fold: splits.Fold, dataset_name: str):
  """(train, test) clips of the fold, as the model sees them (`input_pipeline.fold_split`)."""
  return tuple(input_pipeline.prepare_images(part, config.data) for part in
               input_pipeline.fold_split(examples, fold, dataset_name=dataset_name))


def _init_or_restore(config, run: FoldRun, host_state) -> tuple[Any, int, list]:
  """The placed state to train from, the epoch to start at and the history so far.

  `host_state` is the freshly initialised (or imported) state; the fold's latest
  checkpoint, when there is one, replaces it (`checkpoints.check_workdir` has already
  refused one trained with other settings).
  """
  latest = run.checkpoints.latest_step()
  if latest is None:
    return run.runner.place_state(host_state), 0, []
  host_state, meta = run.checkpoints.restore(latest, run.runner.abstract_state(host_state))
  _check_same_data(run, latest, meta)
  start_epoch = int(meta['epoch'])
  run.last_good = f'Last good checkpoint: {run.checkpoints.directory} step {latest}.'
  log.info('Fold %d: resuming from checkpoint step %d (epoch %d of %d)', run.index, latest,
           start_epoch, int(config.num_epochs))
  return run.runner.place_state(host_state), start_epoch, list(meta['history'])


def _check_same_data(run: FoldRun, step: int, meta: dict) -> None:
  """Refuses to resume a checkpoint on other training clips than it was trained on.

  The config may point elsewhere on resume (`data.data_dir` is a location), so the data
  itself is compared: steps per epoch (the number of clips) and the speakers present.
  """
  epoch, recorded = int(meta['epoch']), meta.get('train_actors')
  actors = run.train.speaker_ids()
  if step != epoch * run.steps_per_epoch or (recorded is not None and
                                             list(recorded) != actors):
    raise errors.UserError(
        f'{run.checkpoints.directory} step {step} was trained on other data than fold '
        f'{run.index} holds now: {step} steps in {epoch} epochs'
        + (f' on speakers {list(recorded)}' if recorded is not None else '')
        + f', where the data gives {run.steps_per_epoch} steps per epoch ({len(run.train)} '
        f'clips) on speakers {actors}. Point config.data at the dataset it was trained on, '
        'or use a new --workdir.')


def _check_finite(pending, run: FoldRun, epoch: int):
  """Fetches pending per-step metrics; raises at the first step with non-finite inputs
  (NonFiniteInputError) or a non-finite loss (NonFiniteLossError).

  Both are global values of the step, so every host raises together. Non-finite features
  need not make the loss non-finite (a model can map them to finite logits), so they are
  checked themselves, first: they explain a non-finite loss.
  """
  values = jax.device_get([(s, m['loss'], m['correct'], m['count'], m['nonfinite_inputs'])
                           for s, m in pending])
  for step, loss, _, _, nonfinite in values:
    if nonfinite:
      raise _non_finite_inputs(run, epoch, step, int(nonfinite))
    if not np.isfinite(loss):
      raise NonFiniteLossError(
          f'Non-finite training loss ({float(loss)}) in fold {run.index}, epoch {epoch + 1}, '
          f'step {step}. Training stopped; the state was not saved. {run.last_good} Lower '
          'config.optimizer.learning_rate or set config.optimizer.grad_clip_norm.')
  return [(float(l), float(c), float(n)) for _, l, c, n, _ in values]


def _non_finite_inputs(run: FoldRun, epoch: int, step: int, rows: int):
  """The error for `rows` batch rows with NaN/Inf features, naming the stored clips that
  hold such values (when none does, the input pipeline made them)."""
  bad = [name or f'#{i}' for i, (name, image) in enumerate(
      zip(run.train.file_names, run.train.images)) if not np.isfinite(image).all()]
  clips = (f'clips with NaN/Inf features: {", ".join(bad[:10])}'
           + (f' and {len(bad) - 10} more' if len(bad) > 10 else '')
           if bad else 'no stored clip is non-finite, so the input pipeline made them')
  return NonFiniteInputError(
      f'Non-finite input features (NaN or Inf) in {rows} batch row(s) of fold {run.index}, '
      f'epoch {epoch + 1}, step {step} ({clips}). Training stopped; the state was not '
      f'saved. {run.last_good} Rebuild the dataset from intact audio.')


def _train_epoch(config, run: FoldRun, state, epoch: int, tb: _TensorBoard,
                 progress: _Progress):
  """One pass over the fold's training clips; returns (state, EpochStats)."""
  step = epoch * run.steps_per_epoch
  last_step = (epoch + 1) * run.steps_per_epoch
  log_every = max(1, int(config.log_every_steps))
  stats, pending = EpochStats(), []
  batches = input_pipeline.train_batches(
      run.train, config.data, batch_size=int(config.batch_size),
      num_classes=int(config.model.num_classes), seed=(int(config.seed), run.index),
      epoch=epoch, process_index=jax.process_index(), process_count=jax.process_count(),
      targets=run.targets)
  # closing(): an error mid-epoch (e.g. a non-finite loss) also stops the prefetch thread.
  with contextlib.closing(input_pipeline.prefetch(batches)) as prefetched:
    for batch in prefetched:
      state, step_metrics = run.runner.train(state, run.runner.place_batch(batch))
      step += 1
      pending.append((step, step_metrics))
      if len(pending) < log_every and step != last_step:
        continue
      for loss, correct, count in _check_finite(pending, run, epoch):
        stats.add(loss, correct, count)
      tb.scalars(step, {'train/loss_step': loss,
                        'train/learning_rate': float(run.learning_rate_fn(step - 1))})
      progress.update(len(pending), epoch=epoch + 1, loss=f'{loss:.4f}')
      pending = []
  return state, stats


def _save(config, run: FoldRun, state, epoch: int, history: list) -> None:
  """Checkpoints the end of `epoch` (0-based) with the history so far."""
  step = (epoch + 1) * run.steps_per_epoch
  # The actors it trained on, as present in the data: evaluation refuses to report on
  # them as held out.
  meta = dict(checkpoints.run_record(config), epoch=epoch + 1, history=history,
              fold=run.index, train_actors=run.train.speaker_ids())
  run.checkpoints.save(step, run.runner.host_state(state), meta)  # logs once committed
  run.last_good = f'Last good checkpoint: {run.checkpoints.directory} step {step}.'


def _is_every(epoch: int, every, last: bool) -> bool:
  return last or (epoch + 1) % max(1, int(every)) == 0


def _run_epochs(config, workdir: pathlib.Path, run: FoldRun, state, start_epoch: int,
                history: list):
  """Trains from `start_epoch` to the end, evaluating and saving as configured.

  Returns:
    (state, the last evaluation result or None when no epoch was left to train).
  """
  num_epochs = int(config.num_epochs)
  tb = _TensorBoard(workdir / 'tensorboard' / f'fold_{run.index}')
  progress = _Progress(num_epochs * run.steps_per_epoch, start_epoch * run.steps_per_epoch,
                       f'fold {run.index}')
  result = None
  try:
    for epoch in range(start_epoch, num_epochs):
      t0 = time.time()
      last = epoch + 1 == num_epochs
      state, stats = _train_epoch(config, run, state, epoch, tb, progress)
      step = (epoch + 1) * run.steps_per_epoch
      record = {'epoch': epoch + 1, 'step': step, 'train_loss': stats.loss,
                'train_accuracy': stats.accuracy,
                'learning_rate': float(run.learning_rate_fn(step - 1))}
      if _is_every(epoch, config.eval_every_epochs, last):
        result = inference.evaluate_examples(run.runner, ema.for_evaluation(state), run.test,
                                             config)
        record.update(eval_loss=result['loss'], eval_accuracy=result['accuracy'])
      record['epoch_seconds'] = time.time() - t0
      history.append(record)
      tb.scalars(step, {f'epoch/{k}': v for k, v in record.items()
                        if k not in ('epoch', 'step')})
      log.info('Fold %d epoch %d/%d: %s', run.index, epoch + 1, num_epochs,
               ', '.join(f'{k}={v:.4g}' for k, v in record.items() if isinstance(v, float)))
      if _is_every(epoch, config.checkpoint.every_epochs, last):
        _save(config, run, state, epoch, history)
      # Heap pages freed this epoch back to the kernel, so that holes the next phases
      # (evaluation, the next fold) cannot reuse do not pile up (ser_jax/glibc_malloc.py).
      glibc_malloc.release_free_memory()
  finally:
    tb.close()
    progress.close()
  return state, result


def train_fold(config, workdir: pathlib.Path, fold_index: int, fold: splits.Fold,
               all_examples: input_pipeline.Examples, dataset_name: str) -> dict[str, Any]:
  """Trains and evaluates one fold; returns its metrics dict (with fold info)."""
  train_ex, test_ex = _fold_data(config, all_examples, fold, dataset_name)
  steps_per_epoch = input_pipeline.steps_per_epoch(len(train_ex), int(config.batch_size))
  log.info('Fold %d: train speakers %s (%d clips, %d steps/epoch; per dataset %s), test '
           'speakers %s (%d clips)', fold_index, train_ex.speaker_ids(), len(train_ex),
           steps_per_epoch, np.bincount(train_ex.groups).tolist(), test_ex.speaker_ids(),
           len(test_ex))
  targets = distill.soft_targets(config, fold_index, train_ex)  # None without teachers
  model = model_init.build_model(config)
  init_rng, dropout_rng = jax.random.split(
      jax.random.fold_in(jax.random.PRNGKey(int(config.seed)), fold_index))
  lr_fn = steps.create_learning_rate_fn(config, steps_per_epoch)
  host_state = steps.create_state(
      model.apply, model_init.initial_variables(config, model, init_rng),
      steps.create_optimizer(config, lr_fn))
  with checkpoints.FoldCheckpoints(workdir, fold_index, config.checkpoint.keep) as ckpts:
    run = FoldRun(fold_index, fold, train_ex, test_ex, steps_per_epoch,
                  parallel.make_runner(config, model, dropout_rng), lr_fn, ckpts,
                  targets=targets)
    state, start_epoch, history = _init_or_restore(config, run, host_state)
    del host_state
    state, result = _run_epochs(config, workdir, run, state, start_epoch, history)
  if result is None:  # already trained to num_epochs before this run: evaluate only
    result = inference.evaluate_examples(run.runner, ema.for_evaluation(state), test_ex,
                                         config)
  fold_metrics = metrics_lib.classification_metrics(
      result['labels'], result['predictions'], int(config.model.num_classes))
  # The actors actually in the data (a fold names every actor of its scheme).
  fold_metrics.update({'fold': fold_index, 'test_actors': test_ex.speaker_ids(),
                       'train_actors': train_ex.speaker_ids(), 'eval_loss': result['loss'],
                       'num_train_examples': len(train_ex)})
  if jax.process_index() == 0:
    reports.write_fold_report(checkpoints.fold_dir(workdir, fold_index), fold_metrics,
                              history, labels.class_names(config.model.num_classes))
  return fold_metrics


# ----------------------------------------------------------------------------- all folds


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str | os.PathLike, *,
                       examples: input_pipeline.Examples | None = None) -> dict[str, Any]:
  """Runs cross-validation as configured; returns the summary (mean/std over folds).

  Args:
    config: an experiment config (see ser_jax/config_lib.py).
    workdir: output folder (checkpoints, reports); rerunning with the same one resumes.
    examples: optional preloaded clips (tests, notebooks); default: read the TFDS dataset
      `config_lib.tfds_name(config.data)` (building it first when `config.data.download`).

  Returns:
    `ser_jax.metrics.summarize_folds` of the folds' metrics, plus `folds` (their metrics).

  Raises:
    UserError: a bad setting (checked before any data is read), a workdir of another
      model, missing data, a diverging run.
  """
  workdir = pathlib.Path(workdir)
  folds = config_lib.validate(config, num_devices=jax.device_count())
  distill.check_teachers(config)  # reads the teachers' config.json, before anything is written
  with checkpoints.training_lock(workdir):
    # Before anything is written: a run with other settings must not rewrite config.json.
    checkpoints.check_workdir(config, workdir)
    if jax.process_index() == 0:
      checkpoints.write_run_files(workdir, config)
    return _cross_validate(config, workdir, folds, examples)


def _cross_validate(config, workdir: pathlib.Path, folds, examples) -> dict[str, Any]:
  """`train_and_evaluate` after the checks: data, every fold, the summary."""
  dataset_name = config_lib.tfds_name(config.data)
  if examples is None:
    examples = input_pipeline.load_all(config.data)
  else:
    dataset_name = f'{dataset_name} (preloaded)'
  input_pipeline.check_labels(examples, int(config.model.num_classes), [
      config_lib.tfds_name(config.data, n)
      for n in (config.data.name, *(config.data.get('extra_train') or ()))])
  if not folds:  # not RAVDESS: the folds are over the speakers the data holds
    folds = config_lib.get_folds(config, input_pipeline.fold_speakers(config.data, examples))
  log.info('%d clips of %d speakers; %d devices (%s), %d processes, parallel=%s',
           len(examples), len(set(examples.speakers.tolist())), jax.device_count(),
           jax.devices()[0].platform, jax.process_count(), config.parallel)
  # Resize once for all folds (each fold then only selects).
  examples = input_pipeline.prepare_images(examples, config.data)

  fold_results = [train_fold(config, workdir, i, fold, examples, dataset_name)
                  for i, fold in folds]
  summary = metrics_lib.summarize_folds(fold_results)
  if jax.process_index() == 0:
    reports.write_cv_report(workdir, fold_results, summary, config,
                            labels.class_names(config.model.num_classes))
  mean = summary['mean']
  log.info('Cross-validation over %d folds: accuracy %.4f, precision %.4f, recall %.4f, '
           'F1 %.4f', len(fold_results), mean['accuracy'], mean['precision'],
           mean['recall'], mean['f1'])
  return dict(summary, folds=fold_results)
