"""Convolutions and max pooling for the backbones, in two implementations.

`conv_impl` picks one. 'xla' runs XLA's own convolution for every `Conv`,
its grouped convolution for `DepthwiseConv` and its reduce-window for
`max_pool`: what a GPU runs. 'cpu' works around XLA's CPU backend, which
runs 1x1 convolutions (their filter gradients most of all) and
convolutions over inputs smaller than the kernel several times slower than
the same matrix product, and depthwise convolutions slowest of all: those
cases of `Conv` become one matrix product of the stacked input windows
(im2col), whose gradients are matrix products too, while its other k x k
convolutions stay XLA's; `DepthwiseConv` is a sum of k*k shifted windows
times per-channel weights, which XLA fuses, with a custom gradient that
reads the input once for all k*k taps; `max_pool` is a max of shifted
windows. 'auto' is 'cpu' on XLA's CPU backend and 'xla' elsewhere. Both
compute the same function with the same parameters: `Conv` those of
`flax.linen.Conv` (kernel (k, k, in, out), optional bias), `DepthwiseConv` a
(k, k, 1, channels) kernel.
"""

import functools
from typing import Any, Sequence

import flax.linen as nn
import jax
from jax import lax
import jax.numpy as jnp
import numpy as np

DIMENSION_NUMBERS = ('NHWC', 'HWIO', 'NHWC')
CONV_IMPLS = ('auto', 'xla', 'cpu')
Padding = tuple[tuple[int, int], tuple[int, int]]


def resolve_conv_impl(conv_impl: str) -> str:
  """'xla' or 'cpu': `conv_impl` itself, or for 'auto' 'cpu' on XLA's CPU backend, else 'xla'."""
  if conv_impl not in CONV_IMPLS:
    raise ValueError(f'Unknown conv_impl {conv_impl!r}; choose from {", ".join(CONV_IMPLS)} '
                     '(config.model.conv_impl).')
  if conv_impl == 'auto':
    return 'cpu' if jax.default_backend() == 'cpu' else 'xla'
  return conv_impl


def same_padding(size: int, kernel_size: int, stride: int) -> tuple[int, int]:
  """TF 'SAME' padding (before, after) of one spatial dimension."""
  total = max((-(-size // stride) - 1) * stride + kernel_size - size, 0)
  return total // 2, total - total // 2


def _explicit_padding(padding: str | Sequence[tuple[int, int]], shape: Sequence[int],
                      kernel_shape: Sequence[int], strides: Sequence[int]) -> Padding:
  if padding == 'SAME':
    return tuple(same_padding(shape[d + 1], kernel_shape[d], strides[d]) for d in range(2))
  if padding == 'VALID':
    return ((0, 0), (0, 0))
  return tuple(tuple(pair) for pair in padding)


def _windows(x: jnp.ndarray, kernel_shape: Sequence[int], strides: Sequence[int],
             padding: Padding):
  """Yields (i, j, window): the padded input seen by kernel tap (i, j), one row per output."""
  padded = jnp.pad(x, ((0, 0), *padding, (0, 0)))
  out_h = (padded.shape[1] - kernel_shape[0]) // strides[0] + 1
  out_w = (padded.shape[2] - kernel_shape[1]) // strides[1] + 1
  for i in range(kernel_shape[0]):
    for j in range(kernel_shape[1]):
      yield i, j, padded[:, i:i + (out_h - 1) * strides[0] + 1:strides[0],
                         j:j + (out_w - 1) * strides[1] + 1:strides[1], :]


def _xla_conv(x, kernel, strides, padding):
  return lax.conv_general_dilated(x, kernel, strides, padding,
                                  dimension_numbers=DIMENSION_NUMBERS)


def conv_as_matmul(x: jnp.ndarray, kernel: jnp.ndarray, strides: tuple[int, int],
                   padding: Padding) -> jnp.ndarray:
  """An NHWC convolution as one matrix product of the stacked input windows (im2col)."""
  windows = [window for _, _, window in _windows(x, kernel.shape, strides, padding)]
  patches = windows[0] if len(windows) == 1 else jnp.concatenate(windows, axis=-1)
  # Window (i, j) holds channels c at (i * kw + j) * in + c: the kernel's row-major order.
  return jnp.einsum('nhwc,cd->nhwd', patches, kernel.reshape(-1, kernel.shape[-1]))


def _xla_is_slow(x_shape: Sequence[int], kernel_size: Sequence[int]) -> bool:
  """Where XLA:CPU's convolution is slower than `conv_as_matmul` (measured, batch 32):
  1x1 kernels (up to 4x, and 3-8x for their filter gradients), and inputs
  smaller than the kernel (a 3x3 kernel over 2x2 inputs: 40x)."""
  return (tuple(kernel_size) == (1, 1) or x_shape[1] < kernel_size[0]
          or x_shape[2] < kernel_size[1])


def max_pool(x: jnp.ndarray, window: int, stride: int, conv_impl: str = 'auto') -> jnp.ndarray:
  """Max over each `window` x `window` patch at `stride` ('VALID').

  'xla' is XLA's reduce-window. 'cpu' is a max of shifted windows, whose
  gradient is a chain of selects that XLA fuses; XLA:CPU's
  select-and-scatter gradient of a reduce-window is several times slower.
  There tied maxima share the gradient, which differs from reduce-window's
  only where equal values tie, as zeros after a ReLU do, whose gradient is
  zero.
  """
  if resolve_conv_impl(conv_impl) == 'xla':
    return nn.max_pool(x, (window, window), (stride, stride), 'VALID')
  windows = [w for _, _, w in _windows(x, (window, window), (stride, stride),
                                       ((0, 0), (0, 0)))]
  return functools.reduce(jnp.maximum, windows)


class Conv(nn.Module):
  """2-D NHWC convolution with the parameters of `flax.linen.Conv`.

  Attributes:
    features: output channels.
    kernel_size: (height, width).
    strides: an int or (height, width).
    padding: 'SAME' (TensorFlow's), 'VALID' or ((top, bottom), (left, right)).
    use_bias: whether to add a bias.
    dtype: compute dtype; parameters stay float32.
    conv_impl: 'auto', 'xla' or 'cpu' (see the module docstring).
  """

  features: int
  kernel_size: Sequence[int]
  strides: int | Sequence[int] = 1
  padding: str | Sequence[tuple[int, int]] = 'SAME'
  use_bias: bool = True
  dtype: Any = jnp.float32
  conv_impl: str = 'auto'

  @nn.compact
  def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
    strides = ((self.strides,) * 2 if isinstance(self.strides, int)
               else tuple(self.strides))
    kernel_shape = (*self.kernel_size, x.shape[-1], self.features)
    kernel = self.param('kernel', nn.initializers.lecun_normal(), kernel_shape,
                        jnp.float32).astype(self.dtype)
    x = x.astype(self.dtype)
    padding = _explicit_padding(self.padding, x.shape, self.kernel_size, strides)
    if (resolve_conv_impl(self.conv_impl) == 'cpu'
        and _xla_is_slow(x.shape, self.kernel_size)):
      y = conv_as_matmul(x, kernel, strides, padding)
    else:
      y = _xla_conv(x, kernel, strides, padding)
    if self.use_bias:
      y = y + self.param('bias', nn.initializers.zeros, (self.features,),
                         jnp.float32).astype(self.dtype)
    return y


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3))
def depthwise_as_windows(x: jnp.ndarray, kernel: jnp.ndarray, strides: tuple[int, int],
                         padding: Padding) -> jnp.ndarray:
  """An NHWC depthwise convolution (kernel (k, k, channels)) as a sum of shifted windows.

  Its gradients read the input afresh instead of keeping each window from
  the forward pass, which would hold k*k copies of the input in memory.
  """
  out = None
  for i, j, window in _windows(x, kernel.shape, strides, padding):
    term = window * kernel[i, j]
    out = term if out is None else out + term
  return out


def _depthwise_forward(x, kernel, strides, padding):
  return depthwise_as_windows(x, kernel, strides, padding), (x, kernel)


def _depthwise_backward(strides, padding, residuals, grad):
  x, kernel = residuals
  taps = list(_windows(x, kernel.shape, strides, padding))
  # One reduction with an output per tap reads the input once; k*k separate
  # reductions would each read (and copy) a window of it.
  products = tuple((window * grad).astype(jnp.float32) for _, _, window in taps)
  kernel_grad = jnp.stack(lax.reduce(
      products, (np.float32(0),) * len(products),
      lambda partial, more: tuple(a + b for a, b in zip(partial, more)),
      (0, 1, 2))).reshape(kernel.shape)
  # The input gradient scatters each tap's share back to where its window came from.
  padded_shape = [x.shape[1] + sum(padding[0]), x.shape[2] + sum(padding[1])]
  padded_grad = None
  for i, j, _ in taps:
    placed = lax.pad(grad * kernel[i, j], jnp.zeros((), grad.dtype), (
        (0, 0, 0),
        (i, padded_shape[0] - i - (grad.shape[1] - 1) * strides[0] - 1, strides[0] - 1),
        (j, padded_shape[1] - j - (grad.shape[2] - 1) * strides[1] - 1, strides[1] - 1),
        (0, 0, 0)))
    padded_grad = placed if padded_grad is None else padded_grad + placed
  input_grad = padded_grad[:, padding[0][0]:padding[0][0] + x.shape[1],
                           padding[1][0]:padding[1][0] + x.shape[2]]
  return input_grad, kernel_grad.astype(kernel.dtype)


depthwise_as_windows.defvjp(_depthwise_forward, _depthwise_backward)


class DepthwiseConv(nn.Module):
  """Depthwise convolution with TF 'SAME' padding; kernel (k, k, 1, channels).

  With conv_impl 'cpu' it is a sum of k*k shifted, strided windows times
  per-channel weights, which XLA fuses into a few loops, forward and
  backward; with 'xla' it is XLA's grouped convolution.
  """

  kernel_size: int
  strides: int = 1
  dtype: Any = jnp.float32
  conv_impl: str = 'auto'

  @nn.compact
  def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
    channels, k, stride = x.shape[-1], self.kernel_size, self.strides
    kernel = self.param('kernel', nn.initializers.lecun_normal(), (k, k, 1, channels),
                        jnp.float32).astype(self.dtype)
    x = x.astype(self.dtype)
    padding = _explicit_padding('SAME', x.shape, (k, k), (stride, stride))
    if resolve_conv_impl(self.conv_impl) == 'xla':
      return lax.conv_general_dilated(
          x, kernel, (stride, stride), padding, feature_group_count=channels,
          dimension_numbers=DIMENSION_NUMBERS)
    return depthwise_as_windows(x, kernel[:, :, 0], (stride, stride), padding)
