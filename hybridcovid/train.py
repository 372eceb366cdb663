"""Training state and the data-parallel train step.

The step is written per device in the style of `jax.pmap` (axis name
`batch`): each device computes gradients on its share of the global batch,
gradients are summed across devices, and BatchNorm averages its statistics
over the same axis. `compile_train_step` runs it with `jax.jit` over
`jax.shard_map` on a one-dimensional mesh of devices (a mesh of one device
included), or under `jax.pmap`; both give the same result.
"""

from typing import Any, Callable

import flax.linen as nn
from flax.training import train_state
import jax
from jax import lax
import jax.numpy as jnp
import numpy as np
import optax

from hybridcovid import convert, models

BATCH_AXIS = 'batch'


class TrainState(train_state.TrainState):
  """Parameters, optimiser state, step, and BatchNorm running statistics."""
  batch_stats: Any


def initial_variables(config: Any) -> dict:
  """The configured classifier's fresh variables, with its pretrained backbones loaded."""
  size = config.data.image_size
  images = jnp.zeros((1, size, size, 3), jnp.uint8)
  rng = jax.random.key(config.seed)
  init = jax.jit(models.create_classifier(config.model).init).lower(rng, images)
  # Initialisation runs once: on CPU, optimising its hundreds of random-number
  # kernels takes longer than running them unoptimised.
  options = {'xla_backend_optimization_level': 0} if jax.default_backend() == 'cpu' else {}
  variables = init.compile(compiler_options=options)(rng, images)
  # Shared flags may name weights for both backbones; a model takes its own.
  pretrained = {name: config.model.pretrained[name] for name in config.model.backbones}
  return convert.load_pretrained(variables, pretrained)


def create_train_state(model: nn.Module, optimizer: optax.GradientTransformation,
                       variables: dict) -> TrainState:
  """A state holding `variables` (see `initial_variables`) for `model`."""
  return TrainState.create(apply_fn=model.apply, params=variables['params'],
                           batch_stats=variables.get('batch_stats', {}), tx=optimizer)


def abstract_train_state(model: nn.Module, optimizer: optax.GradientTransformation,
                         image_size: int, mesh: jax.sharding.Mesh) -> TrainState:
  """The shapes and dtypes of a state, replicated over `mesh`, computing nothing.

  The target to restore a checkpoint into without initialising a model first.
  """
  images = jax.ShapeDtypeStruct((1, image_size, image_size, 3), jnp.uint8)
  shapes = jax.eval_shape(
      lambda rng, images: create_train_state(model, optimizer, model.init(rng, images)),
      jax.random.key(0), images)
  sharding = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())
  return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=sharding),
                      shapes)


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


def compile_train_step(mesh: jax.sharding.Mesh, parallel: str = 'shard_map'
                       ) -> Callable[[TrainState, dict, jax.Array], tuple[TrainState, dict]]:
  """`train_step` over every device of `mesh`: (state, global batch, rng) -> (state, metrics).

  'shard_map' compiles it with `jax.jit` over `jax.shard_map`, donating the
  old state; 'pmap' runs the same function under `jax.pmap`, replicating
  the state in and out. The state goes in and comes out replicated.
  """
  replicated = jax.sharding.PartitionSpec()
  split = jax.sharding.PartitionSpec(BATCH_AXIS)
  if parallel == 'shard_map':
    # check_vma=False gives pmap semantics: gradients of the replicated
    # parameters stay per device until train_step sums them itself.
    sharded = jax.shard_map(train_step, mesh=mesh, in_specs=(replicated, split, replicated),
                            out_specs=(replicated, replicated), check_vma=False)
    return jax.jit(sharded, donate_argnums=0)
  if parallel == 'pmap':
    devices = list(mesh.devices.flat)
    stepped = jax.pmap(train_step, axis_name=BATCH_AXIS, in_axes=(0, 0, None),
                       devices=devices)

    def pmap_step(state, batch, rng):
      state = jax.tree.map(
          lambda x: jnp.broadcast_to(jnp.asarray(x), (len(devices), *jnp.shape(x))), state)
      shards = jax.tree.map(lambda x: x.reshape(len(devices), -1, *x.shape[1:]), batch)
      state, metrics = stepped(state, shards, rng)
      return jax.tree.map(lambda x: x[0], (state, metrics))

    return pmap_step
  raise ValueError(f"Unknown parallel mode {parallel!r}; choose 'shard_map' or 'pmap'.")


def eval_step(state: TrainState, batch: dict) -> jax.Array:
  """COVID probabilities of this device's share of the batch, in inference mode."""
  return eval_features_step(state, batch)['probability']


def eval_features_step(state: TrainState, batch: dict) -> dict[str, jax.Array]:
  """COVID probabilities and pooled backbone features (the head's input) of this
  device's share of the batch, in inference mode."""
  logits, intermediates = state.apply_fn(
      {'params': state.params, 'batch_stats': state.batch_stats}, batch['image'],
      train=False, mutable=['intermediates'])
  return {'probability': jax.nn.softmax(logits)[:, 1],
          'features': intermediates['intermediates'][models.POOLED_FEATURES][0]}


def compile_eval_step(mesh: jax.sharding.Mesh, step: Callable[[TrainState, dict], Any]
                      = eval_step) -> Callable[[TrainState, dict], Any]:
  """`step` (`eval_step` or `eval_features_step`) over every device of `mesh`:
  (state, global batch) -> its per-example outputs, split over the devices."""
  split = jax.sharding.PartitionSpec(BATCH_AXIS)
  return jax.jit(jax.shard_map(step, mesh=mesh,
                               in_specs=(jax.sharding.PartitionSpec(), split),
                               out_specs=split, check_vma=False))


def host_variables(state: TrainState) -> dict:
  """The state's 'params' and 'batch_stats' as this process's NumPy copies."""
  return jax.tree.map(lambda x: np.asarray(x.addressable_data(0)),
                      {'params': state.params, 'batch_stats': state.batch_stats})
