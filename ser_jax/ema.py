"""Exponential moving average of the weights, kept inside the optimiser state.

`ema_transform(decay)` is an optax transformation placed last in the chain: it passes the
updates through unchanged and tracks `ema <- decay * ema + (1 - decay) * (params + updates)`,
i.e. the average of the parameters after each step. Living in the optimiser state, the
average is checkpointed, restored and replicated with it (no change to TrainState or the
train step). `ema_params(opt_state)` finds it again; `for_evaluation(state)` is the train state with
the averaged weights, what training evaluates.

BatchNorm running statistics are not averaged: evaluation pairs the averaged weights with
the current running statistics (themselves a moving average, of the recent batches).
"""
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax


class EmaState(NamedTuple):
  """The moving average of the parameters (same tree as the params)."""
  ema: Any


def ema_transform(decay: float) -> optax.GradientTransformation:
  """Tracks an exponential moving average of the parameters; updates pass unchanged."""
  if not 0.0 < decay < 1.0:
    raise ValueError(f'config.optimizer.ema_decay must be in (0, 1), got {decay}')

  def init_fn(params):
    # A copy: the train step donates the state, and a buffer may not be donated twice.
    return EmaState(ema=jax.tree.map(lambda p: jnp.array(p, copy=True), params))

  def update_fn(updates, state, params=None):
    if params is None:
      raise ValueError('ema_transform needs the params (optax passes them in apply_updates '
                       'chains via TrainState.apply_gradients)')
    ema = jax.tree.map(lambda e, p, u: decay * e + (1.0 - decay) * (p + u),
                       state.ema, params, updates)
    return updates, EmaState(ema=ema)

  return optax.GradientTransformation(init_fn, update_fn)


def ema_params(opt_state) -> Any:
  """The averaged parameters held in `opt_state`; None when no EmaState is in it."""
  found = [s for s in jax.tree.leaves(opt_state, is_leaf=lambda x: isinstance(x, EmaState))
           if isinstance(s, EmaState)]
  if len(found) > 1:
    raise ValueError(f'the optimiser state holds {len(found)} EmaStates; expected one')
  return found[0].ema if found else None


def for_evaluation(state):
  """`state` with the averaged weights when its optimiser keeps an average, else `state`."""
  averaged = ema_params(state.opt_state)
  return state if averaged is None else state.replace(params=averaged)
