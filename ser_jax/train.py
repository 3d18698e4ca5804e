"""Training and cross-validation: `train_and_evaluate(config, workdir)`.

For every fold of the configured scheme: build the model, initialise (or import) its
weights, train for `config.num_epochs` on the fold's training actors, evaluate every
held-out clip, and write the fold's report; then the cross-validation summary.

Parallelism (`config.parallel`):
- 'pmap': the step runs under `jax.pmap(axis_name='batch')` over the local devices. Each
  device gets `batch_size / device_count` rows; the loss is normalised by the global count
  of real rows (`lax.psum`), so summing the per-device gradients (`lax.psum`) gives the
  gradient of the global-batch mean; BatchNorm running statistics are averaged
  (`lax.pmean`) after each step. If the model has a BatchNorm axis field (`bn_axis_name`
  or `axis_name`), it is set to 'batch' so the batch statistics themselves are global.
- 'jit': the same step under `jax.jit` on a 1-D device mesh ('batch'); the batch is a
  global array sharded over the mesh, parameters are replicated, and XLA inserts the
  collectives. Random numbers (dropout) are sharding-invariant here, so results match one
  device even with dropout. Under pmap, dropout keys are folded with the device index.

Either way, the same global batch gives the same update on 1 or N devices (up to float
summation order), for models whose BatchNorm sees the global batch.

Determinism and resume: the data order and augmentation are functions of (seed, fold,
epoch) (see input_pipeline), the dropout key of (seed, fold, step), and checkpoints are
taken at epoch ends, so rerunning the same command after a kill restores the latest
checkpoint (Orbax `CheckpointManager` in `workdir/fold_{i}/checkpoints`) and ends with the
same metrics as an uninterrupted run (on CPU). The per-epoch history travels inside the
checkpoint so curves and reports cover the whole run.

Files written (process 0 only, except Orbax which coordinates its own multi-host writes):
  workdir/config.json, workdir/model.json     the run's config; the model's identity
  workdir/fold_{i}/checkpoints/<step>/        Orbax checkpoints (state + JSON meta)
  workdir/fold_{i}/report.{json,md}, *.png     per-fold metrics, confusion, curves
  workdir/results.{json,md}, confusion_matrix.png   the cross-validation summary
  workdir/tensorboard/fold_{i}/               TensorBoard scalars
"""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import math
import os
import pathlib
import time
import warnings
from typing import Any, Callable, Sequence

import flax
from flax.training import train_state
import jax
from jax import lax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from ser_jax import input_pipeline
from ser_jax import splits

log = logging.getLogger(__name__)

PARALLEL_MODES = ('pmap', 'jit')
AXIS = 'batch'


class NonFiniteLossError(FloatingPointError):
  """The training loss became NaN or infinite."""


class TrainState(train_state.TrainState):
  """Flax TrainState plus the BatchNorm running statistics (empty dict when none)."""
  batch_stats: Any = None


def get_model(name: str, **kwargs):
  """`ser_jax.models.get_model` (indirected so tests can register tiny models)."""
  from ser_jax import models  # pylint: disable=g-import-not-at-top
  return models.get_model(name, **kwargs)


def build_model(config):
  """The configured model; unknown names raise ValueError listing the known ones."""
  kwargs = dict(config.model.get('kwargs', {}) or {})
  return get_model(config.model.name, num_classes=config.model.num_classes,
                   dtype=jnp.dtype(config.model.dtype), **kwargs)


def _with_bn_axis(model, axis_name: str):
  """Makes BatchNorm batch statistics cross-device when the model exposes the axis field."""
  for field in ('bn_axis_name', 'axis_name'):
    if field in getattr(type(model), '__dataclass_fields__', {}) and getattr(
        model, field) is None:
      return model.clone(**{field: axis_name})
  return model


# ----------------------------------------------------------------------------- folds


def get_folds(config) -> list[tuple[int, splits.Fold]]:
  """(index, fold) pairs to run, from `config.folds`; invalid settings raise ValueError."""
  fc = config.folds
  if fc.test_actors:
    test = tuple(sorted(int(a) for a in fc.test_actors))
    bad = [a for a in test if not 1 <= a <= splits.NUM_ACTORS]
    if bad:
      raise ValueError(f'config.folds.test_actors has actors {bad} outside '
                       f'1..{splits.NUM_ACTORS}')
    fold = splits.Fold(train=tuple(a for a in splits.ACTORS if a not in test), test=test)
    folds = [splits.check_fold(fold)]
  elif fc.scheme == 'predecessor':
    folds = splits.predecessor_folds()
  elif fc.scheme == 'kfold':
    folds = splits.kfold(int(fc.k), int(fc.seed))
  elif fc.scheme == 'loao':
    folds = splits.leave_one_actor_out()
  else:
    raise ValueError(f"config.folds.scheme must be 'predecessor', 'kfold' or 'loao', got "
                     f'{fc.scheme!r}')
  which = tuple(int(i) for i in fc.which) if fc.which else tuple(range(len(folds)))
  bad = [i for i in which if not 0 <= i < len(folds)]
  if bad:
    raise ValueError(f'config.folds.which has indices {bad}; the scheme has folds '
                     f'0..{len(folds) - 1}')
  for i in which:
    splits.check_fold(folds[i])
  n_val = int(fc.get('validation_actors', 0) or 0)
  if n_val:
    seed = int(fc.get('validation_seed', 0))
    return [(i, splits.validation_fold(folds[i], n_val, seed)) for i in which]
  return [(i, folds[i]) for i in which]


# ----------------------------------------------------------------------------- optimiser


def create_learning_rate_fn(config, steps_per_epoch: int) -> Callable[[Any], Any]:
  """Constant or linear-warmup + cosine-decay learning rate, per step."""
  lr = float(config.optimizer.learning_rate)
  name = config.schedule.name
  if name == 'constant':
    return optax.constant_schedule(lr)
  if name == 'warmup_cosine':
    total = max(1, int(config.num_epochs) * steps_per_epoch)
    warmup = int(round(float(config.schedule.warmup_epochs) * steps_per_epoch))
    warmup = min(warmup, total - 1)
    return optax.warmup_cosine_decay_schedule(
        init_value=0.0, peak_value=lr, warmup_steps=warmup, decay_steps=total,
        end_value=0.0)
  raise ValueError(f"config.schedule.name must be 'constant' or 'warmup_cosine', got "
                   f'{name!r}')


def create_optimizer(config, learning_rate_fn) -> optax.GradientTransformation:
  """The optimiser of `config.optimizer`.

  'adam_l2' is PyTorch's `Adam(weight_decay=wd)`: wd * param is added to the gradient
  before Adam's moment estimates (coupled L2), so it is chained before `scale_by_adam`.
  'adamw' decouples the decay (PyTorch AdamW: param -= lr * wd * param).
  Clipping (global norm) applies to the raw loss gradient, before either decay, like
  `torch.nn.utils.clip_grad_norm_` before `optimizer.step()`.
  """
  oc = config.optimizer
  parts = []
  if oc.grad_clip_norm and float(oc.grad_clip_norm) > 0:
    parts.append(optax.clip_by_global_norm(float(oc.grad_clip_norm)))
  wd = float(oc.weight_decay)
  if oc.name == 'adam_l2':
    if wd:
      parts.append(optax.add_decayed_weights(wd))
    parts += [optax.scale_by_adam(b1=0.9, b2=0.999, eps=1e-8),
              optax.scale_by_learning_rate(learning_rate_fn)]
  elif oc.name == 'adamw':
    parts.append(optax.adamw(learning_rate_fn, b1=0.9, b2=0.999, eps=1e-8, weight_decay=wd))
  else:
    raise ValueError(f"config.optimizer.name must be 'adam_l2' or 'adamw', got {oc.name!r}")
  return optax.chain(*parts)


# ----------------------------------------------------------------------------- state


def _loud_warning(message: str) -> None:
  banner = '!' * 78
  log.warning('\n%s\n%s\n%s', banner, message, banner)
  warnings.warn(message, stacklevel=3)


def create_train_state(config, model, rng, tx) -> TrainState:
  """Initialises (or imports, with `config.init.pretrained`) the model's variables."""
  mel, time_ = (int(s) for s in config.data.input_shape)
  dummy = jnp.zeros((1, mel, time_, 1), jnp.float32)  # (batch, mel, time, channels)
  init_rng, dropout_rng = jax.random.split(rng)
  variables = jax.jit(functools.partial(model.init, train=False))(
      {'params': init_rng, 'dropout': dropout_rng}, dummy)
  variables = flax.core.unfreeze(variables)
  if config.init.pretrained:
    from ser_jax import pretrained  # pylint: disable=g-import-not-at-top
    variables = pretrained.init_from_pretrained(variables, config.init)
    log.info('Initialised from pretrained weights %s', config.init.pretrained)
  elif config.init.expect_pretrained:
    _loud_warning(
        f'config.init.expect_pretrained is True but config.init.pretrained is empty: '
        f'{config.model.name} is TRAINED FROM RANDOM INITIALISATION. Pass '
        '--config.init.pretrained=PATH (and --config.init.source) to fine-tune imported '
        'weights as the predecessor did.')
  return TrainState.create(apply_fn=model.apply, params=variables['params'], tx=tx,
                           batch_stats=variables.get('batch_stats', {}))


# ----------------------------------------------------------------------------- steps


def _variables(state):
  v = {'params': state.params}
  if state.batch_stats:
    v['batch_stats'] = state.batch_stats
  return v


def train_step(state: TrainState, batch, *, model, base_rng, label_smoothing: float,
               use_mask: bool, axis_name: str | None):
  """One optimiser step on a (device-local or global) batch; returns (state, metrics).

  The loss is the weighted mean over real rows (`batch['weight']` 1) of the global batch.
  """
  rng = jax.random.fold_in(base_rng, state.step)
  if axis_name is not None:
    rng = jax.random.fold_in(rng, lax.axis_index(axis_name))
  weight = batch['weight']
  count = jnp.sum(weight)
  if axis_name is not None:
    count = lax.psum(count, axis_name)
  denom = jnp.maximum(count, 1.0)
  targets = batch['targets']
  if label_smoothing:
    targets = optax.smooth_labels(targets, label_smoothing)
  mask = batch['mask'] if use_mask else None

  def loss_fn(params):
    variables = {'params': params}
    if state.batch_stats:
      variables['batch_stats'] = state.batch_stats
    logits, new_vars = model.apply(variables, batch['image'], train=True, mask=mask,
                                   rngs={'dropout': rng}, mutable=['batch_stats'])
    logits = logits.astype(jnp.float32)  # (B, C)
    per_example = optax.softmax_cross_entropy(logits, targets)  # (B,)
    return jnp.sum(per_example * weight) / denom, (logits, new_vars)

  (loss, (logits, new_vars)), grads = jax.value_and_grad(loss_fn, has_aux=True)(
      state.params)
  correct = jnp.sum((jnp.argmax(logits, -1) == batch['label']) * weight)
  batch_stats = new_vars.get('batch_stats', state.batch_stats)
  if axis_name is not None:
    grads = lax.psum(grads, axis_name)
    loss = lax.psum(loss, axis_name)
    correct = lax.psum(correct, axis_name)
    batch_stats = lax.pmean(batch_stats, axis_name)
  new_state = state.apply_gradients(grads=grads, batch_stats=batch_stats)
  return new_state, {'loss': loss, 'correct': correct, 'count': count}


def eval_step(state: TrainState, batch, *, model, use_mask: bool):
  """Logits `(B, C)` and per-example loss `(B,)` of a batch (padding rows included)."""
  mask = batch['mask'] if use_mask else None
  logits = model.apply(_variables(state), batch['image'], train=False, mask=mask)
  logits = logits.astype(jnp.float32)
  labels = jax.nn.one_hot(batch['label'], logits.shape[-1])
  return logits, optax.softmax_cross_entropy(logits, labels)


class Runner:
  """Compiled steps and data placement for one parallel mode."""

  def __init__(self, config, model, base_rng):
    mode = config.parallel
    if mode not in PARALLEL_MODES:
      raise ValueError(f'config.parallel must be one of {PARALLEL_MODES}, got {mode!r}')
    self.mode = mode
    self.num_devices = jax.device_count()
    self.local_devices = jax.local_devices()
    for name, size in (('config.batch_size', config.batch_size),
                       ('config.eval_batch_size', config.eval_batch_size)):
      if size % self.num_devices:
        raise ValueError(f'{name}={size} must be a multiple of the {self.num_devices} '
                         'devices (it is the global batch, split over devices and hosts)')
    use_mask = config.data.crop_mode == 'crop_pad'
    ls = float(config.optimizer.label_smoothing)
    if mode == 'pmap':
      # Arrays with a leading device axis, one slice per local device, as pmap expects.
      self.leading_axis = jax.sharding.NamedSharding(
          jax.sharding.Mesh(np.asarray(self.local_devices), (AXIS,)),
          jax.sharding.PartitionSpec(AXIS))
      self.save_sharding = jax.sharding.NamedSharding(
          jax.sharding.Mesh(np.asarray(jax.devices()), (AXIS,)),
          jax.sharding.PartitionSpec())
      train_model = _with_bn_axis(model, AXIS)
      self._train = jax.pmap(
          functools.partial(train_step, model=train_model, base_rng=base_rng,
                            label_smoothing=ls, use_mask=use_mask, axis_name=AXIS),
          axis_name=AXIS, donate_argnums=(0,))
      self._eval = jax.pmap(functools.partial(eval_step, model=model, use_mask=use_mask),
                            axis_name=AXIS)
    else:
      self.mesh = jax.sharding.Mesh(np.asarray(jax.devices()), (AXIS,))
      self.replicated = jax.sharding.NamedSharding(self.mesh, jax.sharding.PartitionSpec())
      self.data_sharding = jax.sharding.NamedSharding(self.mesh,
                                                      jax.sharding.PartitionSpec(AXIS))
      self.save_sharding = self.replicated
      self._train = jax.jit(
          functools.partial(train_step, model=model, base_rng=base_rng,
                            label_smoothing=ls, use_mask=use_mask, axis_name=None),
          donate_argnums=(0,), out_shardings=(self.replicated, self.replicated))
      self._eval = jax.jit(functools.partial(eval_step, model=model, use_mask=use_mask),
                           out_shardings=self.replicated)

  # State placement: `host_state` is the unreplicated state that Orbax saves/restores.
  def place_state(self, host_state):
    if self.mode == 'pmap':
      n = len(self.local_devices)
      # (devices, ...) copies, one per local device (what device_put_replicated did).
      return jax.device_put(
          jax.tree.map(lambda x: np.broadcast_to(np.asarray(x)[None],
                                                 (n,) + np.shape(x)), host_state),
          self.leading_axis)
    return jax.device_put(host_state, self.replicated)

  def host_state(self, state):
    """The state as Orbax saves it: global arrays replicated over every device.

    Under pmap the per-device copies become one global array (no copy between devices),
    which Orbax can also save from several processes; host-local pmap arrays it cannot.
    """
    if self.mode == 'pmap':
      return jax.tree.map(self._pmap_to_global, state)
    return state

  def _pmap_to_global(self, x):
    shards = sorted(x.addressable_shards, key=lambda s: s.device.id)
    return jax.make_array_from_single_device_arrays(
        x.shape[1:], self.save_sharding,
        [s.data.reshape(s.data.shape[1:]) for s in shards])  # drop the device axis

  def abstract_state(self, host_state):
    """Restore target: `host_state`'s shapes and dtypes, with the save sharding."""
    return jax.tree.map(
        lambda x: jax.ShapeDtypeStruct(np.shape(x), jnp.asarray(x).dtype,  # step: an int
                                       sharding=self.save_sharding),
        host_state)

  def place_batch(self, batch):
    if self.mode == 'pmap':
      # (devices, per_device, ...), row block i on local device i.
      return jax.device_put(input_pipeline.shard(batch, len(self.local_devices)),
                            self.leading_axis)
    return {k: jax.make_array_from_process_local_data(self.data_sharding, v)
            for k, v in batch.items()}

  def train(self, state, batch):
    state, metrics = self._train(state, batch)
    if self.mode == 'pmap':
      metrics = jax.tree.map(lambda x: x[0], metrics)
    return state, metrics

  def evaluate(self, state, batch):
    """Host-local (pmap) or global (jit) logits and losses of the batch."""
    logits, losses = self._eval(state, batch)
    if self.mode == 'pmap':
      logits = logits.reshape((-1,) + logits.shape[2:])
      losses = losses.reshape(-1)
    return logits, losses


def _gather_hosts(x: np.ndarray) -> np.ndarray:
  """Concatenates host-local rows of a global batch over processes (identity for one)."""
  if jax.process_count() == 1:
    return np.asarray(x)
  from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
  return np.asarray(multihost_utils.process_allgather(x, tiled=True))


def evaluate(runner: Runner, state, examples, config) -> dict[str, Any]:
  """Loss and predictions over every clip of `examples`, each counted exactly once."""
  labels = np.full(len(examples), -1, np.int64)
  preds = np.full(len(examples), -1, np.int64)
  probs = np.zeros((len(examples), config.model.num_classes), np.float32)
  loss_sum, seen = 0.0, 0
  batches = input_pipeline.eval_batches(
      examples, config.data, batch_size=config.eval_batch_size,
      process_index=jax.process_index(), process_count=jax.process_count())
  with contextlib.closing(input_pipeline.prefetch(batches)) as prefetched:
    for batch in prefetched:
      logits, losses = runner.evaluate(state, runner.place_batch(batch))
      if runner.mode == 'pmap':  # host-local rows: gather every host's
        logits = _gather_hosts(np.asarray(logits))
        losses = _gather_hosts(np.asarray(losses))
      else:  # global arrays, replicated on every host
        logits, losses = np.asarray(logits), np.asarray(losses)
      index = _gather_hosts(batch['index'])
      valid = index >= 0
      idx = index[valid]
      if np.any(labels[idx] >= 0):
        raise AssertionError('evaluation saw a clip twice')  # the pipeline guarantees once
      labels[idx] = examples.labels[idx]
      preds[idx] = np.argmax(logits[valid], -1)
      z = logits[valid] - logits[valid].max(-1, keepdims=True)
      probs[idx] = np.exp(z) / np.exp(z).sum(-1, keepdims=True)  # softmax
      loss_sum += float(np.sum(losses[valid]))
      seen += int(valid.sum())
  if seen != len(examples) or np.any(labels < 0):
    raise AssertionError(f'evaluation covered {seen} of {len(examples)} clips')
  return {'labels': labels, 'predictions': preds, 'probabilities': probs,
          'loss': loss_sum / max(seen, 1),
          'accuracy': float(np.mean(labels == preds)) if seen else 0.0,
          'num_examples': seen}


# ----------------------------------------------------------------------------- workdir


def _model_identity(config) -> dict[str, Any]:
  return {'name': config.model.name, 'num_classes': int(config.model.num_classes),
          'kwargs': dict(config.model.get('kwargs', {}) or {}),
          'input_shape': [int(s) for s in config.data.input_shape]}


def _has_checkpoints(workdir: pathlib.Path) -> list[pathlib.Path]:
  found = []
  for ckpt_dir in sorted(workdir.glob('fold_*/checkpoints')):
    if any(p.is_dir() and p.name.isdigit() for p in ckpt_dir.iterdir()):
      found.append(ckpt_dir)
  return found


def check_workdir(config, workdir: pathlib.Path) -> None:
  """Refuses a workdir whose checkpoints belong to another model (name, classes, shape)."""
  ident = _model_identity(config)
  path = workdir / 'model.json'
  if path.exists():
    recorded = json.loads(path.read_text())
    if recorded != ident and _has_checkpoints(workdir):
      raise ValueError(
          f'{workdir} holds checkpoints of a different model: {path} records {recorded}, '
          f'the config asks for {ident}. Use a new --workdir (or delete its fold_*/'
          'checkpoints) to train this model.')
  elif _has_checkpoints(workdir):
    raise ValueError(f'{workdir} holds checkpoints but no model.json; cannot tell which '
                     'model they belong to. Use a new --workdir.')


def _write_json(path: pathlib.Path, obj) -> None:
  path.parent.mkdir(parents=True, exist_ok=True)
  tmp = path.with_suffix(path.suffix + '.tmp')
  tmp.write_text(json.dumps(obj, indent=2, sort_keys=True, default=str))
  os.replace(tmp, path)


def _checkpoint_manager(fold_dir: pathlib.Path, config):
  import orbax.checkpoint as ocp  # pylint: disable=g-import-not-at-top
  options = ocp.CheckpointManagerOptions(
      max_to_keep=max(1, int(config.checkpoint.keep)), create=True,
      cleanup_tmp_directories=True, enable_async_checkpointing=True)
  return ocp.CheckpointManager((fold_dir / 'checkpoints').absolute(), options=options,
                               item_names=('state', 'meta'))


def _agree_on_step(step):
  """All hosts resume from process 0's latest step."""
  if jax.process_count() == 1:
    return step
  from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
  value = -1 if step is None else int(step)
  value = int(multihost_utils.broadcast_one_to_all(np.int64(value)))
  return None if value < 0 else value


# ----------------------------------------------------------------------------- training


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


def _check_finite(pending, fold: int, epoch: int, last_good: str):
  """Fetches pending per-step losses; raises NonFiniteLossError at the first bad one."""
  values = jax.device_get([(s, m['loss'], m['correct'], m['count']) for s, m in pending])
  for step, loss, _, _ in values:
    if not np.isfinite(loss):
      raise NonFiniteLossError(
          f'Non-finite training loss ({float(loss)}) in fold {fold}, epoch {epoch + 1}, '
          f'step {step}. Training stopped; the state was not saved. {last_good} Lower '
          'config.optimizer.learning_rate or set config.optimizer.grad_clip_norm.')
  return [(float(l), float(c), float(n)) for _, l, c, n in values]


def train_fold(config, workdir: pathlib.Path, fold_index: int, fold: splits.Fold,
               all_examples: input_pipeline.Examples, dataset_name: str) -> dict[str, Any]:
  """Trains and evaluates one fold; returns its metrics dict (with fold info)."""
  from ser_jax import metrics as metrics_lib  # pylint: disable=g-import-not-at-top
  from ser_jax import reports  # pylint: disable=g-import-not-at-top
  import orbax.checkpoint as ocp  # pylint: disable=g-import-not-at-top

  is_main = jax.process_index() == 0
  fold_dir = workdir / f'fold_{fold_index}'
  train_ex = input_pipeline.select_actors(all_examples, fold.train,
                                          dataset_name=dataset_name)
  test_ex = input_pipeline.select_actors(all_examples, fold.test, dataset_name=dataset_name)
  train_ex = input_pipeline.prepare_images(train_ex, config.data)
  test_ex = input_pipeline.prepare_images(test_ex, config.data)
  batch_size = int(config.batch_size)
  steps_per_epoch = input_pipeline.steps_per_epoch(len(train_ex), batch_size)
  num_epochs = int(config.num_epochs)
  log.info('Fold %d: train actors %s (%d clips, %d steps/epoch), test actors %s (%d clips)',
           fold_index, list(fold.train), len(train_ex), steps_per_epoch, list(fold.test),
           len(test_ex))

  model = build_model(config)
  rng = jax.random.fold_in(jax.random.PRNGKey(int(config.seed)), fold_index)
  init_rng, dropout_rng = jax.random.split(rng)
  lr_fn = create_learning_rate_fn(config, steps_per_epoch)
  tx = create_optimizer(config, lr_fn)
  host_state = create_train_state(config, model, init_rng, tx)
  runner = Runner(config, model, dropout_rng)

  mngr = _checkpoint_manager(fold_dir, config)
  history: list[dict[str, Any]] = []
  start_epoch = 0
  latest = _agree_on_step(mngr.latest_step())
  if latest is not None:
    restored = mngr.restore(latest, args=ocp.args.Composite(
        state=ocp.args.StandardRestore(runner.abstract_state(host_state)),
        meta=ocp.args.JsonRestore()))
    host_state = restored['state']
    meta = restored['meta']
    start_epoch = int(meta['epoch'])
    history = list(meta['history'])
    if int(host_state.step) != latest:
      raise ValueError(f'{fold_dir}: checkpoint {latest} holds step {int(host_state.step)}')
    log.info('Fold %d: resuming from checkpoint step %d (epoch %d of %d)', fold_index,
             latest, start_epoch, num_epochs)
    if start_epoch > num_epochs:
      log.warning('Fold %d: the checkpoint is from epoch %d, past config.num_epochs=%d; '
                  'evaluating it as it is', fold_index, start_epoch, num_epochs)
  state = runner.place_state(host_state)
  del host_state

  seed = (int(config.seed), fold_index)
  tb = _TensorBoard(workdir / 'tensorboard' / f'fold_{fold_index}' if is_main else None)
  progress = None
  if is_main:
    from tqdm.auto import tqdm  # pylint: disable=g-import-not-at-top
    progress = tqdm(total=num_epochs * steps_per_epoch,
                    initial=start_epoch * steps_per_epoch, desc=f'fold {fold_index}',
                    unit='step', dynamic_ncols=True, leave=True)
  every = max(1, int(config.checkpoint.every_epochs))
  log_every = max(1, int(config.log_every_steps))
  last_good = (f'Last good checkpoint: {fold_dir / "checkpoints"} step {latest}.'
               if latest is not None else 'No checkpoint was saved before it.')
  eval_result = None
  try:
    for epoch in range(start_epoch, num_epochs):
      t0 = time.time()
      step = int(epoch * steps_per_epoch)
      pending, totals = [], [0.0, 0.0, 0.0]  # loss*count, correct, count
      batches = input_pipeline.train_batches(
          train_ex, config.data, batch_size=batch_size,
          num_classes=int(config.model.num_classes), seed=seed, epoch=epoch,
          process_index=jax.process_index(), process_count=jax.process_count())
      # closing(): an error mid-epoch (e.g. a non-finite loss) also stops the prefetch thread.
      with contextlib.closing(input_pipeline.prefetch(batches)) as prefetched:
        for batch in prefetched:
          state, step_metrics = runner.train(state, runner.place_batch(batch))
          step += 1
          pending.append((step, step_metrics))
          if len(pending) >= log_every or step == (epoch + 1) * steps_per_epoch:
            for _, (loss, correct, count) in zip(
                pending, _check_finite(pending, fold_index, epoch, last_good)):
              totals[0] += loss * count
              totals[1] += correct
              totals[2] += count
            tb.scalars(step, {'train/loss_step': loss,
                              'train/learning_rate': float(lr_fn(step - 1))})
            if progress is not None:
              progress.update(len(pending))
              progress.set_postfix(epoch=epoch + 1, loss=f'{loss:.4f}')
            pending = []
      record = {'epoch': epoch + 1, 'step': step,
                'train_loss': totals[0] / max(totals[2], 1.0),
                'train_accuracy': totals[1] / max(totals[2], 1.0),
                'learning_rate': float(lr_fn(step - 1))}
      last_epoch = epoch + 1 == num_epochs
      if last_epoch or (epoch + 1) % max(1, int(config.eval_every_epochs)) == 0:
        eval_result = evaluate(runner, state, test_ex, config)
        record['eval_loss'] = eval_result['loss']
        record['eval_accuracy'] = eval_result['accuracy']
      record['epoch_seconds'] = time.time() - t0
      history.append(record)
      tb.scalars(step, {f'epoch/{k}': v for k, v in record.items()
                        if k not in ('epoch', 'step')})
      log.info('Fold %d epoch %d/%d: %s', fold_index, epoch + 1, num_epochs,
               ', '.join(f'{k}={v:.4g}' for k, v in record.items()
                         if isinstance(v, float)))
      if last_epoch or (epoch + 1) % every == 0:
        meta = {'epoch': epoch + 1, 'history': history, 'fold': fold_index,
                'model': _model_identity(config)}
        mngr.save(step, args=ocp.args.Composite(
            state=ocp.args.StandardSave(runner.host_state(state)),
            meta=ocp.args.JsonSave(meta)), force=True)
        last_good = f'Last good checkpoint: {fold_dir / "checkpoints"} step {step}.'
        log.info('Fold %d: checkpoint saved at step %d (epoch %d)', fold_index, step,
                 epoch + 1)
  finally:
    mngr.wait_until_finished()
    mngr.close()
    tb.close()
    if progress is not None:
      progress.close()

  if eval_result is None:  # already trained to num_epochs before this run: evaluate only
    eval_result = evaluate(runner, state, test_ex, config)
  fold_metrics = metrics_lib.classification_metrics(
      eval_result['labels'], eval_result['predictions'], int(config.model.num_classes))
  fold_metrics.update({'fold': fold_index, 'test_actors': list(fold.test),
                       'train_actors': list(fold.train), 'eval_loss': eval_result['loss'],
                       'num_train_examples': len(train_ex)})
  if is_main:
    class_names = (input_pipeline.CLASS_NAMES
                   if int(config.model.num_classes) == len(input_pipeline.CLASS_NAMES)
                   else None)
    reports.write_fold_report(fold_dir, fold_metrics, history, class_names)
  return fold_metrics


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str | os.PathLike, *,
                       examples: input_pipeline.Examples | None = None) -> dict[str, Any]:
  """Runs cross-validation as configured; returns the summary (mean/std over folds).

  Args:
    config: an experiment config (see configs/default.py).
    workdir: output folder (checkpoints, reports); rerunning with the same one resumes.
    examples: optional preloaded clips (tests, notebooks); default: read the TFDS dataset
      `config.data.name` (building it first when `config.data.download`).

  Returns:
    `ser_jax.metrics.summarize_folds` of the folds' metrics, plus `folds` (their metrics).
  """
  from ser_jax import metrics as metrics_lib  # pylint: disable=g-import-not-at-top
  from ser_jax import reports  # pylint: disable=g-import-not-at-top

  workdir = pathlib.Path(workdir)
  folds = get_folds(config)  # fold errors before anything slow
  build_model(config)  # unknown model names fail here, before data loading
  if config.parallel not in PARALLEL_MODES:
    raise ValueError(f'config.parallel must be one of {PARALLEL_MODES}, got '
                     f'{config.parallel!r}')
  input_pipeline.check_data_config(config.data)
  check_workdir(config, workdir)
  if jax.process_index() == 0:
    workdir.mkdir(parents=True, exist_ok=True)
    _write_json(workdir / 'model.json', _model_identity(config))
    _write_json(workdir / 'config.json', config.to_dict())

  dataset_name = config.data.name
  if examples is None:
    examples = input_pipeline.load_all(config.data)
  else:
    dataset_name = f'{dataset_name} (preloaded)'
  log.info('%d clips of actors %s; %d devices (%s), %d processes, parallel=%s',
           len(examples), sorted({int(a) for a in examples.actors}), jax.device_count(),
           jax.devices()[0].platform, jax.process_count(), config.parallel)
  # Resize once for all folds (each fold then only selects).
  examples = input_pipeline.prepare_images(examples, config.data)

  fold_results = []
  for fold_index, fold in folds:
    fold_results.append(train_fold(config, workdir, fold_index, fold, examples,
                                   dataset_name))
  summary = metrics_lib.summarize_folds(fold_results)
  if jax.process_index() == 0:
    class_names = (input_pipeline.CLASS_NAMES
                   if int(config.model.num_classes) == len(input_pipeline.CLASS_NAMES)
                   else None)
    reports.write_cv_report(workdir, fold_results, summary, config, class_names)
  mean = summary['mean']
  log.info('Cross-validation over %d folds: accuracy %.4f, precision %.4f, recall %.4f, '
           'F1 %.4f', len(fold_results), mean['accuracy'], mean['precision'],
           mean['recall'], mean['f1'])
  return dict(summary, folds=fold_results)
