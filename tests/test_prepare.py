import hashlib
import io

import numpy as np
from PIL import Image

from hybridcovid.data import audit, prepare, resize, sources
import data_trees

WINDOW = (-600.0, 1500.0)


def _record(path, relpath, label=1) -> sources.Record:
  return sources.Record(path=str(path), relpath=relpath, label=label, modality='cxr',
                        source='test', patient_id=relpath, patient_known=True)


def _pixels(png: bytes) -> np.ndarray:
  with Image.open(io.BytesIO(png)) as image:
    return np.asarray(image)


def test_large_image_is_stored_bounded_with_the_files_facts(tmp_path):
  data_trees.write_png(str(tmp_path / 'wide.png'), 0, size=(600, 1000))
  example = prepare.prepare_example(_record(tmp_path / 'wide.png', 'wide.png'), WINDOW, 512)
  with Image.open(tmp_path / 'wide.png') as image:
    grey = np.asarray(image)
  rgb = np.repeat(grey[..., None], 3, axis=-1)
  stored = _pixels(example['image'])
  # Grey, so stored as one channel; a box average of the original, 512 pixels wide.
  assert stored.shape == (307, 512)
  np.testing.assert_array_equal(stored, resize.bounded(rgb, 512)[..., 0])
  assert (example['height'], example['width'], example['format'], example['bits']) == (
      600, 1000, 'png', 8)
  np.testing.assert_array_equal(example['thumbnail'], audit.thumbnail(resize.bounded(rgb, 512)))
  assert example['sha256'] == hashlib.sha256((tmp_path / 'wide.png').read_bytes()).hexdigest()
  assert (example['label'], example['relpath'], example['error']) == (1, 'wide.png', '')


def test_small_image_is_stored_exactly(tmp_path):
  data_trees.write_png(str(tmp_path / 'grey.png'), 1, size=(40, 52))
  data_trees.write_png(str(tmp_path / 'colour.png'), 2, size=(40, 52), mode='RGB')
  for name in ('grey.png', 'colour.png'):
    example = prepare.prepare_example(_record(tmp_path / name, name), WINDOW, 512)
    with Image.open(tmp_path / name) as image:
      np.testing.assert_array_equal(_pixels(example['image']), np.asarray(image))


def test_processes_give_the_same_examples_in_order_bad_files_included(tmp_path):
  records = []
  for index in range(5):
    data_trees.write_png(str(tmp_path / f'{index}.png'), index, size=(30 + index, 20))
    records.append(_record(tmp_path / f'{index}.png', f'{index}.png', label=index % 2))
  (tmp_path / 'broken.png').write_text('not an image')
  records.insert(2, _record(tmp_path / 'broken.png', 'broken.png'))
  records.insert(4, _record(tmp_path / 'missing.png', 'missing.png'))
  one = list(prepare.prepare_examples(records, WINDOW, 24, processes=1))
  two = list(prepare.prepare_examples(records, WINDOW, 24, processes=2))
  assert [example['relpath'] for example in two] == [record.relpath for record in records]
  for alone, pooled in zip(one, two, strict=True):
    assert alone.keys() == pooled.keys()
    for key in alone:
      np.testing.assert_array_equal(alone[key], pooled[key])
  assert 'broken.png: not a PNG, JPEG or DICOM file' in two[2]['error']
  assert 'missing.png: cannot be read' in two[4]['error']
  assert _pixels(two[2]['image']).shape == (1, 1) and two[2]['sha256'] == ''
  assert [_pixels(two[i]['image']).shape for i in (0, 1)] == [(24, 16), (24, 15)]
