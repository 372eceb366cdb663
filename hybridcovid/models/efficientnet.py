"""EfficientNetB0 with the exact layout of keras.applications EfficientNetB0.

Module names mirror the Keras layer names (`block2a/dwconv` is Keras'
`block2a_dwconv`) so converted ImageNet weights map one to one.
"""

import dataclasses
import functools
from typing import Any, Iterator

import flax.linen as nn
import jax.numpy as jnp

from hybridcovid.models import preprocessing
from hybridcovid.models.conv import Conv, DepthwiseConv
from hybridcovid.models.resnet import residual_scale_init

BATCHNORM_EPSILON = 1e-3
BATCHNORM_MOMENTUM = 0.99
SQUEEZE_EXCITE_RATIO = 0.25
STOCHASTIC_DEPTH_RATE = 0.2
STEM_FILTERS = 32
TOP_FILTERS = 1280


@dataclasses.dataclass(frozen=True)
class StageArgs:
  kernel_size: int
  repeats: int
  filters_in: int
  filters_out: int
  expand_ratio: int
  strides: int


# keras.applications DEFAULT_BLOCKS_ARGS at width and depth coefficient 1.0.
B0_STAGES = (
    StageArgs(3, 1, 32, 16, 1, 1),
    StageArgs(3, 2, 16, 24, 6, 2),
    StageArgs(5, 2, 24, 40, 6, 2),
    StageArgs(3, 3, 40, 80, 6, 2),
    StageArgs(5, 3, 80, 112, 6, 1),
    StageArgs(5, 4, 112, 192, 6, 2),
    StageArgs(3, 1, 192, 320, 6, 1),
)


@dataclasses.dataclass(frozen=True)
class BlockArgs:
  name: str
  kernel_size: int
  filters_in: int
  filters_out: int
  expand_ratio: int
  strides: int
  drop_rate: float


def b0_blocks() -> Iterator[BlockArgs]:
  """The 16 MBConv blocks in order, named and with drop rates as Keras does."""
  total = sum(stage.repeats for stage in B0_STAGES)
  index = 0
  for stage_number, stage in enumerate(B0_STAGES, start=1):
    for repeat in range(stage.repeats):
      yield BlockArgs(
          name=f'block{stage_number}{chr(ord("a") + repeat)}',
          kernel_size=stage.kernel_size,
          filters_in=stage.filters_in if repeat == 0 else stage.filters_out,
          filters_out=stage.filters_out,
          expand_ratio=stage.expand_ratio,
          strides=stage.strides if repeat == 0 else 1,
          drop_rate=STOCHASTIC_DEPTH_RATE * index / total)
      index += 1


class MBConv(nn.Module):
  """Inverted residual block with squeeze-and-excitation (Keras `block`)."""

  args: BlockArgs
  dtype: Any = jnp.float32
  axis_name: str | None = None
  batchnorm_momentum: float = BATCHNORM_MOMENTUM
  conv_impl: str = 'auto'
  zero_init_residual: bool = False

  @nn.compact
  def __call__(self, inputs: jnp.ndarray, train: bool) -> jnp.ndarray:
    args = self.args
    conv = functools.partial(Conv, dtype=self.dtype, padding='SAME',
                             use_bias=False, conv_impl=self.conv_impl)
    norm = functools.partial(
        nn.BatchNorm, use_running_average=not train, momentum=self.batchnorm_momentum,
        epsilon=BATCHNORM_EPSILON, dtype=self.dtype, axis_name=self.axis_name)
    filters = args.filters_in * args.expand_ratio
    x = inputs
    if args.expand_ratio != 1:
      x = conv(filters, (1, 1), name='expand_conv')(x)
      x = nn.swish(norm(name='expand_bn')(x))
    # TF 'SAME' equals Keras' correct_pad + 'valid' at stride 2 for these kernels.
    x = DepthwiseConv(args.kernel_size, args.strides, dtype=self.dtype,
                      conv_impl=self.conv_impl, name='dwconv')(x)
    x = nn.swish(norm(name='bn')(x))

    squeeze_filters = max(1, int(args.filters_in * SQUEEZE_EXCITE_RATIO))
    se = jnp.mean(x, axis=(1, 2), keepdims=True)
    se = Conv(squeeze_filters, (1, 1), dtype=self.dtype, conv_impl=self.conv_impl,
              name='se_reduce')(se)
    se = Conv(filters, (1, 1), dtype=self.dtype, conv_impl=self.conv_impl,
              name='se_expand')(nn.swish(se))
    x = x * nn.sigmoid(se)

    x = conv(args.filters_out, (1, 1), name='project_conv')(x)
    residual = args.strides == 1 and args.filters_in == args.filters_out
    x = norm(name='project_bn',
             scale_init=residual_scale_init(self.zero_init_residual and residual))(x)
    if residual:
      if args.drop_rate > 0:
        # Stochastic depth: drop the whole residual branch per example.
        x = nn.Dropout(args.drop_rate, broadcast_dims=(1, 2, 3),
                       deterministic=not train, name='drop')(x)
      x = x + inputs
    return x


class EfficientNetB0(nn.Module):
  """EfficientNetB0 feature extractor: RGB in [0, 255] to the (N, H/32, W/32, 1280) map.

  Applies x/255 and the ImageNet mean and std its ImageNet weights expect.
  `axis_name` names the device axis over which BatchNorm statistics are
  averaged in training (None: this device's batch only);
  `batchnorm_momentum` is the running statistics' decay (Keras': 0.99);
  `conv_impl` how convolutions run (see models/conv.py);
  `zero_init_residual` starts every residual block as the identity (see
  `resnet.residual_scale_init`).
  """

  dtype: Any = jnp.float32
  axis_name: str | None = None
  batchnorm_momentum: float = BATCHNORM_MOMENTUM
  conv_impl: str = 'auto'
  zero_init_residual: bool = False

  @nn.compact
  def __call__(self, images: jnp.ndarray, train: bool = False) -> jnp.ndarray:
    preprocessing.check_image_batch(images, 'EfficientNetB0')
    norm = functools.partial(
        nn.BatchNorm, use_running_average=not train, momentum=self.batchnorm_momentum,
        epsilon=BATCHNORM_EPSILON, dtype=self.dtype, axis_name=self.axis_name)
    x = preprocessing.imagenet_mean_std(images).astype(self.dtype)
    x = Conv(STEM_FILTERS, (3, 3), strides=2, padding='SAME', use_bias=False,
             dtype=self.dtype, conv_impl=self.conv_impl, name='stem_conv')(x)
    x = nn.swish(norm(name='stem_bn')(x))
    for block in b0_blocks():
      x = MBConv(block, dtype=self.dtype, axis_name=self.axis_name,
                 batchnorm_momentum=self.batchnorm_momentum,
                 conv_impl=self.conv_impl, zero_init_residual=self.zero_init_residual,
                 name=block.name)(x, train)
    x = Conv(TOP_FILTERS, (1, 1), use_bias=False, dtype=self.dtype,
             conv_impl=self.conv_impl, name='top_conv')(x)
    return nn.swish(norm(name='top_bn')(x))
