"""The tf.data input pipeline: balanced, augmented training epochs and evaluation passes.

`InputPipeline` serves a `loading.LoadedData`'s training epochs (balanced,
augmented, dropping the remainder) and evaluation passes (every example
exactly once, the last batch padded and masked).
"""

import collections
import math
from typing import Iterator

import ml_collections
import numpy as np
import tensorflow as tf
import tensorflow_datasets as tfds

from hybridcovid.data import augment, builders, sources
from hybridcovid.data.loading import LoadedData

AUTOTUNE = tf.data.AUTOTUNE


def resize(image: tf.Tensor, size: int, method: str) -> tf.Tensor:
  """Resizes to size x size keeping the whole image: 'pad' keeps the aspect ratio."""
  if method == 'pad':
    resized = tf.image.resize_with_pad(image, size, size, antialias=True)
  elif method == 'squash':
    resized = tf.image.resize(image, (size, size), antialias=True)
  else:
    raise ValueError(f"Unknown resize method {method!r}; choose 'pad' or 'squash'.")
  return tf.cast(tf.clip_by_value(tf.round(resized), 0, 255), tf.uint8)


def _numpy_iterator(dataset: tf.data.Dataset) -> Iterator[dict]:
  """`dataset`'s elements as NumPy arrays, without tf.data's autotuning thread.

  Deleting an exhausted iterator waits for that thread, which can sleep up to
  a minute between rounds: with the CPU busy training, each epoch's iterator
  held the main thread for up to 40 s after its last batch. Parallel calls and
  prefetch buffers marked AUTOTUNE then take tf.data's fixed defaults.
  """
  options = tf.data.Options()
  options.autotune.enabled = False
  return dataset.with_options(options).as_numpy_iterator()


class InputPipeline:
  """Batches of one process: `image` uint8 (B, S, S, 3), `label`, `modality`,
  `example_id` (index into `LoadedData.facts`), `weight` and `mask`.

  B is the global batch size divided by the process count; it must divide by
  the number of local devices so that each device gets an equal share.
  """

  def __init__(self, data: LoadedData, data_config: ml_collections.ConfigDict,
               global_batch_size: int, num_local_devices: int = 1,
               process_index: int = 0, process_count: int = 1, seed: int = 0):
    self.batch_size, remainder = divmod(global_batch_size, process_count)
    if remainder or self.batch_size % num_local_devices:
      raise ValueError(
          f'Batch size {global_batch_size} must divide by the {process_count} '
          f'processes and then by the {num_local_devices} local devices; '
          'change --config.train.batch_size.')
    self.data = data
    self.config = data_config
    self.global_batch_size = global_batch_size
    self.process_index = process_index
    self.process_count = process_count
    self.seed = seed
    self._labels = tf.constant([f.record.label for f in data.facts], tf.int32)
    self._modalities = tf.constant(
        [sources.MODALITIES.index(f.record.modality) for f in data.facts], tf.int32)
    train_ids = data.split_ids('train')
    self._strata = self._stratum_shares(train_ids)
    self._weights = tf.constant(self._example_weights(train_ids), tf.float32)
    self._caches: dict[str, tf.data.Dataset] = {}

  def _stratum_shares(self, ids: np.ndarray) -> dict[tuple[int, int], float]:
    """Each (modality, label) stratum's share of a balanced epoch.

    Classes are equally frequent within each modality; modalities keep their
    share of the training data.
    """
    counts = collections.Counter(
        (sources.MODALITIES.index(self.data.facts[i].record.modality),
         self.data.facts[i].record.label) for i in ids)
    per_modality = collections.Counter(modality for modality, _ in counts.elements())
    classes = collections.Counter(modality for modality, _ in counts)
    return {stratum: per_modality[stratum[0]] / len(ids) / classes[stratum[0]]
            for stratum in sorted(counts)}

  def _example_weights(self, train_ids: np.ndarray) -> np.ndarray:
    """Loss weights: 1, or for a class-weighted loss the stratum's balanced share
    over its actual share (mean 1 over the training split)."""
    weights = np.ones(len(self.data.facts), np.float32)
    if self.config.balance == 'class_weights':
      stratum_of = {int(i): (sources.MODALITIES.index(self.data.facts[i].record.modality),
                             self.data.facts[i].record.label) for i in train_ids}
      sizes = collections.Counter(stratum_of.values())
      for i, stratum in stratum_of.items():
        weights[i] = self._strata[stratum] * len(train_ids) / sizes[stratum]
    elif self.config.balance not in ('resample', 'none'):
      raise ValueError(f'Unknown balance {self.config.balance!r}; choose '
                       "'resample', 'class_weights' or 'none'.")
    return weights

  @property
  def steps_per_epoch(self) -> int:
    return len(self.data.split_ids('train')) // self.global_batch_size

  def eval_steps(self, split: str) -> int:
    return math.ceil(len(self.data.split_ids(split)) / self.global_batch_size)

  def _examples(self, ids: np.ndarray) -> tf.data.Dataset:
    """Resized images of `ids` with their example ids, this process's share only."""
    keys = [self.data.facts[i].record.key for i in ids]
    table = tf.lookup.StaticHashTable(
        tf.lookup.KeyValueTensorInitializer(
            tf.constant(keys or [''], tf.string),
            tf.constant(ids if len(ids) else [-1], tf.int32)), default_value=-1)
    datasets = [builder.as_dataset(split=builders.ALL_SPLIT,
                                   decoders={'image': tfds.decode.SkipDecoding()})
                for builder in self.data.builders]
    dataset = datasets[0]
    for other in datasets[1:]:
      dataset = dataset.concatenate(other)

    def select(example):
      key = tf.strings.join([example['source'], ':', example['relpath']])
      return {'encoded': example['image'], 'example_id': table.lookup(key)}

    size, method = self.config.image_size, self.config.resize

    def decode(example):
      image = tf.io.decode_image(example['encoded'], channels=3, expand_animations=False)
      return {'image': resize(image, size, method), 'example_id': example['example_id']}

    dataset = dataset.map(select).filter(lambda example: example['example_id'] >= 0)
    dataset = dataset.shard(self.process_count, self.process_index)
    return dataset.map(decode, num_parallel_calls=AUTOTUNE)

  def _with_targets(self, example: dict) -> dict:
    example_id = example['example_id']
    return {**example, 'label': tf.gather(self._labels, example_id),
            'modality': tf.gather(self._modalities, example_id),
            'weight': tf.gather(self._weights, example_id),
            'mask': tf.constant(True)}

  def _cached(self, split: str) -> tf.data.Dataset:
    """This process's resized images of `split`, decoded once and kept in memory."""
    if split not in self._caches:
      cached = self._examples(self.data.split_ids(split)).cache()
      for _ in cached.prefetch(AUTOTUNE):  # One full pass completes the cache.
        pass
      self._caches[split] = cached
    return self._caches[split]

  def train_epoch(self, epoch: int) -> Iterator[dict]:
    """The batches of one training epoch; the same epoch always gives the same batches."""
    if self.steps_per_epoch == 0:
      raise sources.DataSourceError(
          f'The training split has {len(self.data.split_ids("train"))} images, '
          f'fewer than one batch of {self.global_batch_size}; lower '
          '--config.train.batch_size or add data.')
    seed = self.seed * 1_000_003 + epoch
    cached = self._cached('train')
    if self.config.balance == 'resample':
      strata = [cached.filter(self._in_stratum(stratum))
                .shuffle(self.config.shuffle_buffer, seed=seed + i).repeat()
                for i, stratum in enumerate(self._strata)]
      dataset = tf.data.Dataset.sample_from_datasets(
          strata, weights=list(self._strata.values()), seed=seed)
    else:
      dataset = cached.shuffle(self.config.shuffle_buffer, seed=seed).repeat()
    images_per_epoch = self.steps_per_epoch * self.batch_size
    dataset = dataset.take(images_per_epoch).enumerate()
    augment_config = self.config.augment

    def augmented(index, example):
      stateless_seed = tf.stack([tf.constant(seed, tf.int64), index])
      image = augment.random_augment(example['image'], stateless_seed, augment_config)
      return self._with_targets({**example, 'image': image})

    dataset = dataset.map(augmented, num_parallel_calls=AUTOTUNE, deterministic=True)
    dataset = dataset.batch(self.batch_size, drop_remainder=True)
    return _numpy_iterator(dataset.prefetch(AUTOTUNE))

  def _in_stratum(self, stratum: tuple[int, int]):
    modality, label = stratum

    def predicate(example):
      example_id = example['example_id']
      return tf.logical_and(tf.gather(self._modalities, example_id) == modality,
                            tf.gather(self._labels, example_id) == label)

    return predicate

  def eval_batches(self, split: str) -> Iterator[dict]:
    """Every example of `split` exactly once; padding has mask False.

    All processes yield the same number of batches, padded as needed.
    """
    dataset = self._cached(split).map(self._with_targets, num_parallel_calls=AUTOTUNE)
    dataset = dataset.batch(self.batch_size).map(self._pad_batch)
    size = self.config.image_size
    filler = tf.data.Dataset.from_tensors({
        'image': tf.zeros((self.batch_size, size, size, 3), tf.uint8),
        'example_id': tf.fill([self.batch_size], -1),
        'label': tf.zeros([self.batch_size], tf.int32),
        'modality': tf.zeros([self.batch_size], tf.int32),
        'weight': tf.zeros([self.batch_size], tf.float32),
        'mask': tf.zeros([self.batch_size], tf.bool)}).repeat()
    dataset = dataset.concatenate(filler).take(self.eval_steps(split))
    return _numpy_iterator(dataset.prefetch(AUTOTUNE))

  def _pad_batch(self, batch: dict) -> dict:
    missing = self.batch_size - tf.shape(batch['label'])[0]

    def pad(name, value):
      paddings = [[0, missing]] + [[0, 0]] * (len(value.shape) - 1)
      fill = -1 if name == 'example_id' else 0
      return tf.pad(value, paddings, constant_values=tf.cast(fill, value.dtype))

    padded = {name: pad(name, value) for name, value in batch.items()}
    size = self.config.image_size
    padded['image'] = tf.ensure_shape(padded['image'], (self.batch_size, size, size, 3))
    return padded
