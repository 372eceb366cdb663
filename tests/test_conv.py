import flax.linen as nn
import jax
from jax import lax
import jax.numpy as jnp
import numpy as np
import pytest

from hybridcovid.models import conv

DIMENSIONS = ('NHWC', 'HWIO', 'NHWC')


def _inputs(height, width, channels, seed=0):
  return np.random.default_rng(seed).normal(size=(2, height, width, channels)).astype(np.float32)


@pytest.mark.parametrize('kernel_size, strides, padding, height, width', [
    ((1, 1), 1, 'VALID', 5, 6), ((1, 1), 2, 'VALID', 9, 7), ((3, 3), 1, 'SAME', 6, 5),
    ((3, 3), 2, 'SAME', 9, 8), ((7, 7), 2, 'VALID', 13, 12), ((3, 3), 2, ((1, 0), (0, 2)), 8, 9),
    # Inputs smaller than the kernel: stacked windows on CPU.
    ((3, 3), 1, 'SAME', 2, 2), ((3, 3), 2, 'SAME', 2, 3)])
def test_conv_matches_flax_conv_values_and_both_gradients(kernel_size, strides, padding,
                                                          height, width):
  x = _inputs(height, width, 3)
  ours = conv.Conv(4, kernel_size, strides, padding)
  reference = nn.Conv(4, kernel_size, strides, padding)
  variables = ours.init(jax.random.key(0), x)
  assert jax.tree.map(jnp.shape, variables) == jax.tree.map(
      jnp.shape, reference.init(jax.random.key(0), x))
  # A weighting that makes every output element's gradient different.
  weights = _inputs(*ours.apply(variables, x).shape[1:], seed=1)[:1]

  def loss(module):
    return lambda params, x: jnp.sum(module.apply({'params': params}, x) * weights)

  np.testing.assert_allclose(ours.apply(variables, x), reference.apply(variables, x),
                             rtol=1e-5, atol=1e-5)
  grads = jax.grad(loss(ours), argnums=(0, 1))(variables['params'], x)
  expected = jax.grad(loss(reference), argnums=(0, 1))(variables['params'], x)
  for got, want in zip(jax.tree.leaves(grads), jax.tree.leaves(expected)):
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)
  assert float(jnp.abs(grads[0]['kernel']).sum()) > 0


@pytest.mark.parametrize('kernel_size, strides, height, width', [
    (3, 1, 9, 7), (3, 2, 9, 7), (5, 2, 12, 10), (5, 1, 6, 11)])
def test_depthwise_conv_equals_grouped_convolution_with_same_padding(
    kernel_size, strides, height, width):
  x = _inputs(height, width, 6)
  layer = conv.DepthwiseConv(kernel_size, strides)
  variables = layer.init(jax.random.key(0), x)
  kernel = variables['params']['kernel']

  def grouped(k, x):
    return lax.conv_general_dilated(x, k, (strides, strides), 'SAME', feature_group_count=6,
                                    dimension_numbers=DIMENSIONS)

  np.testing.assert_allclose(layer.apply(variables, x), grouped(kernel, x), rtol=1e-5,
                             atol=1e-5)
  grads = jax.grad(lambda k, x: jnp.sum(layer.apply({'params': {'kernel': k}}, x) ** 2),
                   argnums=(0, 1))(kernel, x)
  expected = jax.grad(lambda k, x: jnp.sum(grouped(k, x) ** 2), argnums=(0, 1))(kernel, x)
  for got, want in zip(grads, expected):
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize('size, kernel_size, stride, expected', [
    (8, 3, 1, (1, 1)), (8, 3, 2, (0, 1)), (9, 3, 2, (1, 1)), (7, 5, 2, (2, 2)), (1, 1, 1, (0, 0))])
def test_same_padding_is_tensorflows(size, kernel_size, stride, expected):
  assert conv.same_padding(size, kernel_size, stride) == expected


@pytest.mark.parametrize('window, stride, size', [(3, 2, 9), (3, 2, 8), (2, 1, 5)])
def test_max_pool_matches_flax_values_and_gradient(window, stride, size):
  x = _inputs(size, size + 1, 3)  # Continuous values: no ties.
  weights = _inputs(*conv.max_pool(x, window, stride).shape[1:], seed=1)[:1]

  def pool_ours(x):
    return conv.max_pool(x, window, stride)

  def pool_flax(x):
    return nn.max_pool(x, (window, window), (stride, stride), 'VALID')

  np.testing.assert_array_equal(pool_ours(x), pool_flax(x))
  np.testing.assert_allclose(jax.grad(lambda x: jnp.sum(pool_ours(x) * weights))(x),
                             jax.grad(lambda x: jnp.sum(pool_flax(x) * weights))(x))
