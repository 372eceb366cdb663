"""Three train steps on one device, on eight with shard_map and on eight with pmap; prints
how far the eight-device results lie from the one-device ones. Run with 8 host devices.

The model computes in float64 (its parameters stay float32). In float32 the
sums over devices round differently from the sums over one batch, and three
steps of a deep network grow that into relative differences near 1e-5 that
move with the CPU (1.4e-5 on an AMD EPYC with AVX2); in float64 what is left
is the float32 parameters' rounding, so a tight bound tests the maths.
"""

import os
import sys

import jax
import jax.numpy as jnp
import numpy as np
import optax

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path[:0] = [ROOT, os.path.join(ROOT, 'tests')]

from hybridcovid import models  # pylint: disable=wrong-import-position
from hybridcovid.training import parallel, train  # pylint: disable=wrong-import-position
import stable_init  # pylint: disable=wrong-import-position
assert jax.device_count() == 8
jax.config.update('jax_enable_x64', True)
model = models.HybridClassifier(backbones=('resnet50',), hidden_units=16, dropout_rate=0.0,
                                dtype=jnp.float64,
                                axis_name=train.BATCH_AXIS)
rng = np.random.default_rng(0)
batch = {'image': rng.integers(0, 256, (16, 64, 64, 3), dtype=np.uint8),
         'label': rng.integers(0, 2, 16).astype(np.int32),
         'weight': rng.uniform(0.5, 2.0, 16).astype(np.float32),
         'mask': np.arange(16) < 13}
# Fully optimised, as an eager `init` is: the bounds below were set on these values.
init = jax.jit(models.HybridClassifier(backbones=('resnet50',), hidden_units=16).init)(
    jax.random.key(0), batch['image'][:1])
init = {'params': stable_init.damp_residual_branches(init['params']),
        'batch_stats': init['batch_stats']}
results = {}
for name, devices, mode in [('one', jax.devices()[:1], 'shard_map'),
                            ('eight', jax.devices(), 'shard_map'),
                            ('pmap', jax.devices(), 'pmap')]:
  data_parallel = parallel.DataParallel(mode, devices)
  state = data_parallel.device_state(train.replicate(
      train.create_train_state(model, optax.sgd(0.05), init), data_parallel.mesh))
  step = data_parallel.compile_train_step()
  for _ in range(3):
    state, metrics = step(state, data_parallel.device_batch(batch), jax.random.key(1))
  state = data_parallel.logical_state(state)
  results[name] = (train.host_variables(state)['params'],
                   train.host_variables(state)['batch_stats'],
                   data_parallel.host_scalars(metrics))
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
