import ml_collections
import numpy as np
from PIL import Image
import pytest

from hybridcovid.data import pipeline, resize
import data_trees


@pytest.mark.parametrize('height, width, size, method', [
    (300, 200, 64, 'pad'), (97, 251, 48, 'pad'), (40, 40, 64, 'pad'), (120, 90, 32, 'squash'),
    (17, 300, 32, 'pad')])
def test_resize_gives_the_training_pipelines_pixels(height, width, size, method):
  rng = np.random.default_rng(height)
  # Smooth content with sharp edges, like a radiograph.
  y, x = np.mgrid[:height, :width]
  grey = 127 + 100 * np.sin(x / 7.0) * np.cos(y / 11.0) + 20 * (x > width // 2)
  image = np.clip(grey[..., None] + rng.normal(0, 5, (height, width, 3)), 0, 255)
  image = image.astype(np.uint8)
  ours = resize.resize(image, size, method)
  reference = pipeline.resize(image, size, method).numpy()
  assert ours.shape == reference.shape == (size, size, 3)
  difference = np.abs(ours.astype(int) - reference.astype(int))
  # Equal up to rounding of values a hair from .5.
  assert difference.max() <= 1 and np.mean(difference > 0) < 0.01
  # The padding (black rows or columns) sits exactly where TensorFlow puts it.
  np.testing.assert_array_equal(ours.max(axis=(1, 2)) == 0, reference.max(axis=(1, 2)) == 0)
  np.testing.assert_array_equal(ours.max(axis=(0, 2)) == 0, reference.max(axis=(0, 2)) == 0)


def test_unknown_method_is_refused():
  with pytest.raises(ValueError, match="choose 'pad' or 'squash'"):
    resize.resize(np.zeros((4, 4, 3), np.uint8), 8, 'crop')


def test_read_resized_scores_readable_files_and_names_the_others(tmp_path):
  data_trees.write_png(str(tmp_path / 'cxr.png'), seed=0, size=(40, 52))
  (tmp_path / 'notes.txt').write_text('not an image')
  config = ml_collections.ConfigDict({'image_size': 32, 'resize': 'pad',
                                      'ct_window_level': -600.0, 'ct_window_width': 1500.0})
  images, rows, problems = resize.read_resized(
      [str(tmp_path / 'cxr.png'), str(tmp_path / 'notes.txt')], config)
  with Image.open(tmp_path / 'cxr.png') as image:
    grey = np.asarray(image)
  expected = resize.resize(np.repeat(grey[..., None], 3, axis=-1), 32, 'pad')
  assert len(images) == 1
  np.testing.assert_array_equal(images[0], expected)
  assert rows == [{'path': str(tmp_path / 'cxr.png'), 'modality': 'unknown'}]
  assert [problem['path'] for problem in problems] == [str(tmp_path / 'notes.txt')]
  assert 'not a PNG, JPEG or DICOM file' in problems[0]['reason']
