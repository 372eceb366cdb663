import hashlib
import os

import numpy as np
from PIL import Image

from hybridcovid.data import audit, builders, resize
import data_trees

WINDOW = (-600, 1500)


def _prepared(layout, root, tfds_dir, max_stored_side=512):
  return builders.prepared_builder(layout, str(root), str(tfds_dir), WINDOW,
                                   max_stored_side=max_stored_side, processes=1)


def _stored_image(builder, relpath):
  return next(iter(builder.as_dataset(split=builders.ALL_SPLIT).filter(
      lambda ex: ex['relpath'] == relpath)))['image'].numpy()


def test_folder_builder_stores_images_and_facts_once(tmp_path):
  root = str(tmp_path / 'images')
  relpaths = data_trees.write_folder(root, patients_per_stratum=2)
  with open(os.path.join(root, 'cxr/COVID/broken.png'), 'w') as f:
    f.write('not an image')
  with open(os.path.join(root, 'manifest.csv'), 'a') as f:
    f.write('cxr/COVID/broken.png,COVID,cxr,cxr-COVID-9\n')
  builder = _prepared('folder', root, tmp_path / 'tfds')
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
  again = _prepared('folder', root, tmp_path / 'tfds')
  assert again.data_dir == builder.data_dir
  # Smaller than max_stored_side: stored exactly.
  np.testing.assert_array_equal(_stored_image(builder, 'ct/Normal/1_0.png'), pixels)
  # A changed folder is prepared anew, never read from stale data.
  data_trees.write_png(os.path.join(root, 'ct/Normal/extra.png'), 99)
  with open(os.path.join(root, 'manifest.csv'), 'a') as f:
    f.write('ct/Normal/extra.png,Normal,ct,ct-Normal-9\n')
  changed = _prepared('folder', root, tmp_path / 'tfds')
  assert changed.data_dir != builder.data_dir
  assert len(builders.read_facts(changed)) == len(facts) + 1


def test_kaggle_builders_read_their_layouts(tmp_path):
  data_trees.write_png(str(tmp_path / 'cxr/COVID/images/COVID-1.png'), 1)
  data_trees.write_png(str(tmp_path / 'cxr/Normal/images/Normal-1.png'), 2, mode='RGB')
  data_trees.write_png(str(tmp_path / 'ct/COVID/Covid (1).png'), 3)
  data_trees.write_png(str(tmp_path / 'ct/non-COVID/Non-Covid (1).png'), 4)
  tfds_dir = str(tmp_path / 'tfds')
  cxr = builders.read_facts(_prepared('radiography', tmp_path / 'cxr', tfds_dir))
  ct = builders.read_facts(_prepared('ctscan', tmp_path / 'ct', tfds_dir))
  assert [(f.record.relpath, f.record.label, f.record.source) for f in cxr] == [
      ('COVID/images/COVID-1.png', 1, 'covid19-radiography-database'),
      ('Normal/images/Normal-1.png', 0, 'covid19-radiography-database')]
  assert [(f.record.relpath, f.record.label, f.record.modality) for f in ct] == [
      ('COVID/Covid (1).png', 1, 'ct'), ('non-COVID/Non-Covid (1).png', 0, 'ct')]


def test_stored_images_are_bounded_and_a_new_bound_prepares_anew(tmp_path):
  root = tmp_path / 'images'
  data_trees.write_png(str(root / 'cxr/COVID/wide.png'), 0, size=(600, 1000))
  data_trees.write_png(str(root / 'cxr/Normal/small.png'), 1, size=(40, 52))
  with Image.open(root / 'cxr/COVID/wide.png') as image:
    wide = np.repeat(np.asarray(image)[..., None], 3, axis=-1)
  builder = _prepared('folder', root, tmp_path / 'tfds', max_stored_side=512)
  stored = _stored_image(builder, 'cxr/COVID/wide.png')
  assert stored.shape == (307, 512, 3)
  np.testing.assert_array_equal(stored, resize.bounded(wide, 512))
  # The facts describe the file; the thumbnail, the stored image.
  facts = {fact.record.relpath: fact for fact in builders.read_facts(builder)}
  assert (facts['cxr/COVID/wide.png'].height, facts['cxr/COVID/wide.png'].width) == (600, 1000)
  np.testing.assert_array_equal(facts['cxr/COVID/wide.png'].thumbnail, audit.thumbnail(stored))
  assert _stored_image(builder, 'cxr/Normal/small.png').shape == (40, 52, 3)

  whole = _prepared('folder', root, tmp_path / 'tfds', max_stored_side=0)
  assert whole.data_dir != builder.data_dir
  np.testing.assert_array_equal(_stored_image(whole, 'cxr/COVID/wide.png'), wide)
