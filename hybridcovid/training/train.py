"""Training state and the per-device train and eval steps.

The steps are written per device in the style of `jax.pmap` (axis name
`batch`): each device computes gradients on its share of the global batch,
gradients are summed across devices, and BatchNorm averages its statistics
over the same axis. `parallel.DataParallel` compiles them over the devices,
with `jax.shard_map` or `jax.pmap`.
"""

from typing import Any, Callable

from flax import struct
import flax.linen as nn
from flax.training import train_state
import jax
from jax import lax
import jax.numpy as jnp
import numpy as np
import optax

from hybridcovid import classes, convert, models

BATCH_AXIS = 'batch'
# What `train_step` reads of a batch.
BATCH_FIELDS = ('image', 'label', 'weight', 'mask')


class TrainState(train_state.TrainState):
  """Parameters, optimiser state, step, and BatchNorm running statistics."""
  batch_stats: Any


def initial_variables(config: Any) -> dict:
  """The configured classifier's fresh variables, with its pretrained backbones loaded."""
  size = config.data.image_size
  images = jnp.zeros((1, size, size, 3), jnp.uint8)
  variables = models.initialize(
      models.create_classifier(config.model, len(classes.of_config(config.data))),
      jax.random.key(config.seed), images)
  # Shared flags may name weights for both backbones; a model takes its own.
  pretrained = {name: config.model.pretrained[name] for name in config.model.backbones}
  return convert.load_pretrained(variables, pretrained)


def create_train_state(model: nn.Module, optimizer: optax.GradientTransformation,
                       variables: dict) -> TrainState:
  """A state holding `variables` (see `initial_variables`) for `model`."""
  params = variables['params']
  # One compiled program for the optimiser's zeros, not one per parameter shape.
  return TrainState(step=0, apply_fn=model.apply, params=params, tx=optimizer,
                    opt_state=jax.jit(optimizer.init)(params),
                    batch_stats=variables.get('batch_stats', {}))


def _replicated_shapes(tree: Any, mesh: jax.sharding.Mesh) -> Any:
  sharding = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())
  return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=sharding),
                      tree)


def abstract_train_state(model: nn.Module, optimizer: optax.GradientTransformation,
                         image_size: int, mesh: jax.sharding.Mesh) -> TrainState:
  """The shapes and dtypes of a state, replicated over `mesh`, computing nothing.

  The target to restore a checkpoint into without initialising a model first.
  """
  images = jax.ShapeDtypeStruct((1, image_size, image_size, 3), jnp.uint8)
  shapes = jax.eval_shape(
      lambda rng, images: create_train_state(model, optimizer, model.init(rng, images)),
      jax.random.key(0), images)
  return _replicated_shapes(shapes, mesh)


def abstract_batch(batch_size: int, image_size: int) -> dict[str, jax.ShapeDtypeStruct]:
  """The shapes and dtypes of a global training batch's `BATCH_FIELDS`, as the input
  pipeline gives them."""
  return {'image': jax.ShapeDtypeStruct((batch_size, image_size, image_size, 3), jnp.uint8),
          'label': jax.ShapeDtypeStruct((batch_size,), jnp.int32),
          'weight': jax.ShapeDtypeStruct((batch_size,), jnp.float32),
          'mask': jax.ShapeDtypeStruct((batch_size,), jnp.bool_)}


def abstract_variables(model: nn.Module, image_size: int, mesh: jax.sharding.Mesh) -> dict:
  """The shapes and dtypes of `model`'s 'params' and 'batch_stats', replicated over `mesh`:
  the part of a checkpoint that inference restores."""
  images = jax.ShapeDtypeStruct((1, image_size, image_size, 3), jnp.uint8)
  shapes = jax.eval_shape(model.init, jax.random.key(0), images)
  return _replicated_shapes({'params': shapes['params'],
                             'batch_stats': shapes.get('batch_stats', {})}, mesh)


class InferenceState(struct.PyTreeNode):
  """What inference needs of a trained classifier: its apply function, parameters and
  BatchNorm statistics; a `TrainState` without the optimiser."""
  apply_fn: Callable = struct.field(pytree_node=False)
  params: Any
  batch_stats: Any


def inference_state(state: TrainState) -> InferenceState:
  """`state`'s model, parameters and statistics (the same arrays, not copies)."""
  return InferenceState(apply_fn=state.apply_fn, params=state.params,
                        batch_stats=state.batch_stats)


def train_step(state: TrainState, batch: dict, rng: jax.Array
               ) -> tuple[TrainState, dict]:
  """One optimiser step on this device's share of the batch, inside a `batch` axis.

  The loss is the weighted cross-entropy over the global batch: per-example
  losses times `weight * mask`, summed, divided by the global sum of those
  weights. Each device's gradient of its share is summed over devices.
  """
  rng = jax.random.fold_in(jax.random.fold_in(rng, state.step),
                           lax.axis_index(BATCH_AXIS))
  weights = batch['weight'] * batch['mask']
  total_weight = lax.psum(jnp.sum(weights), BATCH_AXIS)

  def loss_fn(params):
    logits, updates = state.apply_fn(
        {'params': params, 'batch_stats': state.batch_stats}, batch['image'],
        train=True, rngs={'dropout': rng}, mutable=['batch_stats'])
    losses = optax.softmax_cross_entropy_with_integer_labels(logits, batch['label'])
    return jnp.sum(losses * weights) / jnp.maximum(total_weight, 1e-12), (logits, updates)

  (loss, (logits, updates)), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
  grads = lax.psum(grads, BATCH_AXIS)
  correct = jnp.sum((jnp.argmax(logits, -1) == batch['label']) * batch['mask'])
  metrics = {'loss': lax.psum(loss, BATCH_AXIS),
             'accuracy': lax.psum(correct, BATCH_AXIS)
                         / jnp.maximum(lax.psum(jnp.sum(batch['mask']), BATCH_AXIS), 1)}
  # BatchNorm averaged its statistics over the axis; the mean keeps the
  # replicated copies identical to the last bit.
  batch_stats = lax.pmean(updates['batch_stats'], BATCH_AXIS)
  state = state.apply_gradients(grads=grads, batch_stats=batch_stats)
  return state, metrics


def create_mesh(devices: list | None = None) -> jax.sharding.Mesh:
  """A one-dimensional mesh over `devices` (all devices by default)."""
  devices = jax.devices() if devices is None else devices
  return jax.sharding.Mesh(np.array(devices), (BATCH_AXIS,))


def replicate(tree: Any, mesh: jax.sharding.Mesh) -> Any:
  """`tree` placed whole on every device of `mesh`, as the compiled steps take and return it.

  Every process passes the same values. A state placed otherwise would make
  the first and second steps compile separately.
  """
  sharding = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())
  return jax.tree.map(
      lambda x: jax.make_array_from_process_local_data(sharding, np.asarray(x)), tree)


def eval_step(state: InferenceState, batch: dict) -> jax.Array:
  """COVID probabilities of this device's share of the batch, in inference mode."""
  return eval_features_step(state, batch)['probability']


def eval_features_step(state: InferenceState, batch: dict) -> dict[str, jax.Array]:
  """COVID probabilities, every class's probability and pooled backbone features (the
  head's input) of this device's share of the batch, in inference mode."""
  logits, intermediates = state.apply_fn(
      {'params': state.params, 'batch_stats': state.batch_stats}, batch['image'],
      train=False, mutable=['intermediates'])
  probabilities = jax.nn.softmax(logits)
  return {'probability': probabilities[:, classes.COVID], 'class_probabilities': probabilities,
          'features': intermediates['intermediates'][models.POOLED_FEATURES][0]}


def host_variables(state: TrainState | InferenceState) -> dict:
  """The state's 'params' and 'batch_stats' as this process's NumPy copies."""
  return jax.tree.map(lambda x: np.asarray(x.addressable_data(0)),
                      {'params': state.params, 'batch_stats': state.batch_stats})
