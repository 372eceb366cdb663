import jax
import jax.numpy as jnp
import pytest

from hybridcovid.models import resnet


@pytest.fixture(scope='module')
def variables():
  return jax.eval_shape(lambda: resnet.ResNet50().init(
      jax.random.key(0), jnp.zeros((1, 64, 64, 3)), train=False))


def test_parameter_count_equals_keras_notop(variables):
  assert sum(leaf.size for leaf in jax.tree.leaves(variables)) == 23_587_712


def test_stride_is_in_the_first_1x1_conv_as_in_keras_v1(variables):
  block = variables['params']['conv3_block1']
  assert block['1_conv']['kernel'].shape == (1, 1, 256, 128)
  assert block['0_conv']['kernel'].shape == (1, 1, 256, 512)
  module = resnet.Bottleneck(128, strides=2, projection=True)
  x = jnp.ones((1, 8, 8, 256))
  bound = jax.eval_shape(lambda: module.init_with_output(
      jax.random.key(0), x, train=False))[0]
  assert bound.shape == (1, 4, 4, 512)


@pytest.mark.parametrize('height, width, expected', [
    (32, 32, (1, 1)), (224, 224, (7, 7)), (97, 131, (4, 5)), (33, 65, (2, 3))])
def test_output_is_the_stride_32_map(variables, height, width, expected):
  out = jax.eval_shape(lambda v: resnet.ResNet50().apply(
      v, jnp.zeros((2, height, width, 3))), variables)
  assert out.shape == (2, *expected, 2048)



@pytest.mark.parametrize('zero_init_residual', [False, True])
def test_zero_init_residual_starts_an_identity_block_as_the_identity(zero_init_residual):
  module = resnet.Bottleneck(4, zero_init_residual=zero_init_residual)
  x = jax.nn.relu(jax.random.normal(jax.random.key(1), (2, 5, 5, 16)))
  variables = module.init(jax.random.key(0), x, train=False)
  scale = variables['params']['3_bn']['scale']
  assert float(jnp.abs(scale - (0.0 if zero_init_residual else 1.0)).max()) == 0.0
  # Every other BatchNorm keeps the Keras scale of one.
  assert all(float(variables['params'][name]['scale'].min()) == 1.0
             for name in ('1_bn', '2_bn'))
  difference = float(jnp.abs(module.apply(variables, x, train=False) - x).max())
  if zero_init_residual:
    assert difference == 0.0
  else:
    assert difference > 0.1
