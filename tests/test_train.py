import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# Runs in a fresh process: the device count is fixed when JAX starts.
_ONE_STEP_EVERYWHERE = """
import sys
import jax, jax.numpy as jnp, numpy as np, optax
from hybridcovid import models, train
sys.path.insert(0, 'tests')
import stable_init
assert jax.device_count() == 8
model = models.HybridClassifier(backbones=('resnet50',), hidden_units=16, dropout_rate=0.0,
                                axis_name=train.BATCH_AXIS)
rng = np.random.default_rng(0)
batch = {'image': rng.integers(0, 256, (16, 64, 64, 3), dtype=np.uint8),
         'label': rng.integers(0, 2, 16).astype(np.int32),
         'weight': rng.uniform(0.5, 2.0, 16).astype(np.float32),
         'mask': np.arange(16) < 13}
init = models.HybridClassifier(backbones=('resnet50',), hidden_units=16).init(
    jax.random.key(0), batch['image'][:1])
init = {'params': stable_init.damp_residual_branches(init['params']),
        'batch_stats': init['batch_stats']}
results = {}
for name, devices, parallel in [('one', jax.devices()[:1], 'shard_map'),
                                ('eight', jax.devices(), 'shard_map'),
                                ('pmap', jax.devices(), 'pmap')]:
  fresh = jax.tree.map(jnp.array, init)  # The step donates its input state.
  state = train.create_train_state(model, optax.sgd(0.05), fresh)
  step = train.compile_train_step(train.create_mesh(devices), parallel)
  state, metrics = step(state, batch, jax.random.key(1))
  results[name] = jax.device_get((state.params, state.batch_stats, metrics))
def relative_error(a, b):
  # Over the whole tree: conv biases before BatchNorm have a true gradient of
  # zero, so leaf by leaf they would compare rounding noise with itself.
  x = np.concatenate([np.ravel(v) for v in jax.tree.leaves(a)])
  y = np.concatenate([np.ravel(v) for v in jax.tree.leaves(b)])
  return np.linalg.norm(x - y) / np.linalg.norm(y)
for name in ('eight', 'pmap'):
  print(name, relative_error(results[name][0], results['one'][0]),
        relative_error(results[name][1], results['one'][1]))
print('moved', relative_error(results['one'][0], jax.device_get(init['params'])))
print('loss', results['one'][2]['loss'], results['eight'][2]['loss'])
"""


@pytest.mark.slow
def test_eight_devices_pmap_and_one_device_take_the_same_step():
  env = {**os.environ, 'XLA_FLAGS': '--xla_force_host_platform_device_count=8',
         'JAX_PLATFORMS': 'cpu'}
  result = subprocess.run([sys.executable, '-c', _ONE_STEP_EVERYWHERE], cwd=ROOT, env=env,
                          capture_output=True, text=True)
  assert result.returncode == 0, result.stderr[-3000:]
  values = dict(line.split(' ', 1) for line in result.stdout.strip().splitlines())
  for name in ('eight', 'pmap'):
    params_error, batch_stats_error = map(float, values[name].split())
    assert params_error <= 1e-5 and batch_stats_error <= 1e-5, (name, values[name])
  assert float(values['moved']) > 1e-3  # The step really changed the parameters.
  one, eight = values['loss'].split()
  assert abs(float(one) - float(eight)) <= 1e-5 * abs(float(one))
