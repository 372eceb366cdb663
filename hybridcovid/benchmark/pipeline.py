"""Training-pipeline throughput: images per second per CPU core, from the cache.

  python -m hybridcovid.benchmark.pipeline [--image_size=224] [--batch_size=32]

Uses the built-in synthetic data set. The first epoch fills the cache of
resized images and is not timed; the timed epochs decode nothing: they
shuffle, balance, augment and batch, as every training epoch after the first.
"""

import json
import os
import tempfile
import time

from absl import app
from absl import flags
from absl import logging

from configs import default
from hybridcovid.data import input_pipeline, loading

_IMAGE_SIZE = flags.DEFINE_integer('image_size', 224, 'Side of the square inputs.')
_BATCH_SIZE = flags.DEFINE_integer('batch_size', 32, 'Global batch size.')
_EPOCHS = flags.DEFINE_integer('epochs', 10, 'Timed epochs after the cache is filled.')
_WORKDIR = flags.DEFINE_string('workdir', None,
                                'Where to put the data; a temporary folder if unset.')


def measure(workdir: str, image_size: int, batch_size: int, epochs: int) -> dict:
  """Times `epochs` training epochs after one untimed epoch that fills the cache."""
  config = default.get_config().data
  config.synthetic = True
  config.image_size = image_size
  config.tfds_dir = os.path.join(workdir, 'tfds')
  data = loading.load(config, workdir, seed=0)
  stream = input_pipeline.InputPipeline(data, config, batch_size)
  for _ in stream.train_epoch(0):
    pass
  start = time.perf_counter()
  images = 0
  for epoch in range(1, epochs + 1):
    for batch in stream.train_epoch(epoch):
      images += len(batch['label'])
  seconds = time.perf_counter() - start
  cores = len(os.sched_getaffinity(0))
  return {'image_size': image_size, 'batch_size': batch_size, 'images': images,
          'seconds': round(seconds, 3), 'images_per_second': round(images / seconds, 1),
          'cpu_cores': cores,
          'images_per_second_per_core': round(images / seconds / cores, 1)}


def main(argv: list[str]) -> None:
  del argv
  with tempfile.TemporaryDirectory() as scratch:
    result = measure(_WORKDIR.value or scratch, _IMAGE_SIZE.value, _BATCH_SIZE.value,
                     _EPOCHS.value)
  logging.info('Training pipeline: %s', json.dumps(result))


if __name__ == '__main__':
  app.run(main)
