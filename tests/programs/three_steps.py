"""One process of a data-parallel run: `runs.setup_jax` joins the processes, each feeds
its own rows of every global batch, and the parameters and BatchNorm statistics after
each of three steps are written to OUT.

  python tests/programs/three_steps.py PROCESS_ID NUM_PROCESSES ADDRESS OUT
"""

import os
import sys

import jax
import numpy as np
import optax

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path[:0] = [ROOT, os.path.join(ROOT, 'tests')]

from configs import default  # pylint: disable=wrong-import-position
from hybridcovid import models, runs  # pylint: disable=wrong-import-position
from hybridcovid.training import parallel, train  # pylint: disable=wrong-import-position
import stable_init  # pylint: disable=wrong-import-position
process_id, num_processes = int(sys.argv[1]), int(sys.argv[2])
address, out = sys.argv[3], sys.argv[4]
config = default.get_config()
config.compilation_cache_dir = ''
if num_processes > 1:
  config.distributed.coordinator_address = address
  config.distributed.num_processes = num_processes
  config.distributed.process_id = process_id
runs.setup_jax(config)
assert jax.process_count() == num_processes and jax.device_count() == 4
model = models.HybridClassifier(backbones=('resnet50',), hidden_units=16,
                                axis_name=train.BATCH_AXIS)
rng = np.random.default_rng(0)
# 64x64 and 16 images: BatchNorm over fewer values per channel turns rounding
# differences between the reductions into large ones.
images = rng.integers(0, 256, (3, 16, 64, 64, 3), dtype=np.uint8)
labels = rng.integers(0, 2, (3, 16)).astype(np.int32)
# Fully optimised, as an eager `init` is: the bounds below were set on these values.
init = jax.jit(models.HybridClassifier(backbones=('resnet50',), hidden_units=16).init)(
    jax.random.key(0), images[0, :1])
init = {'params': stable_init.damp_residual_branches(init['params']),
        'batch_stats': init['batch_stats']}
data_parallel = parallel.DataParallel()
# SGD: Adam would scale the rounding noise of zero-gradient biases up to the step size.
state = train.replicate(train.create_train_state(model, optax.sgd(0.05), init),
                        data_parallel.mesh)
step = data_parallel.compile_train_step()
rows = slice(process_id * 16 // num_processes, (process_id + 1) * 16 // num_processes)
after = {}
for index in range(3):
  local = {'image': images[index, rows], 'label': labels[index, rows],
           'weight': np.ones(16, np.float32)[rows], 'mask': np.ones(16, bool)[rows]}
  state, metrics = step(state, data_parallel.device_batch(local), jax.random.key(1))
  for number, leaf in enumerate(jax.tree.leaves((state.params, state.batch_stats))):
    after[f'step{index + 1}_{number}'] = np.asarray(leaf.addressable_data(0))
np.savez(out, **after)
