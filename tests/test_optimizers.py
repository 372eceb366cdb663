import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from configs import default
from hybridcovid import errors
from hybridcovid.training import optimizers


def _config(**overrides):
  config = default.get_config().train
  config.update(overrides)
  return config


def test_warmup_cosine_rises_linearly_peaks_and_decays_to_zero():
  schedule = optimizers.learning_rate_schedule(
      _config(schedule='warmup_cosine', learning_rate=0.1, warmup_epochs=1, epochs=5), 10)
  assert float(schedule(0)) == 0.0
  assert float(schedule(5)) == pytest.approx(0.05)
  assert float(schedule(10)) == pytest.approx(0.1)
  # Half-way through the cosine part (steps 10..50): half the peak.
  assert float(schedule(30)) == pytest.approx(0.05, abs=1e-6)
  assert float(schedule(50)) == pytest.approx(0.0, abs=1e-9)
  constant = optimizers.learning_rate_schedule(_config(learning_rate=0.3), 10)
  assert float(constant(0)) == float(constant(999)) == pytest.approx(0.3)


def test_head_only_epochs_leave_backbone_parameters_untouched():
  params = {'resnet50': {'w': jnp.ones(3)}, 'hidden': {'w': jnp.ones(3)},
            'logits': {'w': jnp.ones(2)}}
  grads = jax.tree.map(jnp.ones_like, params)
  optimizer = optimizers.create_optimizer(
      _config(optimizer='sgd', learning_rate=0.1, head_only_epochs=1,
              finetune_learning_rate_factor=0.5), steps_per_epoch=2)
  state = optimizer.init(params)
  history = []
  for _ in range(3):
    updates, state = optimizer.update(grads, state, params)
    params = optax.apply_updates(params, updates)
    history.append(jax.tree.map(float, {k: v['w'][0] for k, v in params.items()}))
  assert [h['resnet50'] for h in history[:2]] == [1.0, 1.0]
  assert history[0]['hidden'] == pytest.approx(0.9)
  assert history[1]['hidden'] == pytest.approx(0.9 - 0.1 * 1.9)  # Momentum 0.9.
  # Step 3, the first fine-tuning step: a fresh SGD step of 0.5 * 0.1, with no
  # momentum carried over from the frozen steps.
  assert history[2]['resnet50'] == pytest.approx(0.95)


def test_adam_starts_afresh_after_the_head_only_epochs():
  params = {'efficientnetb0': {'w': jnp.zeros(2)}, 'logits': {'w': jnp.zeros(2)}}
  grads = {'efficientnetb0': {'w': jnp.array([2.0, -0.5])}, 'logits': {'w': jnp.ones(2)}}
  optimizer = optimizers.create_optimizer(
      _config(learning_rate=0.01, head_only_epochs=3, finetune_learning_rate_factor=1.0), 1)
  state = optimizer.init(params)
  for _ in range(4):
    updates, state = optimizer.update(grads, state, params)
  # Adam's first step moves each weight by the learning rate against its gradient.
  np.testing.assert_allclose(updates['efficientnetb0']['w'], [-0.01, 0.01], rtol=1e-4)


def test_clipping_and_weight_decay():
  params = {'hidden': {'w': jnp.array([3.0, 4.0])}}
  clipped = optimizers.create_optimizer(
      _config(optimizer='sgd', learning_rate=1.0, gradient_clip_norm=1.0), 1)
  updates, _ = clipped.update({'hidden': {'w': jnp.array([3.0, 4.0])}},
                              clipped.init(params), params)
  np.testing.assert_allclose(updates['hidden']['w'], [-0.6, -0.8], rtol=1e-6)
  decayed = optimizers.create_optimizer(
      _config(optimizer='sgd', learning_rate=1.0, weight_decay=0.1), 1)
  updates, _ = decayed.update({'hidden': {'w': jnp.zeros(2)}}, decayed.init(params), params)
  np.testing.assert_allclose(updates['hidden']['w'], [-0.3, -0.4], rtol=1e-6)


def test_unknown_names_are_user_errors():
  with pytest.raises(errors.UserError, match="optimizer='lion'"):
    optimizers.create_optimizer(_config(optimizer='lion'), 1)
  with pytest.raises(errors.UserError, match="schedule='step'"):
    optimizers.learning_rate_schedule(_config(schedule='step'), 1)


def test_fine_tuning_follows_the_head_schedule_scaled():
  config = _config(optimizer='sgd', learning_rate=0.1, schedule='warmup_cosine',
                   warmup_epochs=1, epochs=6, head_only_epochs=2,
                   finetune_learning_rate_factor=0.1)
  params = {'resnet50': {'w': jnp.zeros(1)}, 'hidden': {'w': jnp.zeros(1)}}
  grads = jax.tree.map(jnp.ones_like, params)
  optimizer = optimizers.create_optimizer(config, steps_per_epoch=5)
  state = optimizer.init(params)
  for _ in range(11):  # Steps 0..10; step 10 is the first fine-tuning step.
    updates, state = optimizer.update(grads, state, params)
  head_rate = float(optimizers.learning_rate_schedule(config, 5)(10))
  assert float(updates['resnet50']['w'][0]) == pytest.approx(-0.1 * head_rate)


def test_the_head_learns_at_its_own_fraction_of_the_rate():
  params = {'resnet50': {'w': jnp.zeros(2)}, 'hidden': {'w': jnp.zeros(2)},
            'logits': {'w': jnp.zeros(2)}}
  grads = jax.tree.map(lambda x: x + jnp.array([1.0, -3.0]), params)
  optimizer = optimizers.create_optimizer(
      _config(learning_rate=0.01, head_learning_rate_factor=0.1), 1)
  updates, _ = optimizer.update(grads, optimizer.init(params), params)
  # Adam's first step moves each weight by its group's rate against its gradient.
  np.testing.assert_allclose(updates['resnet50']['w'], [-0.01, 0.01], rtol=1e-4)
  for name in ('hidden', 'logits'):
    np.testing.assert_allclose(updates[name]['w'], [-0.001, 0.001], rtol=1e-4)
