import hashlib
import os

import numpy as np
from PIL import Image

from hybridcovid.data import audit, builders
import data_trees


def test_folder_builder_stores_images_and_facts_once(tmp_path):
  root = str(tmp_path / 'images')
  relpaths = data_trees.write_folder(root, patients_per_stratum=2)
  with open(os.path.join(root, 'cxr/COVID/broken.png'), 'w') as f:
    f.write('not an image')
  with open(os.path.join(root, 'manifest.csv'), 'a') as f:
    f.write('cxr/COVID/broken.png,COVID,cxr,cxr-COVID-9\n')
  builder = builders.prepared_builder('folder', root, str(tmp_path / 'tfds'), (-600, 1500))
  facts = builders.read_facts(builder)
  assert len(facts) == len(relpaths) + 1
  by_path = {fact.record.relpath: fact for fact in facts}
  fact = by_path['ct/Normal/1_0.png']
  with open(os.path.join(root, 'ct/Normal/1_0.png'), 'rb') as f:
    assert fact.sha256 == hashlib.sha256(f.read()).hexdigest()
  pixels = np.asarray(Image.open(os.path.join(root, 'ct/Normal/1_0.png')).convert('RGB'))
  np.testing.assert_array_equal(fact.thumbnail, audit.thumbnail(pixels))
  assert (fact.height, fact.width, fact.format, fact.bits) == (40, 52, 'png', 8)
  assert (fact.record.label, fact.record.modality, fact.record.patient_id) == (0, 'ct', 'ct-Normal-1')
  broken = by_path['cxr/COVID/broken.png']
  assert 'broken.png: not a PNG, JPEG or DICOM file' in broken.error
  # Prepared once: a second call reads the stored data.
  again = builders.prepared_builder('folder', root, str(tmp_path / 'tfds'), (-600, 1500))
  assert again.data_dir == builder.data_dir
  stored = next(iter(builder.as_dataset(split=builders.ALL_SPLIT).filter(
      lambda ex: ex['relpath'] == 'ct/Normal/1_0.png')))
  np.testing.assert_array_equal(stored['image'].numpy(), pixels)
  # A changed folder is prepared anew, never read from stale data.
  data_trees.write_png(os.path.join(root, 'ct/Normal/extra.png'), 99)
  with open(os.path.join(root, 'manifest.csv'), 'a') as f:
    f.write('ct/Normal/extra.png,Normal,ct,ct-Normal-9\n')
  changed = builders.prepared_builder('folder', root, str(tmp_path / 'tfds'), (-600, 1500))
  assert changed.data_dir != builder.data_dir
  assert len(builders.read_facts(changed)) == len(facts) + 1


def test_kaggle_builders_read_their_layouts(tmp_path):
  data_trees.write_png(str(tmp_path / 'cxr/COVID/images/COVID-1.png'), 1)
  data_trees.write_png(str(tmp_path / 'cxr/Normal/images/Normal-1.png'), 2, mode='RGB')
  data_trees.write_png(str(tmp_path / 'ct/COVID/Covid (1).png'), 3)
  data_trees.write_png(str(tmp_path / 'ct/non-COVID/Non-Covid (1).png'), 4)
  tfds_dir = str(tmp_path / 'tfds')
  cxr = builders.read_facts(builders.prepared_builder(
      'radiography', str(tmp_path / 'cxr'), tfds_dir, (-600, 1500)))
  ct = builders.read_facts(builders.prepared_builder(
      'ctscan', str(tmp_path / 'ct'), tfds_dir, (-600, 1500)))
  assert [(f.record.relpath, f.record.label, f.record.source) for f in cxr] == [
      ('COVID/images/COVID-1.png', 1, 'covid19-radiography-database'),
      ('Normal/images/Normal-1.png', 0, 'covid19-radiography-database')]
  assert [(f.record.relpath, f.record.label, f.record.modality) for f in ct] == [
      ('COVID/Covid (1).png', 1, 'ct'), ('non-COVID/Non-Covid (1).png', 0, 'ct')]
