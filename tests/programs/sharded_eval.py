"""Loads a folder and checks that evaluation batches shard over 8 devices, each example once.

Arguments: FOLDER TFDS_DIR WORKDIR. Run with 8 host devices (XLA_FLAGS).
"""

import os
import sys

import jax
from jax.sharding import Mesh, NamedSharding, PartitionSpec
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

from configs import default  # pylint: disable=wrong-import-position
from hybridcovid.data import input_pipeline, loading  # pylint: disable=wrong-import-position

config = default.get_config().data
config.folder_dir, config.tfds_dir, config.image_size = sys.argv[1], sys.argv[2], 32
data = loading.load(config, sys.argv[3], seed=0)
assert jax.local_device_count() == 8
sharding = NamedSharding(Mesh(np.array(jax.devices()), ('batch',)), PartitionSpec('batch'))
seen = []
stream = input_pipeline.InputPipeline(data, config, 24, jax.local_device_count())
for batch in stream.eval_batches('test'):
  ids = jax.device_put(batch['example_id'], sharding)
  mask = jax.device_put(batch['mask'], sharding)
  assert [shard.data.shape for shard in ids.addressable_shards] == [(3,)] * 8
  seen += np.asarray(ids)[np.asarray(mask)].tolist()
assert sorted(seen) == sorted(data.split_ids('test').tolist()), seen
print('covered', len(seen))
