import collections
import json
import os
import pathlib
import subprocess
import sys

import numpy as np
import pytest

from configs import default
from hybridcovid.data import audit, pipeline, sources
import data_trees

REALMINI = os.path.join(os.path.dirname(__file__), '..', '..', 'shared', 'data', 'realmini')


def _data_config(tmp_path, folder, **overrides):
  config = default.get_config().data
  config.folder_dir = str(folder)
  config.tfds_dir = str(tmp_path / 'tfds')
  config.image_size = 32
  config.update(overrides)
  return config


@pytest.fixture(scope='module')
def loaded(tmp_path_factory):
  """A folder of 4 strata x 10 patients x 2 images, loaded and split."""
  tmp_path = tmp_path_factory.mktemp('pipeline')
  data_trees.write_folder(str(tmp_path / 'images'), patients_per_stratum=10)
  config = _data_config(tmp_path, tmp_path / 'images')
  workdir = str(tmp_path / 'work')
  return config, workdir, pipeline.load(config, workdir, seed=0)


def test_load_writes_split_and_audit_and_reuses_the_split(loaded, tmp_path):
  config, workdir, data = loaded
  assert len(data.facts) == 80
  with open(os.path.join(workdir, 'split.json')) as f:
    saved = json.load(f)['assignment']
  assert saved == data.assignment
  counts = collections.Counter(data.assignment.values())
  assert counts == {'train': 56, 'test': 16, 'validation': 8}
  with open(os.path.join(workdir, 'audit.json')) as f:
    report = json.load(f)
  assert report['patients_across_splits'] == [] and report['images'] == 80
  again = pipeline.load(config, workdir, seed=123)  # Another seed, but the split is reused.
  assert again.assignment == data.assignment


def test_eval_batches_cover_every_example_once(loaded):
  config, _, data = loaded
  test_ids = set(data.split_ids('test').tolist())
  for batch_size, devices in [(4, 1), (5, 1), (16, 8), (24, 8), (32, 8)]:
    stream = pipeline.InputPipeline(data, config, batch_size, num_local_devices=devices)
    batches = list(stream.eval_batches('test'))
    assert len(batches) == stream.eval_steps('test') == -(-16 // batch_size)
    seen = np.concatenate([b['example_id'][b['mask']] for b in batches])
    assert sorted(seen.tolist()) == sorted(test_ids)
    for batch in batches:
      assert batch['image'].shape == (batch_size, 32, 32, 3)
      assert np.all(batch['example_id'][~batch['mask']] == -1)
      labels = [data.facts[i].record.label for i in batch['example_id'][batch['mask']]]
      assert batch['label'][batch['mask']].tolist() == labels


_SHARDED_EVAL = """
import sys
import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec
from configs import default
from hybridcovid.data import pipeline
config = default.get_config().data
config.folder_dir, config.tfds_dir, config.image_size = sys.argv[1], sys.argv[2], 32
data = pipeline.load(config, sys.argv[3], seed=0)
assert jax.local_device_count() == 8
sharding = NamedSharding(Mesh(np.array(jax.devices()), ('batch',)), PartitionSpec('batch'))
seen = []
for batch in pipeline.InputPipeline(data, config, 24, jax.local_device_count()).eval_batches('test'):
  ids = jax.device_put(batch['example_id'], sharding)
  mask = jax.device_put(batch['mask'], sharding)
  assert [shard.data.shape for shard in ids.addressable_shards] == [(3,)] * 8
  seen += np.asarray(ids)[np.asarray(mask)].tolist()
assert sorted(seen) == sorted(data.split_ids('test').tolist()), seen
print('covered', len(seen))
"""


def test_eval_batches_shard_over_eight_devices(loaded):
  config, workdir, _ = loaded
  env = {**os.environ, 'XLA_FLAGS': '--xla_force_host_platform_device_count=8',
         'JAX_PLATFORMS': 'cpu'}
  root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  result = subprocess.run(
      [sys.executable, '-c', _SHARDED_EVAL, config.folder_dir, config.tfds_dir, workdir],
      cwd=root, env=env, capture_output=True, text=True)
  assert result.returncode == 0, result.stderr[-2000:]
  assert 'covered 16' in result.stdout


def test_each_process_reads_its_own_share_in_equal_steps(loaded):
  config, _, data = loaded
  shares = [list(pipeline.InputPipeline(data, config, 6, process_index=i,
                                        process_count=2).eval_batches('validation'))
            for i in range(2)]
  assert len(shares[0]) == len(shares[1]) == 2  # ceil(8 / 6), padded where short.
  seen = [np.concatenate([b['example_id'][b['mask']] for b in share]) for share in shares]
  assert not set(seen[0]) & set(seen[1])
  assert sorted(np.concatenate(seen).tolist()) == sorted(data.split_ids('validation').tolist())


def test_training_epochs_are_balanced_reproducible_and_drop_the_remainder(loaded):
  config, _, data = loaded
  stream = pipeline.InputPipeline(data, config, 8, seed=0)
  assert stream.steps_per_epoch == 56 // 8
  epoch = list(stream.train_epoch(0))
  assert len(epoch) == 7 and all(b['image'].shape == (8, 32, 32, 3) for b in epoch)
  assert all(b['mask'].all() and np.all(b['weight'] == 1) for b in epoch)
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
    config = _data_config(tmp_path, root, balance=balance)
    data = pipeline.load(config, str(tmp_path / 'work'), seed=0)
    stream = pipeline.InputPipeline(data, config, 7, seed=0)
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


def test_bad_files_stop_the_run_unless_skipped(tmp_path):
  root = tmp_path / 'images'
  data_trees.write_folder(str(root), patients_per_stratum=3)
  (root / 'cxr' / 'COVID' / 'junk.png').write_text('hello')
  with open(root / 'manifest.csv', 'a') as f:
    f.write('cxr/COVID/junk.png,COVID,cxr,junk\n')
  config = _data_config(tmp_path, root)
  with pytest.raises(sources.DataSourceError, match='(?s)1 image files cannot be used:.*junk.png'):
    pipeline.load(config, str(tmp_path / 'work'), seed=0)
  config.skip_bad = True
  data = pipeline.load(config, str(tmp_path / 'work'), seed=0)
  assert len(data.facts) == 24
  assert [entry['file'] for entry in data.report['bad_files']] == [str(root / 'cxr/COVID/junk.png')]


def test_leaking_split_file_is_refused_after_the_audit_is_written(tmp_path):
  root = tmp_path / 'images'
  data_trees.write_folder(str(root), patients_per_stratum=3)
  config = _data_config(tmp_path, root)
  workdir = tmp_path / 'work'
  data = pipeline.load(config, str(workdir), seed=0)
  key = next(k for k, split in data.assignment.items() if k.endswith('cxr/COVID/0_0.png'))
  split = json.loads((workdir / 'split.json').read_text())
  split['assignment'][key] = 'test' if data.assignment[key] != 'test' else 'train'
  (workdir / 'split.json').write_text(json.dumps(split))
  with pytest.raises(audit.LeakageError, match='cxr-COVID-0'):
    pipeline.load(config, str(workdir), seed=0)
  assert json.loads((workdir / 'audit.json').read_text())['patients_across_splits']


def test_no_data_explains_how_to_get_it_and_run_the_demo(tmp_path):
  config = default.get_config().data
  with pytest.raises(sources.DataSourceError, match='--config.data.synthetic=True'):
    pipeline.load(config, str(tmp_path), seed=0)


def test_pad_resize_keeps_the_whole_image():
  import tensorflow as tf
  image = tf.fill((20, 40, 3), tf.constant(200, tf.uint8))
  padded = pipeline.resize(image, 32, 'pad').numpy()
  assert np.all(padded[8:24] == 200) and np.all(padded[:8] == 0) and np.all(padded[24:] == 0)
  assert np.all(pipeline.resize(image, 32, 'squash').numpy() == 200)


@pytest.mark.slow
@pytest.mark.skipif(not os.path.isdir(REALMINI),
                    reason='../shared/data/realmini (real CXR and CT images) is absent')
def test_realmini_loads_all_images_with_no_patient_in_two_splits(tmp_path):
  config = _data_config(tmp_path, os.path.abspath(REALMINI))
  data = pipeline.load(config, str(tmp_path / 'work'), seed=0)
  assert len(data.facts) + len(data.report['bad_files']) == 1000
  assert data.report['bad_files'] == []
  assert data.report['patients_across_splits'] == []
  by_patient = collections.defaultdict(set)
  for fact in data.facts:
    by_patient[fact.record.patient_id].add(data.assignment.get(fact.record.key, 'dropped'))
  assert all(len(found - {'dropped'}) <= 1 for found in by_patient.values())


def test_a_reading_process_writes_nothing_and_evaluation_data_are_all_test(loaded):
  config, workdir, data = loaded
  reader_dir = os.path.join(os.path.dirname(workdir), 'reader')
  # Another process reads the split process 0 wrote and writes no file of its own.
  config_with_split = _data_config(
      pathlib.Path(os.path.dirname(workdir)), config.folder_dir,
      split_file=os.path.join(workdir, pipeline.SPLIT_FILE))
  read = pipeline.load(config_with_split, reader_dir, seed=0, write_files=False)
  assert read.assignment == data.assignment
  assert not os.path.exists(reader_dir)
  external = pipeline.load(config, reader_dir, seed=0, write_files=False, all_test=True)
  assert set(external.assignment.values()) == {'test'}
  assert len(external.split_ids('test')) == len(external.facts) == 80
