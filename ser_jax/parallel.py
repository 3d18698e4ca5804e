"""Compiled steps and data placement: `PmapRunner` and `JitRunner`, one interface.

- `PmapRunner`: the step runs under `jax.pmap(axis_name='batch')` over the local devices.
  Each device gets `batch_size / device_count` rows; the loss is normalised by the global
  count of real rows (`lax.psum`), so summing the per-device gradients (`lax.psum`) gives
  the gradient of the global-batch mean; BatchNorm running statistics are averaged
  (`lax.pmean`) after each step. If the model has a BatchNorm axis field (`bn_axis_name`
  or `axis_name`), it is set to 'batch' so the batch statistics themselves are global.
  Dropout keys are folded with the device index.
- `JitRunner`: the same step under `jax.jit` on a 1-D device mesh ('batch'); the batch is
  a global array sharded over the mesh, parameters are replicated, and XLA inserts the
  collectives. Random numbers (dropout) are sharding-invariant here, so results match one
  device even with dropout.

Either way, the same global batch gives the same update on 1 or N devices (up to float
summation order), for models whose BatchNorm sees the global batch.

Both take `host_state` (the unreplicated state, as `ser_jax.checkpoints` saves and
restores it) to `place_state`, give it back from `host_state`, and return training metrics
and evaluation outputs as host values covering the whole global batch, so callers never
ask which mode runs.
"""

from __future__ import annotations

import functools
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from ser_jax import config_lib
from ser_jax import errors
from ser_jax import input_pipeline
from ser_jax import steps

AXIS = 'batch'


def make_runner(config, model, base_rng) -> PmapRunner | JitRunner:
  """The runner of `config.parallel` for `model`; `base_rng` seeds dropout."""
  runners = {'pmap': PmapRunner, 'jit': JitRunner}
  if config.parallel not in runners:
    raise errors.UserError(f'config.parallel must be one of {config_lib.PARALLEL_MODES}, '
                           f'got {config.parallel!r}')
  return runners[config.parallel](config, model, base_rng)


def _step_options(config) -> dict[str, Any]:
  return {'use_mask': config.data.crop_mode == 'crop_pad'}


def _with_bn_axis(model, axis_name: str):
  """Makes BatchNorm batch statistics cross-device when the model exposes the axis field."""
  for field in ('bn_axis_name', 'axis_name'):
    if field in getattr(type(model), '__dataclass_fields__', {}) and getattr(
        model, field) is None:
      return model.clone(**{field: axis_name})
  return model


def gather_hosts(x: np.ndarray) -> np.ndarray:
  """Concatenates host-local rows of a global batch over processes (identity for one)."""
  if jax.process_count() == 1:
    return np.asarray(x)
  from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
  return np.asarray(multihost_utils.process_allgather(x, tiled=True))


class _Runner:
  """What both runners share: `save_sharding` (set by each) and the restore target."""
  save_sharding: jax.sharding.Sharding

  def abstract_state(self, host_state):
    """Restore target: `host_state`'s shapes and dtypes, in the save sharding."""
    return jax.tree.map(
        lambda x: jax.ShapeDtypeStruct(np.shape(x), jnp.asarray(x).dtype,  # step: an int
                                       sharding=self.save_sharding),
        host_state)


class PmapRunner(_Runner):
  """`jax.pmap` over the local devices; state and batches carry a leading device axis."""

  def __init__(self, config, model, base_rng):
    self.local_devices = jax.local_devices()
    # Arrays with a leading device axis, one slice per local device, as pmap expects.
    self._leading_axis = jax.sharding.NamedSharding(
        jax.sharding.Mesh(np.asarray(self.local_devices), (AXIS,)),
        jax.sharding.PartitionSpec(AXIS))
    self.save_sharding = jax.sharding.NamedSharding(
        jax.sharding.Mesh(np.asarray(jax.devices()), (AXIS,)), jax.sharding.PartitionSpec())
    options = _step_options(config)
    self._train = jax.pmap(
        functools.partial(steps.train_step, model=_with_bn_axis(model, AXIS),
                          base_rng=base_rng,
                          label_smoothing=float(config.optimizer.label_smoothing),
                          axis_name=AXIS, **options),
        axis_name=AXIS, donate_argnums=(0,))
    self._eval = jax.pmap(functools.partial(steps.eval_step, model=model, **options),
                          axis_name=AXIS)

  def place_state(self, host_state):
    n = len(self.local_devices)
    # (devices, ...) copies, one per local device (what device_put_replicated did).
    return jax.device_put(
        jax.tree.map(lambda x: np.broadcast_to(np.asarray(x)[None], (n,) + np.shape(x)),
                     host_state),
        self._leading_axis)

  def host_state(self, state):
    """The state as Orbax saves it: global arrays replicated over every device.

    The per-device copies become one global array (no copy between devices), which
    Orbax can also save from several processes; host-local pmap arrays it cannot.
    (Orbax's `utils.fully_replicated_host_local_array_to_global_array` does the same
    but keeps the device axis when there is one local device: measured with orbax 0.12.8.)
    """
    return jax.tree.map(self._to_global, state)

  def _to_global(self, x):
    shards = sorted(x.addressable_shards, key=lambda s: s.device.id)
    return jax.make_array_from_single_device_arrays(
        x.shape[1:], self.save_sharding,
        [s.data.reshape(s.data.shape[1:]) for s in shards])  # drop the device axis

  def place_batch(self, batch):
    # (devices, per_device, ...), row block i on local device i.
    return jax.device_put(input_pipeline.shard(batch, len(self.local_devices)),
                          self._leading_axis)

  def train(self, state, batch):
    """One step; metrics are the global batch's (every device holds the same copy)."""
    state, metrics = self._train(state, batch)
    return state, jax.tree.map(lambda x: x[0], metrics)

  def evaluate(self, state, batch) -> tuple[np.ndarray, np.ndarray]:
    """Logits `(B, C)` and losses `(B,)` of the global batch, on the host."""
    logits, losses = self._eval(state, batch)
    logits = np.asarray(logits).reshape((-1,) + logits.shape[2:])
    losses = np.asarray(losses).reshape(-1)
    return gather_hosts(logits), gather_hosts(losses)  # every host's rows


class JitRunner(_Runner):
  """`jax.jit` on a 1-D mesh over every device: global batches, replicated state."""

  def __init__(self, config, model, base_rng):
    mesh = jax.sharding.Mesh(np.asarray(jax.devices()), (AXIS,))
    self.save_sharding = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())
    self._data_sharding = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec(AXIS))
    options = _step_options(config)
    replicated = self.save_sharding
    self._train = jax.jit(
        functools.partial(steps.train_step, model=model, base_rng=base_rng,
                          label_smoothing=float(config.optimizer.label_smoothing),
                          axis_name=None, **options),
        donate_argnums=(0,), out_shardings=(replicated, replicated))
    self._eval = jax.jit(functools.partial(steps.eval_step, model=model, **options),
                         out_shardings=replicated)

  def place_state(self, host_state):
    return jax.device_put(host_state, self.save_sharding)

  def host_state(self, state):
    return state  # already global and replicated

  def place_batch(self, batch):
    return {k: jax.make_array_from_process_local_data(self._data_sharding, v)
            for k, v in batch.items()}

  def train(self, state, batch):
    return self._train(state, batch)

  def evaluate(self, state, batch) -> tuple[np.ndarray, np.ndarray]:
    logits, losses = self._eval(state, batch)
    return np.asarray(logits), np.asarray(losses)  # replicated on every host

