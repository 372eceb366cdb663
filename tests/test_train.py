import os
import socket
import subprocess
import sys

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from hybridcovid.training import parallel
from hybridcovid.training import train as train_lib

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# Programs that run in a fresh process: the device count is fixed when JAX starts.
PROGRAMS = os.path.join(ROOT, 'tests', 'programs')


@pytest.mark.slow
@pytest.mark.subprocess
@pytest.mark.multidevice
def test_eight_devices_pmap_and_one_device_take_the_same_three_steps():
  env = {**os.environ, 'XLA_FLAGS': '--xla_force_host_platform_device_count=8',
         'JAX_PLATFORMS': 'cpu'}
  result = subprocess.run([sys.executable, os.path.join(PROGRAMS, 'one_step_everywhere.py')],
                          cwd=ROOT, env=env,
                          capture_output=True, text=True)
  assert result.returncode == 0, result.stderr[-3000:]
  values = dict(line.split(' ', 1) for line in result.stdout.strip().splitlines())
  for name in ('eight', 'pmap'):
    params_error, batch_stats_error = map(float, values[name].split())
    assert params_error <= 1e-7 and batch_stats_error <= 1e-7, (name, values[name])
  assert float(values['moved']) > 1e-3  # The step really changed the parameters.
  one, eight = values['loss'].split()
  # The logits stay float32 whatever the compute dtype.
  assert abs(float(one) - float(eight)) <= 1e-6 * abs(float(one))


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(('127.0.0.1', 0))
    return s.getsockname()[1]


@pytest.mark.slow
@pytest.mark.subprocess
@pytest.mark.multidevice
def test_two_processes_end_equal_to_each_other_and_to_one_process(tmp_path):
  address = f'127.0.0.1:{_free_port()}'

  def launch(process_id, num_processes):
    env = {**os.environ, 'JAX_PLATFORMS': 'cpu',
           'XLA_FLAGS': f'--xla_force_host_platform_device_count={4 // num_processes}'}
    return subprocess.Popen(
        [sys.executable, os.path.join(PROGRAMS, 'three_steps.py'), str(process_id),
         str(num_processes), address,
         str(tmp_path / f'{num_processes}-{process_id}.npz')],
        cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

  for processes in ([launch(0, 2), launch(1, 2)], [launch(0, 1)]):
    for process in processes:
      _, stderr = process.communicate(timeout=600)
      assert process.returncode == 0, stderr[-3000:]
  results = {name: np.load(tmp_path / f'{name}.npz') for name in ('2-0', '2-1', '1-0')}
  assert len(results['1-0'].files) > 900
  for key in results['1-0'].files:
    np.testing.assert_array_equal(results['2-0'][key], results['2-1'][key])

  def relative_error(step):
    keys = [key for key in results['1-0'].files if key.startswith(f'step{step}_')]
    one = np.concatenate([results['1-0'][key].ravel() for key in keys])
    two = np.concatenate([results['2-0'][key].ravel() for key in keys])
    return np.linalg.norm(two - one) / np.linalg.norm(one)

  # Summing over processes instead of within one changes the rounding; a
  # random ResNet50 then amplifies it step by step (2.7e-5 after 3 steps).
  assert relative_error(1) <= 1e-5
  assert relative_error(3) <= 1e-4


class _Tiny(nn.Module):
  """A small classifier with BatchNorm and dropout, shaped like the real ones."""

  @nn.compact
  def __call__(self, images, train=False):
    x = nn.Dense(4)(images.reshape(len(images), -1).astype(jnp.float32) / 255)
    x = nn.BatchNorm(use_running_average=not train, axis_name=train_lib.BATCH_AXIS)(x)
    return nn.Dense(2)(nn.Dropout(0.5, deterministic=not train)(x))


def test_a_replicated_state_compiles_the_train_step_once():
  data_parallel = parallel.DataParallel()
  images = np.arange(4 * 8 * 8 * 3, dtype=np.uint8).reshape(4, 8, 8, 3)
  model, optimizer = _Tiny(), optax.adam(1e-2)
  variables = model.init(jax.random.key(0), images)
  state = train_lib.replicate(train_lib.create_train_state(model, optimizer, variables),
                              data_parallel.mesh)
  abstract = train_lib.abstract_train_state(model, optimizer, 8, data_parallel.mesh)
  assert jax.tree.structure(abstract) == jax.tree.structure(state)
  assert [(x.shape, x.dtype, x.sharding) for x in jax.tree.leaves(abstract)] == [
      (x.shape, x.dtype, x.sharding) for x in jax.tree.leaves(state)]
  step = data_parallel.compile_train_step()
  batch = {'image': images, 'label': np.array([0, 1, 1, 0], np.int32),
           'weight': np.ones(4, np.float32), 'mask': np.ones(4, bool)}
  losses = []
  for _ in range(3):
    state, metrics = step(state, data_parallel.device_batch(batch), jax.random.key(1))
    losses.append(data_parallel.host_scalars(metrics)['loss'])
  assert step._cache_size() == 1
  assert losses[2] < losses[0]
