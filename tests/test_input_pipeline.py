import os
import subprocess
import sys

import numpy as np
import pytest

from hybridcovid.data import input_pipeline, loading
from hybridcovid.training import train
import data_trees


def test_eval_batches_cover_every_example_once(loaded):
  config, _, data = loaded
  test_ids = set(data.split_ids('test').tolist())
  for batch_size, devices in [(4, 1), (5, 1), (16, 8), (24, 8), (32, 8)]:
    stream = input_pipeline.InputPipeline(data, config, batch_size, num_local_devices=devices)
    batches = list(stream.eval_batches('test'))
    assert len(batches) == stream.eval_steps('test') == -(-16 // batch_size)
    seen = np.concatenate([b['example_id'][b['mask']] for b in batches])
    assert sorted(seen.tolist()) == sorted(test_ids)
    for batch in batches:
      assert batch['image'].shape == (batch_size, 32, 32, 3)
      assert np.all(batch['example_id'][~batch['mask']] == -1)
      labels = [data.facts[i].record.label for i in batch['example_id'][batch['mask']]]
      assert batch['label'][batch['mask']].tolist() == labels


@pytest.mark.subprocess
@pytest.mark.multidevice
def test_eval_batches_shard_over_eight_devices(loaded):
  config, workdir, _ = loaded
  env = {**os.environ, 'XLA_FLAGS': '--xla_force_host_platform_device_count=8',
         'JAX_PLATFORMS': 'cpu'}
  root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  result = subprocess.run(
      [sys.executable, os.path.join(root, 'tests', 'programs', 'sharded_eval.py'),
       config.folder_dir, config.tfds_dir, workdir],
      cwd=root, env=env, capture_output=True, text=True)
  assert result.returncode == 0, result.stderr[-2000:]
  assert 'covered 16' in result.stdout


def test_each_process_reads_its_own_share_in_equal_steps(loaded):
  config, _, data = loaded
  shares = [list(input_pipeline.InputPipeline(data, config, 6, process_index=i,
                                              process_count=2).eval_batches('validation'))
            for i in range(2)]
  assert len(shares[0]) == len(shares[1]) == 2  # ceil(8 / 6), padded where short.
  seen = [np.concatenate([b['example_id'][b['mask']] for b in share]) for share in shares]
  assert not set(seen[0]) & set(seen[1])
  assert sorted(np.concatenate(seen).tolist()) == sorted(data.split_ids('validation').tolist())


def test_training_epochs_are_balanced_reproducible_and_drop_the_remainder(loaded):
  config, _, data = loaded
  stream = input_pipeline.InputPipeline(data, config, 8, seed=0)
  assert stream.steps_per_epoch == 56 // 8
  epoch = list(stream.train_epoch(0))
  assert len(epoch) == 7 and all(b['image'].shape == (8, 32, 32, 3) for b in epoch)
  assert all(b['mask'].all() and np.all(b['weight'] == 1) for b in epoch)
  # The shapes the train step is compiled for before the first batch arrives.
  expected = train.abstract_batch(8, 32)
  assert all({name: (b[name].shape, b[name].dtype) for name in train.BATCH_FIELDS}
             == {name: (x.shape, x.dtype) for name, x in expected.items()} for b in epoch)
  np.testing.assert_array_equal(epoch[3]['image'], list(stream.train_epoch(0))[3]['image'])
  assert not np.array_equal(epoch[0]['image'], next(iter(stream.train_epoch(1)))['image'])
  train_ids = set(data.split_ids('train').tolist())
  assert all(set(b['example_id'].tolist()) <= train_ids for b in epoch)
  labels = [data.facts[i].record.label for b in epoch for i in b['example_id']]
  assert [b['label'].tolist() for b in epoch] == [labels[i:i + 8] for i in range(0, 56, 8)]


def test_balancing_evens_classes_within_each_modality(tmp_path):
  root = tmp_path / 'images'
  rows = ['relpath,label,modality,patient_id']
  for i in range(80):  # CXR: 12 COVID, 48 normal. CT: 10 and 10.
    modality = 'cxr' if i < 60 else 'ct'
    label = 'COVID' if i < 12 or i >= 70 else 'Normal'
    relpath = f'{modality}/{label}/{i}.png'
    data_trees.write_png(str(root / relpath), i)
    rows.append(f'{relpath},{label},{modality},p{i}')
  (root / 'manifest.csv').write_text('\n'.join(rows) + '\n')
  for balance in ('resample', 'class_weights'):
    config = data_trees.data_config(tmp_path, root, balance=balance)
    data = loading.load(config, str(tmp_path / 'work'), seed=0)
    stream = input_pipeline.InputPipeline(data, config, 7, seed=0)
    drawn = [(data.facts[i].record.modality, data.facts[i].record.label, w)
             for epoch in range(6) for batch in stream.train_epoch(epoch)
             for i, w in zip(batch['example_id'], batch['weight'])]
    train = [data.facts[i].record for i in data.split_ids('train')]
    if balance == 'resample':
      cxr = [label for modality, label, _ in drawn if modality == 'cxr']
      assert 0.38 <= np.mean(cxr) <= 0.62  # 20% COVID among the CXR images.
      cxr_share = sum(r.modality == 'cxr' for r in train) / len(train)
      assert abs(len(cxr) / len(drawn) - cxr_share) <= 0.1  # Modalities keep their share.
    else:
      covid_cxr = sum(r.modality == 'cxr' and r.label == 1 for r in train)
      cxr = sum(r.modality == 'cxr' for r in train)
      expected = (cxr / len(train) / 2) * len(train) / covid_cxr
      weights = {w for modality, label, w in drawn if (modality, label) == ('cxr', 1)}
      assert len(weights) == 1 and weights.pop() == pytest.approx(expected)
      assert np.mean([stream._weights.numpy()[i] for i in data.split_ids('train')]) == (
          pytest.approx(1.0))


def test_pad_resize_keeps_the_whole_image():
  import tensorflow as tf
  image = tf.fill((20, 40, 3), tf.constant(200, tf.uint8))
  padded = input_pipeline.resize(image, 32, 'pad').numpy()
  assert np.all(padded[8:24] == 200) and np.all(padded[:8] == 0) and np.all(padded[24:] == 0)
  assert np.all(input_pipeline.resize(image, 32, 'squash').numpy() == 200)


def test_iterators_run_without_the_autotuning_thread(loaded, monkeypatch):
  # Deleting an exhausted iterator waits for that thread, up to a minute while training.
  config, _, data = loaded
  stream = input_pipeline.InputPipeline(data, config, 8, seed=0)
  iterated = []
  as_numpy_iterator = input_pipeline.tf.data.Dataset.as_numpy_iterator

  def recording(dataset):
    iterated.append(dataset.options().autotune.enabled)
    return as_numpy_iterator(dataset)

  monkeypatch.setattr(input_pipeline.tf.data.Dataset, 'as_numpy_iterator', recording)
  assert len(list(stream.train_epoch(0))) == 7
  assert len(list(stream.eval_batches('test'))) == 2
  assert iterated == [False, False]
