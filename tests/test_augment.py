import math

import numpy as np
import pytest
import tensorflow as tf

from configs import default
from hybridcovid.data import augment


def _config(**overrides):
  config = default.get_config().data.augment
  config.update(overrides)
  return config


def _still():
  return _config(rotation_degrees=0.0, shift_fraction=0.0, zoom_fraction=0.0,
                 brightness=0.0, contrast=0.0, horizontal_flip=False)


def _warp(image, angle=0.0, zoom=1.0, shift=(0.0, 0.0)):
  height, width = image.shape[:2]
  transform = augment.affine_transform(tf.constant(angle), tf.constant(zoom),
                                       tf.constant(shift), height, width)
  return tf.raw_ops.ImageProjectiveTransformV3(
      images=tf.cast(image, tf.float32)[None], transforms=transform[None],
      output_shape=tf.constant([height, width]), fill_value=0.0,
      interpolation='BILINEAR', fill_mode='CONSTANT')[0].numpy()


@pytest.fixture
def image():
  return np.random.default_rng(0).integers(0, 256, (9, 9, 3), dtype=np.uint8)


def test_quarter_turn_is_a_clockwise_rot90(image):
  np.testing.assert_allclose(_warp(image, angle=math.pi / 2),
                             np.rot90(image, k=-1), atol=1e-3)


def test_shift_moves_content_right_and_down(image):
  moved = _warp(image, shift=(2.0, 1.0))
  np.testing.assert_allclose(moved[1:, 2:], image[:-1, :-2], atol=1e-3)
  assert np.all(moved[:, :2] == 0) and np.all(moved[:1] == 0)


def test_zoom_two_magnifies_about_the_centre(image):
  zoomed = _warp(image, zoom=2.0)
  np.testing.assert_allclose(zoomed[4, 4], image[4, 4], atol=1e-3)
  # Output pixel 6 samples input 5 (4 + (6 - 4) / 2).
  np.testing.assert_allclose(zoomed[6, 6], image[5, 5], atol=1e-3)


def test_no_ranges_is_the_identity(image):
  out = augment.random_augment(tf.constant(image), tf.constant([1, 2], tf.int64), _still())
  np.testing.assert_array_equal(out.numpy(), image)


def test_draws_are_reproducible_per_seed_and_within_range():
  image = tf.fill((16, 16, 3), tf.constant(100, tf.uint8))
  config = _config(rotation_degrees=0.0, shift_fraction=0.0, zoom_fraction=0.0,
                   contrast=0.0, brightness=0.1)
  outputs = [augment.random_augment(image, tf.constant([7, i], tf.int64), config).numpy()
             for i in range(20)]
  again = augment.random_augment(image, tf.constant([7, 0], tf.int64), config).numpy()
  np.testing.assert_array_equal(outputs[0], again)
  means = np.array([out.mean() for out in outputs])
  assert np.all(np.abs(means - 100) <= 25.5 + 0.5)
  assert means.std() > 5  # Brightness really varies from seed to seed.


def test_horizontal_flip_only_when_enabled(image):
  flips = _still()
  flips.horizontal_flip = True
  results = [augment.random_augment(tf.constant(image), tf.constant([0, i], tf.int64), flips).numpy()
             for i in range(16)]
  flipped = sum(np.array_equal(r, image[:, ::-1]) for r in results)
  unchanged = sum(np.array_equal(r, image) for r in results)
  assert flipped + unchanged == 16 and 2 <= flipped <= 14
