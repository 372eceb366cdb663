"""Training augmentation in TF ops: one affine warp, then brightness and contrast.

Each transform's range is a config field (see `configs/default.py`). Random
draws are stateless, from a per-example seed, so an epoch is reproducible.
Horizontal flips are off by default: chest anatomy is not mirror-symmetric.
"""

import math

import ml_collections
import tensorflow as tf


def affine_transform(angle: tf.Tensor, zoom: tf.Tensor, shift: tf.Tensor,
                     height: int, width: int) -> tf.Tensor:
  """The 8 projective parameters mapping output pixels to input pixels.

  The output is the input rotated by `angle` (radians) and scaled by `zoom`
  about the centre, then moved by `shift` (pixels, x then y).
  """
  cos, sin = tf.cos(angle) / zoom, tf.sin(angle) / zoom
  centre_x, centre_y = (width - 1) / 2, (height - 1) / 2
  from_x, from_y = centre_x + shift[0], centre_y + shift[1]
  return tf.stack([cos, sin, centre_x - cos * from_x - sin * from_y,
                   -sin, cos, centre_y + sin * from_x - cos * from_y, 0.0, 0.0])


def random_augment(image: tf.Tensor, seed: tf.Tensor,
                   config: ml_collections.ConfigDict) -> tf.Tensor:
  """Randomly rotates, shifts, zooms, flips and changes brightness and contrast of a uint8 image."""
  height, width = image.shape[0], image.shape[1]
  seeds = tf.random.experimental.stateless_split(seed, 6)

  def uniform(index, limit, shape=()):
    return tf.random.stateless_uniform(shape, seeds[index], -limit, limit)

  angle = uniform(0, config.rotation_degrees) * (math.pi / 180)
  zoom = 1.0 + uniform(1, config.zoom_fraction)
  shift = uniform(2, config.shift_fraction, [2]) * tf.constant([width, height], tf.float32)
  warped = tf.raw_ops.ImageProjectiveTransformV3(
      images=tf.cast(image, tf.float32)[None],
      transforms=affine_transform(angle, zoom, shift, height, width)[None],
      output_shape=tf.constant([height, width]), fill_value=0.0,
      interpolation='BILINEAR', fill_mode='CONSTANT')[0]
  if config.horizontal_flip:
    flip = tf.random.stateless_uniform([], seeds[3]) < 0.5
    warped = tf.cond(flip, lambda: warped[:, ::-1], lambda: warped)
  warped = warped + uniform(4, config.brightness) * 255.0
  mean = tf.reduce_mean(warped)
  warped = (warped - mean) * (1.0 + uniform(5, config.contrast)) + mean
  return tf.cast(tf.clip_by_value(tf.round(warped), 0, 255), tf.uint8)
