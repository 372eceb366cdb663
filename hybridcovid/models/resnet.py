"""ResNet50 with the exact layout of keras.applications ResNet50 (v1).

Module names mirror the Keras layer names (`conv2_block1/1_conv` is Keras'
`conv2_block1_1_conv`) so converted ImageNet weights map one to one.
"""

import functools
from typing import Any, Callable

import flax.linen as nn
import jax.numpy as jnp

from hybridcovid.models import preprocessing
from hybridcovid.models.conv import Conv, max_pool

# (filters, blocks, stride of the first block) for stages conv2 .. conv5.
STAGES = ((64, 3, 1), (128, 4, 2), (256, 6, 2), (512, 3, 2))
BATCHNORM_EPSILON = 1.001e-5
BATCHNORM_MOMENTUM = 0.99


def residual_scale_init(zero_init_residual: bool) -> Callable[..., jnp.ndarray]:
  """The initial scale of a residual branch's last BatchNorm: ones (Keras), or zeros.

  Zeros start each residual block as the identity (Goyal et al. 2017,
  torchvision's `zero_init_residual`): a randomly initialised deep network
  then passes its input's differences on instead of drowning them, and
  trains from scratch in far fewer steps. Converted weights replace it.
  """
  return nn.initializers.zeros if zero_init_residual else nn.initializers.ones


class Bottleneck(nn.Module):
  """Keras `block1`: 1x1 (carries the stride), 3x3, 1x1 with a 4x expansion."""

  filters: int
  strides: int = 1
  projection: bool = False
  dtype: Any = jnp.float32
  axis_name: str | None = None
  batchnorm_momentum: float = BATCHNORM_MOMENTUM
  conv_impl: str = 'auto'
  zero_init_residual: bool = False

  @nn.compact
  def __call__(self, x: jnp.ndarray, train: bool) -> jnp.ndarray:
    conv = functools.partial(Conv, dtype=self.dtype, padding='VALID',
                             conv_impl=self.conv_impl)
    norm = functools.partial(
        nn.BatchNorm, use_running_average=not train, momentum=self.batchnorm_momentum,
        epsilon=BATCHNORM_EPSILON, dtype=self.dtype, axis_name=self.axis_name)
    shortcut = x
    if self.projection:
      shortcut = conv(4 * self.filters, (1, 1), self.strides, name='0_conv')(x)
      shortcut = norm(name='0_bn')(shortcut)
    y = conv(self.filters, (1, 1), self.strides, name='1_conv')(x)
    y = nn.relu(norm(name='1_bn')(y))
    y = conv(self.filters, (3, 3), padding='SAME', name='2_conv')(y)
    y = nn.relu(norm(name='2_bn')(y))
    y = conv(4 * self.filters, (1, 1), name='3_conv')(y)
    y = norm(name='3_bn', scale_init=residual_scale_init(self.zero_init_residual))(y)
    return nn.relu(shortcut + y)


class ResNet50(nn.Module):
  """ResNet50 feature extractor: RGB in [0, 255] to the (N, H/32, W/32, 2048) map.

  Applies the Keras "caffe" input normalisation its ImageNet weights expect.
  `axis_name` names the device axis over which BatchNorm statistics are
  averaged in training (None: this device's batch only);
  `batchnorm_momentum` is the running statistics' decay (Keras': 0.99);
  `conv_impl` how convolutions and the max pool run (see models/conv.py);
  `zero_init_residual` starts every block as the identity (see
  `residual_scale_init`).
  """

  dtype: Any = jnp.float32
  axis_name: str | None = None
  batchnorm_momentum: float = BATCHNORM_MOMENTUM
  conv_impl: str = 'auto'
  zero_init_residual: bool = False

  @nn.compact
  def __call__(self, images: jnp.ndarray, train: bool = False) -> jnp.ndarray:
    preprocessing.check_image_batch(images, 'ResNet50')
    x = preprocessing.caffe(images).astype(self.dtype)
    x = jnp.pad(x, ((0, 0), (3, 3), (3, 3), (0, 0)))
    x = Conv(64, (7, 7), strides=2, padding='VALID', dtype=self.dtype,
             conv_impl=self.conv_impl, name='conv1_conv')(x)
    x = nn.BatchNorm(use_running_average=not train, momentum=self.batchnorm_momentum,
                     epsilon=BATCHNORM_EPSILON, dtype=self.dtype,
                     axis_name=self.axis_name, name='conv1_bn')(x)
    x = nn.relu(x)
    # Keras pads with zeros, then pools without padding; Flax 'SAME' differs.
    x = jnp.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))
    x = max_pool(x, 3, 2, self.conv_impl)
    for stage, (filters, blocks, stride) in enumerate(STAGES, start=2):
      for block in range(1, blocks + 1):
        x = Bottleneck(filters, strides=stride if block == 1 else 1,
                       projection=block == 1, dtype=self.dtype,
                       axis_name=self.axis_name,
                       batchnorm_momentum=self.batchnorm_momentum,
                       conv_impl=self.conv_impl, zero_init_residual=self.zero_init_residual,
                       name=f'conv{stage}_block{block}')(x, train)
    return x
