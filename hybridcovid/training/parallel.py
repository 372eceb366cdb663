"""Data parallelism over every device: where the state and the batches live, and the compiled steps.

Two modes run the same per-device functions of `train` (axis name `batch`)
and give the same result:

- 'shard_map': `jax.jit` over `jax.shard_map` on a one-dimensional mesh. The
  state is one logical copy replicated over the mesh; a batch is (B, ...),
  split over the devices.
- 'pmap': `jax.pmap`, as Flax's ImageNet example trains. The state carries a
  leading device axis (one replica per device); a batch is (D, B/D, ...).

In both, the state is placed once, stays on the devices from step to step
and is donated to each train step. Checkpoints and reports read the state
as one logical copy (`logical_state`), so both modes share one checkpoint
format; `device_state` turns such a copy back into the mode's layout.
"""

import collections
from typing import Any, Callable, Iterable, Iterator

import jax
from jax.experimental import multihost_utils
import numpy as np

from hybridcovid.training import train

PARALLEL_MODES = ('shard_map', 'pmap')


class DataParallel:
  """A data-parallel layout of the state and batches over `devices` (all by default)."""

  def __init__(self, mode: str = 'shard_map', devices: list | None = None):
    if mode not in PARALLEL_MODES:
      raise ValueError(f'Unknown parallel mode {mode!r}; choose from {list(PARALLEL_MODES)} '
                       '(--config.parallel).')
    self.mode = mode
    self.mesh = train.create_mesh(devices)
    self._split = jax.sharding.NamedSharding(self.mesh,
                                             jax.sharding.PartitionSpec(train.BATCH_AXIS))
    self._replicated = jax.sharding.NamedSharding(self.mesh, jax.sharding.PartitionSpec())
    self._eval_steps = {}

  @property
  def device_count(self) -> int:
    return self.mesh.size

  def device_state(self, state: Any) -> Any:
    """`state`, replicated over the mesh (`train.replicate`, a restored checkpoint), in
    this mode's layout; no copy leaves the devices."""
    if self.mode == 'shard_map':
      return state
    return jax.tree.map(lambda x: jax.make_array_from_single_device_arrays(
        (self.device_count, *x.shape), self._split,
        [shard.data[None] for shard in x.addressable_shards]), state)

  def logical_state(self, state: Any) -> Any:
    """`state` as one logical copy replicated over the mesh: what checkpoints store."""
    if self.mode == 'shard_map':
      return state
    return jax.tree.map(lambda x: jax.make_array_from_single_device_arrays(
        x.shape[1:], self._replicated,
        [shard.data.reshape(x.shape[1:]) for shard in x.addressable_shards]), state)

  def abstract_device_state(self, abstract: Any) -> Any:
    """The shapes, dtypes and shardings `device_state` gives a state shaped like `abstract`
    (`train.abstract_train_state`)."""
    if self.mode == 'shard_map':
      return abstract
    return jax.tree.map(lambda x: jax.ShapeDtypeStruct((self.device_count, *x.shape), x.dtype,
                                                       sharding=self._split), abstract)

  def abstract_device_batch(self, abstract: dict) -> dict[str, jax.ShapeDtypeStruct]:
    """The shapes, dtypes and shardings `device_batch` gives a global batch shaped like
    `abstract` (`train.abstract_batch`)."""
    def place(x):
      shape = x.shape if self.mode == 'shard_map' else (
          self.device_count, x.shape[0] // self.device_count, *x.shape[1:])
      return jax.ShapeDtypeStruct(shape, x.dtype, sharding=self._split)
    return {name: place(value) for name, value in abstract.items()}

  def device_batch(self, batch: dict[str, np.ndarray]) -> dict[str, jax.Array]:
    """This process's rows of a global batch, split over the devices in this mode's layout."""
    if self.mode == 'pmap':
      local = len(self.mesh.local_devices)
      batch = {name: value.reshape(local, -1, *value.shape[1:])
               for name, value in batch.items()}
    return {name: jax.make_array_from_process_local_data(self._split, value)
            for name, value in batch.items()}

  def compile_train_step(self) -> Callable[[train.TrainState, dict, jax.Array],
                                           tuple[train.TrainState, dict]]:
    """`train.train_step` over every device: (state, device batch, rng) -> (state, metrics).

    The state is donated. Read the metrics with `host_scalars`.
    """
    if self.mode == 'pmap':
      return jax.pmap(train.train_step, axis_name=train.BATCH_AXIS, in_axes=(0, 0, None),
                      devices=list(self.mesh.devices.flat), donate_argnums=0)
    replicated, split = jax.sharding.PartitionSpec(), jax.sharding.PartitionSpec(train.BATCH_AXIS)
    # check_vma=False gives pmap semantics: gradients of the replicated
    # parameters stay per device until train_step sums them itself.
    return jax.jit(jax.shard_map(train.train_step, mesh=self.mesh,
                                 in_specs=(replicated, split, replicated),
                                 out_specs=(replicated, replicated), check_vma=False),
                   donate_argnums=0)

  def compile_eval_step(self, step: Callable[[train.InferenceState, dict], Any] = train.eval_step
                        ) -> Callable[[train.InferenceState, dict], Any]:
    """`step` (`train.eval_step` or `train.eval_features_step`) over every device:
    (state, device batch) -> per-example outputs; read them with `host_outputs`.

    The same `step` gives the same function, so a program is compiled once.
    """
    if step not in self._eval_steps:
      if self.mode == 'pmap':
        compiled = jax.pmap(step, axis_name=train.BATCH_AXIS,
                            devices=list(self.mesh.devices.flat))
      else:
        split = jax.sharding.PartitionSpec(train.BATCH_AXIS)
        compiled = jax.jit(jax.shard_map(step, mesh=self.mesh,
                                         in_specs=(jax.sharding.PartitionSpec(), split),
                                         out_specs=split, check_vma=False))
      self._eval_steps[step] = compiled
    return self._eval_steps[step]

  def host_outputs(self, outputs: Any) -> Any:
    """Per-example outputs of an eval step as NumPy arrays over the global batch, in order,
    on every process."""
    def gather(x):
      x = np.asarray(multihost_utils.process_allgather(x, tiled=True))
      return x.reshape(-1, *x.shape[2:]) if self.mode == 'pmap' else x
    return jax.tree.map(gather, outputs)

  def host_scalars(self, values: dict) -> dict[str, float]:
    """Scalars of the state or a train step's metrics (equal on every device) as floats."""
    return {name: float(np.asarray(value.addressable_data(0)).reshape(-1)[0])
            for name, value in values.items()}


def prefetch_to_devices(batches: Iterable[dict[str, np.ndarray]], parallel: DataParallel,
                        fields: tuple[str, ...], size: int = 2
                        ) -> Iterator[tuple[dict[str, np.ndarray], dict[str, jax.Array]]]:
  """(host batch, its `fields` on the devices) for each of `batches`, `size` ahead.

  When a batch is handed out, the next `size - 1` have been read from the host
  iterator and their transfers started, so the step after the one dispatched
  on this batch finds its batch on the devices already; the host reads the
  following batch while that step runs.
  """
  queue = collections.deque()
  iterator = iter(batches)

  def fill():
    while len(queue) < size:
      try:
        batch = next(iterator)
      except StopIteration:
        return
      queue.append((batch, parallel.device_batch({name: batch[name] for name in fields})))

  fill()
  while queue:
    yield queue.popleft()
    fill()  # While the step just dispatched on that batch runs.
