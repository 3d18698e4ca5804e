"""Tests of ser_jax/ema.py: weight averaging inside the optimiser state, for_evaluation."""
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from ser_jax import config_lib
from ser_jax import ema
from ser_jax import steps


def test_ema_tracks_the_parameters_after_each_step():
  tx = optax.chain(optax.sgd(1.0), ema.ema_transform(0.5))
  params = {'w': jnp.array([1.0, 2.0])}
  state = tx.init(params)
  averages = []
  for _ in range(2):
    updates, state = tx.update({'w': jnp.ones(2)}, state, params)
    params = optax.apply_updates(params, updates)  # w - 1 each step
    averages.append(np.asarray(ema.ema_params(state)['w']))
  np.testing.assert_allclose(params['w'], [-1.0, 0.0])
  # ema_1 = 0.5 w0 + 0.5 w1; ema_2 = 0.5 ema_1 + 0.5 w2.
  np.testing.assert_allclose(averages[0], [0.5, 1.5])
  np.testing.assert_allclose(averages[1], [-0.25, 0.75])
  assert ema.ema_params(optax.sgd(1.0).init(params)) is None
  with pytest.raises(ValueError, match=r'ema_decay must be in \(0, 1\)'):
    ema.ema_transform(1.0)


def test_for_evaluation_uses_the_average_when_configured():
  config = config_lib.default()
  config.optimizer.ema_decay = 0.9
  params = {'w': jnp.array([4.0])}
  state = steps.TrainState.create(apply_fn=None, params=params,
                                  tx=steps.create_optimizer(config, lambda _: 0.1))
  state = state.apply_gradients(grads={'w': jnp.array([10.0])})
  evaluated = ema.for_evaluation(state)
  averaged = ema.ema_params(state.opt_state)['w']
  assert float(state.params['w'][0]) != pytest.approx(float(averaged[0]))
  np.testing.assert_array_equal(evaluated.params['w'], averaged)
  np.testing.assert_allclose(averaged, 0.9 * 4.0 + 0.1 * np.asarray(state.params['w']))
  config.optimizer.ema_decay = 0.0
  plain = steps.TrainState.create(apply_fn=None, params=params,
                                  tx=steps.create_optimizer(config, lambda _: 0.1))
  assert ema.for_evaluation(plain) is plain


def test_the_average_covers_frozen_params_unchanged():
  """optimizer.trainable with ema_decay: the average is a full param tree (what evaluation
  swaps in); a frozen param's average is the param itself."""
  config = config_lib.default()
  config.optimizer.ema_decay = 0.5
  config.optimizer.trainable = '^head/'
  params = {'head': {'w': jnp.array([4.0])}, 'body': {'w': jnp.array([2.0])}}
  state = steps.TrainState.create(apply_fn=None, params=params,
                                  tx=steps.create_optimizer(config, lambda _: 0.1))
  state = state.apply_gradients(grads={'head': {'w': jnp.array([1.0])},
                                       'body': {'w': jnp.array([1.0])}})
  averaged = ema.ema_params(state.opt_state)
  assert float(state.params['body']['w'][0]) == 2.0
  assert float(averaged['body']['w'][0]) == 2.0
  np.testing.assert_allclose(averaged['head']['w'], 0.5 * 4.0 + 0.5 * state.params['head']['w'])
  assert float(state.params['head']['w'][0]) != 4.0
