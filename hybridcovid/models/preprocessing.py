"""Input normalisations that the ImageNet checkpoints were trained with.

Backbones take RGB images in [0, 255] (uint8 or float) and call these
themselves, so callers never normalise.
"""

import jax.numpy as jnp

MIN_IMAGE_SIZE = 32
CAFFE_BGR_MEAN = (103.939, 116.779, 123.68)
IMAGENET_RGB_MEAN = (0.485, 0.456, 0.406)
IMAGENET_RGB_STD = (0.229, 0.224, 0.225)


def check_image_batch(images: jnp.ndarray, model_name: str) -> None:
  """Raises ValueError unless `images` is (N, H, W, 3) with H, W >= 32."""
  if images.ndim != 4 or images.shape[-1] != 3:
    raise ValueError(
        f'{model_name} expects RGB images shaped (batch, height, width, 3); '
        f'got shape {tuple(images.shape)}. Convert grey images to 3 channels.')
  height, width = images.shape[1:3]
  if min(height, width) < MIN_IMAGE_SIZE:
    raise ValueError(
        f'{model_name} needs images of at least {MIN_IMAGE_SIZE}x'
        f'{MIN_IMAGE_SIZE} pixels; got {height}x{width}. Resize them first.')


def caffe(images: jnp.ndarray) -> jnp.ndarray:
  """Keras "caffe" mode: RGB to BGR, subtract the BGR ImageNet mean, no scaling."""
  bgr = images.astype(jnp.float32)[..., ::-1]
  return bgr - jnp.asarray(CAFFE_BGR_MEAN, jnp.float32)


def imagenet_mean_std(images: jnp.ndarray) -> jnp.ndarray:
  """Scales to [0, 1], then subtracts the ImageNet mean and divides by its std."""
  scaled = images.astype(jnp.float32) / 255.0
  mean = jnp.asarray(IMAGENET_RGB_MEAN, jnp.float32)
  std = jnp.asarray(IMAGENET_RGB_STD, jnp.float32)
  return (scaled - mean) / std
