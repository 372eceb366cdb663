import ml_collections
import numpy as np
from PIL import Image
import pytest

from configs import default
from hybridcovid.data import input_pipeline, loading, resize
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
  reference = input_pipeline.resize(image, size, method).numpy()
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


def test_bounded_shrinks_the_longer_side_by_box_averages():
  wide = np.zeros((600, 1000, 3), np.uint8)
  assert resize.bounded(wide, 512).shape == (307, 512, 3)
  assert resize.bounded(wide.transpose(1, 0, 2), 512).shape == (512, 307, 3)
  blocks = np.array([[10, 20, 30, 32], [30, 40, 50, 52], [0, 0, 255, 255], [4, 4, 255, 255]],
                    np.uint8)
  halved = resize.bounded(np.repeat(blocks[..., None], 3, axis=-1), 2)
  np.testing.assert_array_equal(halved[..., 0], [[25, 41], [2, 255]])
  np.testing.assert_array_equal(halved[..., 0], halved[..., 2])
  # Never enlarged; 0 keeps every image whole.
  small = np.ones((40, 52, 3), np.uint8)
  assert resize.bounded(small, 512) is small and resize.bounded(wide, 0) is wide


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
  assert rows == [{'path': str(tmp_path / 'cxr.png'), 'modality': 'unknown', 'study': None}]
  assert [problem['path'] for problem in problems] == [str(tmp_path / 'notes.txt')]
  assert 'not a PNG, JPEG or DICOM file' in problems[0]['reason']


def test_prediction_sees_the_pixels_evaluation_sees_when_images_are_bounded(tmp_path):
  data_trees.write_folder(str(tmp_path / 'images'), patients_per_stratum=1, size=(90, 130))
  config = default.get_config().data
  config.update({'folder_dir': str(tmp_path / 'images'), 'tfds_dir': str(tmp_path / 'tfds'),
                 'image_size': 32, 'max_stored_side': 64, 'prepare_processes': 1})
  data = loading.load(config, str(tmp_path / 'work'), seed=0, all_test=True)
  assert {(fact.height, fact.width) for fact in data.facts} == {(90, 130)}
  batches = list(input_pipeline.InputPipeline(data, config, 8).eval_batches('test'))
  images = np.concatenate([batch['image'][batch['mask']] for batch in batches])
  ids = np.concatenate([batch['example_id'][batch['mask']] for batch in batches])
  assert len(ids) == 8
  predicted, _, problems = resize.read_resized(
      [data.facts[i].record.path for i in ids], config)
  assert not problems
  difference = np.abs(np.stack(predicted).astype(int) - images.astype(int))
  assert difference.max() <= 1 and np.mean(difference > 0) < 0.01
  # A config saved before max_stored_side existed resizes whole images: other pixels.
  old = ml_collections.ConfigDict({'image_size': 32, 'resize': 'pad',
                                   'ct_window_level': -600.0, 'ct_window_width': 1500.0})
  whole, _, _ = resize.read_resized([data.facts[ids[0]].record.path], old)
  assert np.abs(whole[0].astype(int) - images[0].astype(int)).max() > 1
