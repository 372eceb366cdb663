"""Three train steps on one device, on eight with shard_map and on eight with pmap; prints
how far the eight-device results lie from the one-device ones. Run with 8 host devices.
"""

import os
import sys

import jax
import numpy as np
import optax

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path[:0] = [ROOT, os.path.join(ROOT, 'tests')]

from hybridcovid import models  # pylint: disable=wrong-import-position
from hybridcovid.training import parallel, train  # pylint: disable=wrong-import-position
import stable_init  # pylint: disable=wrong-import-position
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
