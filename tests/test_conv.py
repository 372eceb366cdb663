import flax.linen as nn
import jax
from jax import lax
import jax.numpy as jnp
import numpy as np
import pytest

from hybridcovid.models import conv
from primitives import count_primitives

DIMENSIONS = ('NHWC', 'HWIO', 'NHWC')
IMPLS = ('xla', 'cpu')


def _inputs(height, width, channels, seed=0):
  return np.random.default_rng(seed).normal(size=(2, height, width, channels)).astype(np.float32)


@pytest.mark.parametrize('conv_impl', IMPLS)
@pytest.mark.parametrize('kernel_size, strides, padding, height, width', [
    ((1, 1), 1, 'VALID', 5, 6), ((1, 1), 2, 'VALID', 9, 7), ((3, 3), 1, 'SAME', 6, 5),
    ((3, 3), 2, 'SAME', 9, 8), ((7, 7), 2, 'VALID', 13, 12), ((3, 3), 2, ((1, 0), (0, 2)), 8, 9),
    # Inputs smaller than the kernel: stacked windows on CPU.
    ((3, 3), 1, 'SAME', 2, 2), ((3, 3), 2, 'SAME', 2, 3)])
def test_conv_matches_flax_conv_values_and_both_gradients(kernel_size, strides, padding,
                                                          height, width, conv_impl):
  x = _inputs(height, width, 3)
  ours = conv.Conv(4, kernel_size, strides, padding, conv_impl=conv_impl)
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


@pytest.mark.parametrize('conv_impl', IMPLS)
@pytest.mark.parametrize('kernel_size, strides, height, width', [
    (3, 1, 9, 7), (3, 2, 9, 7), (5, 2, 12, 10), (5, 1, 6, 11)])
def test_depthwise_conv_equals_grouped_convolution_with_same_padding(
    kernel_size, strides, height, width, conv_impl):
  x = _inputs(height, width, 6)
  layer = conv.DepthwiseConv(kernel_size, strides, conv_impl=conv_impl)
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


@pytest.mark.parametrize('conv_impl', IMPLS)
@pytest.mark.parametrize('window, stride, size', [(3, 2, 9), (3, 2, 8), (2, 1, 5)])
def test_max_pool_matches_flax_values_and_gradient(window, stride, size, conv_impl):
  x = _inputs(size, size + 1, 3)  # Continuous values: no ties.
  weights = _inputs(*conv.max_pool(x, window, stride, conv_impl).shape[1:], seed=1)[:1]

  def pool_ours(x):
    return conv.max_pool(x, window, stride, conv_impl)

  def pool_flax(x):
    return nn.max_pool(x, (window, window), (stride, stride), 'VALID')

  np.testing.assert_array_equal(pool_ours(x), pool_flax(x))
  np.testing.assert_allclose(jax.grad(lambda x: jnp.sum(pool_ours(x) * weights))(x),
                             jax.grad(lambda x: jnp.sum(pool_flax(x) * weights))(x))


def _primitives_of_each_op(conv_impl):
  """Primitive counts of a 1x1 conv, a 3x3 conv, a depthwise conv and a max pool."""
  x = _inputs(8, 8, 4)

  def count(module):
    variables = module.init(jax.random.key(0), x)
    return count_primitives(module.apply, variables, x)

  return (count(conv.Conv(4, (1, 1), conv_impl=conv_impl)),
          count(conv.Conv(4, (3, 3), conv_impl=conv_impl)),
          count(conv.DepthwiseConv(3, conv_impl=conv_impl)),
          count_primitives(lambda x: conv.max_pool(x, 3, 2, conv_impl), x))


def test_xla_runs_xlas_ops_and_cpu_its_fast_paths():
  one, three, depthwise, pool = _primitives_of_each_op('xla')
  assert (one['conv_general_dilated'], three['conv_general_dilated'],
          depthwise['conv_general_dilated'], pool['reduce_window_max']) == (1, 1, 1, 1)
  one, three, depthwise, pool = _primitives_of_each_op('cpu')
  # Matrix product, XLA's (fast) 3x3 convolution, shifted windows, shifted windows.
  assert (one['conv_general_dilated'], one['dot_general']) == (0, 1)
  assert three['conv_general_dilated'] == 1
  assert depthwise['conv_general_dilated'] == 0
  assert (pool['reduce_window_max'], pool['max']) == (0, 8)


def test_auto_is_cpu_on_the_cpu_backend_and_xla_elsewhere(monkeypatch):
  assert jax.default_backend() == 'cpu'
  assert conv.resolve_conv_impl('auto') == 'cpu'
  assert [conv.resolve_conv_impl(impl) for impl in IMPLS] == ['xla', 'cpu']
  monkeypatch.setattr(jax, 'default_backend', lambda: 'gpu')
  assert conv.resolve_conv_impl('auto') == 'xla'
  assert conv.resolve_conv_impl('cpu') == 'cpu'


def test_unknown_conv_impl_is_an_error_that_names_the_choices():
  message = "Unknown conv_impl 'gpu'; choose from auto, xla, cpu"
  with pytest.raises(ValueError, match=message):
    conv.resolve_conv_impl('gpu')
  x = _inputs(4, 4, 2)
  for module in (conv.Conv(2, (3, 3), conv_impl='gpu'), conv.DepthwiseConv(3, conv_impl='gpu')):
    with pytest.raises(ValueError, match=message):
      module.init(jax.random.key(0), x)
  with pytest.raises(ValueError, match=message):
    conv.max_pool(x, 3, 2, 'gpu')
