"""The one init path: the configured model and its variables, fresh, abstract or pretrained.

- `build_model(config)`: `ser_jax.models.get_model` with the config's name, classes,
  compute dtype and kwargs (tests register tiny models in `ser_jax.models.MODELS`).
- `init_variables(config, model, rng=..., abstract=False)`: `model.init` on one
  `(1, mel, time, 1)` input of `config.data.input_shape`; `abstract=True` traces it
  (`jax.eval_shape`: shapes and dtypes, no compile, no memory), which is all a restore
  target or a merge that replaces every leaf needs.
- `initial_variables(config, model, rng)`: what training starts from: fresh variables,
  merged with `config.init.pretrained` when set (`ser_jax.pretrained.init_from_pretrained`,
  which checks the weights against `config.data.frontend`).

Training, evaluation with imported weights and launch/import_weights.py all initialise
here.
"""

from __future__ import annotations

import functools
import logging
import os
import warnings

import flax
import jax
import jax.numpy as jnp

from ser_jax import errors

log = logging.getLogger(__name__)


def build_model(config):
  """The configured model (unbound Flax module).

  Raises:
    UserError: `config.model.name` is not registered (the message lists those that are).
  """
  from ser_jax import models  # pylint: disable=g-import-not-at-top
  kwargs = dict(config.model.get('kwargs', {}) or {})
  try:
    return models.get_model(config.model.name, num_classes=int(config.model.num_classes),
                            dtype=jnp.dtype(config.model.dtype), **kwargs)
  except (ValueError, TypeError) as e:  # unknown name, dtype or constructor argument
    raise errors.UserError(f'config.model: {e}') from None


def init_variables(config, model=None, *, rng=None, abstract: bool = False) -> dict:
  """Freshly initialised `{'params'[, 'batch_stats']}` of the configured model.

  Args:
    config: names the model and `data.input_shape` (mel, time).
    model: the module, if already built (`build_model(config)` otherwise).
    rng: PRNG key; split into the 'params' and 'dropout' streams (default: key 0).
    abstract: return `jax.ShapeDtypeStruct` leaves from a trace instead of values.
  """
  model = build_model(config) if model is None else model
  mel, time_ = (int(s) for s in config.data.input_shape)
  x = jnp.zeros((1, mel, time_, 1), jnp.float32)  # (batch, mel, time, channels)
  init_rng, dropout_rng = jax.random.split(jax.random.PRNGKey(0) if rng is None else rng)
  rngs = {'params': init_rng, 'dropout': dropout_rng}
  init = functools.partial(model.init, train=False)
  variables = jax.eval_shape(init, rngs, x) if abstract else jax.jit(init)(rngs, x)
  return dict(flax.core.unfreeze(variables))


def initial_variables(config, model, rng) -> dict:
  """Training's starting point: fresh variables, or merged with `config.init.pretrained`."""
  variables = init_variables(config, model, rng=rng)
  if config.init.pretrained:
    from ser_jax import pretrained  # pylint: disable=g-import-not-at-top
    variables = pretrained.init_from_pretrained(variables, config)
    log.info('Initialised from pretrained weights %s', config.init.pretrained)
  elif config.init.expect_pretrained:
    _loud_warning(
        f'config.init.expect_pretrained is True but config.init.pretrained is empty: '
        f'{config.model.name} is TRAINED FROM RANDOM INITIALISATION. Pass '
        '--config.init.pretrained=PATH (and --config.init.source) to fine-tune imported '
        'weights as the predecessor did.')
  return variables


def _loud_warning(message: str) -> None:
  banner = '!' * 78
  log.warning('\n%s\n%s\n%s', banner, message, banner)
  warnings.warn(message, stacklevel=3)


def check_pretrained_setting(config) -> None:
  """Checks `config.init` before any data is read or model compiled.

  Raises:
    UserError: the weights do not exist, a .pth has no known converter, or the weights
      were trained (PANNs) or imported for another front end than `config.data.frontend`.
  """
  path = config.init.pretrained
  if not path:
    return
  from ser_jax import convert  # pylint: disable=g-import-not-at-top
  from ser_jax import pretrained  # pylint: disable=g-import-not-at-top
  if not os.path.exists(path):
    raise errors.UserError(f'config.init.pretrained={path} does not exist')
  if not os.path.isdir(path) and config.init.source not in convert.SOURCES:
    raise errors.UserError(
        f'config.init.source={config.init.source!r}: a weights file ({path}) needs '
        f'a converter, one of {sorted(convert.SOURCES)}')
  pretrained.check_weights_frontend(path, config.init.source, config.data.frontend)
