import numpy as np
import pytest

from hybridcovid.models import preprocessing


def test_caffe_matches_keras_resnet_preprocess_input():
  import keras
  images = np.random.default_rng(1).uniform(0, 255, (2, 5, 7, 3)).astype(np.float32)
  expected = keras.applications.resnet.preprocess_input(images.copy())
  np.testing.assert_allclose(preprocessing.caffe(images), expected, rtol=1e-6, atol=1e-4)


def test_imagenet_mean_std_matches_keras_torch_mode():
  from keras.applications import imagenet_utils
  images = np.random.default_rng(2).uniform(0, 255, (2, 5, 7, 3)).astype(np.float32)
  expected = imagenet_utils.preprocess_input(images.copy(), mode='torch')
  np.testing.assert_allclose(preprocessing.imagenet_mean_std(images), expected,
                             rtol=1e-5, atol=1e-5)


def test_uint8_and_float_inputs_agree():
  images = np.random.default_rng(3).integers(0, 256, (1, 4, 4, 3), dtype=np.uint8)
  np.testing.assert_array_equal(preprocessing.caffe(images),
                                preprocessing.caffe(images.astype(np.float32)))


@pytest.mark.parametrize('shape, message', [
    ((1, 31, 64, 3), 'at least 32x32 pixels; got 31x64'),
    ((1, 64, 64, 1), 'shaped \\(batch, height, width, 3\\)'),
    ((64, 64, 3), 'shaped \\(batch, height, width, 3\\)'),
])
def test_check_image_batch_rejects_bad_shapes(shape, message):
  with pytest.raises(ValueError, match=message):
    preprocessing.check_image_batch(np.zeros(shape), 'ResNet50')
