"""Optimiser and learning-rate schedules from the config's `train` section.

Backbone and head parameters can follow different schedules: with
`head_only_epochs > 0` the backbones stay fixed for that many epochs while
the head trains, then everything is fine-tuned, the backbones at
`finetune_learning_rate_factor` times the head's rate.
"""

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import ml_collections
import optax

from hybridcovid import errors
from hybridcovid.models import BACKBONES


def learning_rate_schedule(config: ml_collections.ConfigDict,
                           steps_per_epoch: int) -> optax.Schedule:
  """'constant', or 'warmup_cosine': linear warm-up, then cosine decay to zero."""
  total_steps = max(config.epochs * steps_per_epoch, 1)
  if config.schedule == 'constant':
    return optax.constant_schedule(config.learning_rate)
  if config.schedule == 'warmup_cosine':
    warmup_steps = min(int(config.warmup_epochs * steps_per_epoch), total_steps - 1)
    return optax.warmup_cosine_decay_schedule(
        init_value=0.0, peak_value=config.learning_rate, warmup_steps=warmup_steps,
        decay_steps=total_steps, end_value=0.0)
  raise errors.UserError(f'Unknown --config.train.schedule={config.schedule!r}; '
                         "choose 'constant' or 'warmup_cosine'.")


class FrozenState(NamedTuple):
  count: jnp.ndarray
  inner: optax.OptState


def frozen_until(boundary: int, inner: optax.GradientTransformation
                 ) -> optax.GradientTransformation:
  """Zero updates for the first `boundary` steps, then `inner`, starting afresh.

  `inner` sees no step before the boundary: momentum and Adam's moments and
  bias correction start at the boundary, as for a new optimiser.
  """

  def init(params):
    return FrozenState(jnp.zeros([], jnp.int32), inner.init(params))

  def update(updates, state, params=None):
    new_updates, new_inner = inner.update(updates, state.inner, params)
    frozen = state.count < boundary
    updates = jax.tree.map(lambda u: jnp.where(frozen, jnp.zeros_like(u), u), new_updates)
    kept = jax.tree.map(lambda old, new: jnp.where(frozen, old, new), state.inner, new_inner)
    return updates, FrozenState(state.count + 1, kept)

  return optax.GradientTransformation(init, update)


def parameter_groups(params: dict) -> dict[str, Any]:
  """Labels each top-level subtree 'backbone' or 'head'."""
  return {name: 'backbone' if name in BACKBONES else 'head' for name in params}


def create_optimizer(config: ml_collections.ConfigDict, steps_per_epoch: int
                     ) -> optax.GradientTransformation:
  """Adam (the default; AdamW when weight_decay > 0) or SGD with momentum, with
  optional global-norm gradient clipping and the head-only phase."""

  def optimizer(schedule):
    if config.optimizer == 'adam':
      if config.weight_decay > 0:
        return optax.adamw(schedule, weight_decay=config.weight_decay)
      return optax.adam(schedule)
    if config.optimizer == 'sgd':
      return optax.chain(optax.add_decayed_weights(config.weight_decay),
                         optax.sgd(schedule, momentum=0.9))
    raise errors.UserError(f'Unknown --config.train.optimizer={config.optimizer!r}; '
                           "choose 'adam' or 'sgd'.")

  schedule = learning_rate_schedule(config, steps_per_epoch)
  backbone = optimizer(schedule)
  if config.head_only_epochs > 0:
    boundary = config.head_only_epochs * steps_per_epoch
    factor = config.finetune_learning_rate_factor
    # The inner optimiser counts from the boundary; the schedule from step 0.
    backbone = frozen_until(
        boundary, optimizer(lambda count: factor * schedule(count + boundary)))
  head_factor = config.get('head_learning_rate_factor', 1.0)
  head = optimizer(schedule if head_factor == 1.0
                   else lambda count: head_factor * schedule(count))
  grouped = optax.multi_transform({'head': head, 'backbone': backbone}, parameter_groups)
  if config.gradient_clip_norm > 0:
    return optax.chain(optax.clip_by_global_norm(config.gradient_clip_norm), grouped)
  return grouped
