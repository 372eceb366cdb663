import json
import os
import subprocess
import sys

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from hybridcovid import models
from hybridcovid.training import parallel, train

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PARALLEL_RUN = os.path.join(ROOT, 'tests', 'programs', 'parallel_run.py')
BATCH_AXIS = train.BATCH_AXIS  # The modules' `train` argument hides the module.


class _Tiny(nn.Module):
  """A small classifier with BatchNorm and pooled features, shaped like the real ones."""

  @nn.compact
  def __call__(self, images, train=False):
    x = nn.Dense(4)(images.reshape(len(images), -1).astype(jnp.float32) / 255)
    x = nn.BatchNorm(use_running_average=not train, axis_name=BATCH_AXIS)(x)
    self.sow('intermediates', models.POOLED_FEATURES, x)
    return nn.Dense(2)(x)


def _batch(size, seed=0):
  rng = np.random.default_rng(seed)
  return {'image': rng.integers(0, 256, (size, 4, 4, 3), dtype=np.uint8),
          'label': rng.integers(0, 2, size).astype(np.int32),
          'weight': np.ones(size, np.float32), 'mask': np.ones(size, bool)}


def _state(data_parallel):
  model = _Tiny()
  variables = model.init(jax.random.key(0), _batch(2)['image'])
  return data_parallel.device_state(train.replicate(
      train.create_train_state(model, optax.sgd(0.1), variables), data_parallel.mesh))


def test_unknown_mode_names_the_choices():
  with pytest.raises(ValueError, match=r"'pmapp'.*\['shard_map', 'pmap'\].*--config.parallel"):
    parallel.DataParallel('pmapp')


def test_pmap_state_has_a_device_axis_and_returns_to_one_logical_copy():
  data_parallel = parallel.DataParallel('pmap')
  state = _state(data_parallel)
  devices = data_parallel.device_count
  kernel = state.params['Dense_0']['kernel']
  assert kernel.shape == (devices, 48, 4) and state.step.shape == (devices,)
  logical = data_parallel.logical_state(state)
  assert logical.params['Dense_0']['kernel'].shape == (48, 4)
  np.testing.assert_array_equal(logical.params['Dense_0']['kernel'], kernel[0])
  batch = data_parallel.device_batch(_batch(6 * devices))
  assert batch['image'].shape == (devices, 6, 4, 4, 3) and batch['label'].shape == (devices, 6)


@pytest.mark.parametrize('mode', parallel.PARALLEL_MODES)
def test_steps_and_outputs_read_alike_in_both_modes(mode):
  data_parallel = parallel.DataParallel(mode)
  state = _state(data_parallel)
  step = data_parallel.compile_train_step()
  batch = _batch(6)
  losses = []
  for _ in range(3):
    state, metrics = step(state, data_parallel.device_batch(batch), jax.random.key(1))
    losses.append(data_parallel.host_scalars(metrics)['loss'])
  assert losses[2] < losses[0]
  assert data_parallel.host_scalars({'step': state.step}) == {'step': 3.0}
  probabilities = data_parallel.host_outputs(data_parallel.compile_eval_step()(
      train.inference_state(state), data_parallel.device_batch({'image': batch['image']})))
  logical = data_parallel.logical_state(state)
  logits = logical.apply_fn({'params': logical.params, 'batch_stats': logical.batch_stats},
                            batch['image'])
  np.testing.assert_allclose(probabilities, jax.nn.softmax(logits)[:, 1], rtol=1e-6)


@pytest.mark.parametrize('mode', parallel.PARALLEL_MODES)
def test_a_step_compiled_from_shapes_is_the_one_the_first_steps_run(mode, caplog):
  data_parallel = parallel.DataParallel(mode)
  model = _Tiny()
  optimizer = optax.sgd(0.1)
  abstract = train.abstract_train_state(model, optimizer, 4, data_parallel.mesh)
  step = data_parallel.compile_train_step()
  rng = jax.random.key(1)
  step.lower(data_parallel.abstract_device_state(abstract),
             data_parallel.abstract_device_batch(train.abstract_batch(6, 4)), rng).compile()
  state = data_parallel.device_state(train.replicate(train.create_train_state(
      model, optimizer, model.init(jax.random.key(0), _batch(2)['image'])), data_parallel.mesh))
  batches = [data_parallel.device_batch(_batch(6)) for _ in range(2)]
  with jax.log_compiles(), caplog.at_level('WARNING'):
    for batch in batches:
      state, _ = step(state, batch, rng)
  # pmap names its program `_fun`, not `train_step`: nothing may compile.
  assert not [record.getMessage() for record in caplog.records
              if record.getMessage().startswith('Compiling')]


def test_the_next_batch_is_on_the_devices_when_a_step_starts():
  data_parallel = parallel.DataParallel()
  read = []

  def host_batches():
    for index in range(5):
      read.append(index)
      yield {**_batch(2, seed=index), 'example_id': np.array([index, index])}

  seen = []
  for host, device in parallel.prefetch_to_devices(host_batches(), data_parallel,
                                                   train.BATCH_FIELDS):
    index = int(host['example_id'][0])
    # The batch of this step, and the next one, were read and put on the devices
    # before this step was dispatched.
    assert read[-1] == min(index + 1, 4)
    assert set(device) == set(train.BATCH_FIELDS)
    assert all(isinstance(value, jax.Array) and value.sharding.mesh == data_parallel.mesh
               for value in device.values())
    np.testing.assert_array_equal(device['image'], _batch(2, seed=index)['image'])
    seen.append(index)
  assert seen == [0, 1, 2, 3, 4]


def _run(workdir, mode, epochs, cache, kill_after=None):
  env = {**os.environ, 'XLA_FLAGS': '--xla_force_host_platform_device_count=4',
         'JAX_PLATFORMS': 'cpu'}
  command = [sys.executable, PARALLEL_RUN, str(workdir), mode, str(epochs), str(cache)]
  if kill_after is not None:
    command.append(str(kill_after))
  return subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True,
                        timeout=900)


@pytest.mark.slow
@pytest.mark.subprocess
@pytest.mark.multidevice
def test_a_killed_pmap_run_resumes_and_ends_where_an_uninterrupted_shard_map_run_does(tmp_path):
  cache = tmp_path / 'cache'  # The pmap runs compile once between them.
  done = _run(tmp_path / 'shard_map', 'shard_map', 2, cache)
  assert done.returncode == 0, done.stderr[-3000:]
  uninterrupted = json.loads(done.stdout.strip().splitlines()[-1])
  killed = _run(tmp_path / 'killed', 'pmap', 2, cache, kill_after=1)
  assert killed.returncode == -9, killed.stderr[-3000:]
  first_checkpoint = tmp_path / 'killed' / 'checkpoints' / '1'
  assert sorted(os.listdir(first_checkpoint.parent)) == ['1']
  saved_at = first_checkpoint.stat().st_mtime_ns
  resumed = _run(tmp_path / 'killed', 'pmap', 2, cache)
  assert resumed.returncode == 0, resumed.stderr[-3000:]
  assert first_checkpoint.stat().st_mtime_ns == saved_at  # Epoch 1 was not trained again.
  resumed = json.loads(resumed.stdout.strip().splitlines()[-1])

  # The only test of a run killed mid-training, and of the two modes over whole runs:
  # after each epoch the same validation accuracy, the same losses up to the rounding
  # in which the modes differ. A resume that drew other batches or other dropout
  # in epoch 2 would move its loss far beyond that.
  assert resumed['selected_epoch'] == uninterrupted['selected_epoch']
  for resumed_epoch, uninterrupted_epoch in zip(resumed['history'], uninterrupted['history'],
                                                strict=True):
    assert (resumed_epoch['validation']['accuracy']
            == uninterrupted_epoch['validation']['accuracy'])
    np.testing.assert_allclose(resumed_epoch['train_loss'], uninterrupted_epoch['train_loss'],
                               rtol=1e-4)
    np.testing.assert_allclose(resumed_epoch['validation_loss'],
                               uninterrupted_epoch['validation_loss'], rtol=1e-4)
  np.testing.assert_allclose(resumed['test']['accuracy'], uninterrupted['test']['accuracy'])
