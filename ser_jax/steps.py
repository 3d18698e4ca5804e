"""The pure parts of training: state, optimiser, learning-rate schedule, train and eval steps.

Nothing here knows about devices: `train_step` and `eval_step` work on a device-local batch
(under `pmap`, with `axis_name` set, they reduce across devices) or on a global one (under
`jit`); `ser_jax.parallel` compiles and places them.
"""

from __future__ import annotations

import re
from typing import Any, Callable, Sequence

from flax.training import train_state
import jax
from jax import lax
import jax.numpy as jnp
import optax

from ser_jax import ema
from ser_jax import errors


class TrainState(train_state.TrainState):
  """Flax TrainState plus the BatchNorm running statistics (empty dict when none)."""
  batch_stats: Any = None


def create_state(apply_fn, variables, tx) -> TrainState:
  """A step-0 TrainState of `variables` (`{'params'[, 'batch_stats']}`) with optimiser `tx`."""
  return TrainState.create(apply_fn=apply_fn, params=variables['params'], tx=tx,
                           batch_stats=variables.get('batch_stats') or {})


# Schedules whose value at a step depends on config.num_epochs (the decay length), so a
# resumed run may not change num_epochs under them (config_lib.resume_differences).
SCHEDULES_USING_NUM_EPOCHS = ('warmup_cosine',)


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
  raise errors.UserError("config.schedule.name must be 'constant' or 'warmup_cosine', got "
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
    raise errors.UserError("config.optimizer.name must be 'adam_l2' or 'adamw', got "
                           f'{oc.name!r}')
  decay = float(oc.get('layer_decay', 1.0))
  if decay != 1.0:
    parts.append(scale_by_layer(tuple(oc.get('layer_groups', ()) or ()), decay))
  tx = only_trainable(optax.chain(*parts), oc.get('trainable', ''))
  if float(oc.get('ema_decay', 0.0) or 0.0):
    # After the freezing: the average covers every param (a frozen one's is itself), so it
    # can stand in for the params at evaluation.
    tx = optax.chain(tx, ema.ema_transform(float(oc.ema_decay)))
  return tx


def only_trainable(tx: optax.GradientTransformation, pattern: str
                   ) -> optax.GradientTransformation:
  """`tx` for the params whose '/'-joined path (e.g. 'classifier_5/kernel') matches the
  `pattern` regex (re.search); zero updates for all others. '' trains everything.

  The frozen params get `optax.set_to_zero()` instead of `tx`, so neither their gradient nor
  L2 / weight decay (which act on the param itself) can move them, and they hold no Adam
  state. A pattern matching no param is an error (raised when `tx.init` sees the params).
  """
  if not pattern:
    return tx
  try:
    regex = re.compile(pattern)
  except re.error as e:
    raise errors.UserError(f'config.optimizer.trainable: invalid regex {pattern!r}: {e}'
                           ) from None

  def labels(params):
    tree = jax.tree_util.tree_map_with_path(
        lambda path, _: 'train' if regex.search(_path_name(path)) else 'freeze', params)
    if 'train' not in jax.tree.leaves(tree):
      names = [_path_name(p) for p, _ in jax.tree_util.tree_flatten_with_path(params)[0]]
      raise errors.UserError(f'config.optimizer.trainable={pattern!r} matches no parameter; '
                             f'parameters are e.g. {names[:5]}')
    return tree

  return optax.multi_transform({'train': tx, 'freeze': optax.set_to_zero()}, labels)


def scale_by_layer(groups: Sequence[str], decay: float) -> optax.GradientTransformation:
  """Layer-wise learning-rate decay: multiplies the updates of the params matching
  `groups[k]` (the first regex that matches, re.search on '/'-joined paths; groups ordered
  from the output down) by `decay ** k`.

  Inside `only_trainable`, so only trainable params need a group; one with none is an error
  (raised when `tx.init` sees the params), as is a bad regex or no group at all.
  """
  if not groups:
    raise errors.UserError(f'config.optimizer.layer_decay={decay} needs '
                           'config.optimizer.layer_groups: the regexes of the layers, from the '
                           'output down')
  try:
    regexes = [re.compile(g) for g in groups]
  except re.error as e:
    raise errors.UserError(f'config.optimizer.layer_groups: invalid regex: {e}') from None

  def factor(path, _) -> float:
    name = _path_name(path)
    for depth, regex in enumerate(regexes):
      if regex.search(name):
        return decay ** depth
    raise errors.UserError(f'config.optimizer.layer_groups: no group matches the trainable '
                           f'parameter {name!r}; groups are {tuple(groups)}')

  def init(params):
    jax.tree_util.tree_map_with_path(factor, params)  # every param has a group
    return optax.EmptyState()

  def update(updates, state, params=None):
    del params
    scales = jax.tree_util.tree_map_with_path(factor, updates)
    return jax.tree.map(lambda u, s: u * s, updates, scales), state

  return optax.GradientTransformation(init, update)


def _path_name(path) -> str:
  return '/'.join(str(getattr(k, 'key', k)) for k in path)


def model_variables(state) -> dict:
  """The `{'params', 'batch_stats'}` a model applies (no batch_stats when it has none)."""
  v = {'params': state.params}
  if state.batch_stats:
    v['batch_stats'] = state.batch_stats
  return v


def train_step(state: TrainState, batch, *, model, base_rng, label_smoothing: float,
               use_mask: bool, axis_name: str | None):
  """One optimiser step on a (device-local or global) batch; returns (state, metrics).

  The loss is the weighted mean over real rows (`batch['weight']` 1) of the global batch.
  `nonfinite_inputs` counts the global batch's rows whose features hold NaN or Inf:
  such inputs need not make the loss non-finite, so training checks them apart.
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
  image = batch['image']
  nonfinite = jnp.sum(~jnp.all(jnp.isfinite(image), axis=tuple(range(1, image.ndim))))
  batch_stats = new_vars.get('batch_stats', state.batch_stats)
  if axis_name is not None:
    grads = lax.psum(grads, axis_name)
    loss = lax.psum(loss, axis_name)
    correct = lax.psum(correct, axis_name)
    nonfinite = lax.psum(nonfinite, axis_name)
    batch_stats = lax.pmean(batch_stats, axis_name)
  new_state = state.apply_gradients(grads=grads, batch_stats=batch_stats)
  return new_state, {'loss': loss, 'correct': correct, 'count': count,
                     'nonfinite_inputs': nonfinite}


def eval_step(state: TrainState, batch, *, model, use_mask: bool):
  """Logits `(B, C)` and per-example loss `(B,)` of a batch (padding rows included)."""
  mask = batch['mask'] if use_mask else None
  logits = model.apply(model_variables(state), batch['image'], train=False, mask=mask)
  logits = logits.astype(jnp.float32)
  labels = jax.nn.one_hot(batch['label'], logits.shape[-1])
  return logits, optax.softmax_cross_entropy(logits, labels)


