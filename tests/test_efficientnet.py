import jax
import jax.numpy as jnp
import numpy as np
import pytest

from hybridcovid.models import efficientnet


@pytest.fixture(scope='module')
def variables():
  return jax.eval_shape(lambda: efficientnet.EfficientNetB0().init(
      jax.random.key(0), jnp.zeros((1, 64, 64, 3)), train=False))


def test_parameter_count_equals_keras_notop_less_normalization(variables):
  assert sum(leaf.size for leaf in jax.tree.leaves(variables)) == 4_049_564


def test_blocks_follow_keras_b0():
  blocks = list(efficientnet.b0_blocks())
  assert [b.name for b in blocks] == [
      'block1a', 'block2a', 'block2b', 'block3a', 'block3b', 'block4a', 'block4b',
      'block4c', 'block5a', 'block5b', 'block5c', 'block6a', 'block6b', 'block6c',
      'block6d', 'block7a']
  np.testing.assert_allclose([b.drop_rate for b in blocks],
                             [0.2 * i / 16 for i in range(16)])
  assert [b.strides for b in blocks] == [1, 2, 1, 2, 1, 2, 1, 1, 1, 1, 1, 2, 1, 1, 1, 1]


def test_squeeze_excite_width_comes_from_block_input(variables):
  params = variables['params']
  # block2a: 16 in, expanded to 96; SE width int(16 * 0.25) = 4.
  assert params['block2a']['se_reduce']['kernel'].shape == (1, 1, 96, 4)
  # block2b: 24 in, expanded to 144; SE width 6.
  assert params['block2b']['se_expand']['kernel'].shape == (1, 1, 6, 144)
  assert params['block2a']['dwconv']['kernel'].shape == (3, 3, 1, 96)


@pytest.mark.parametrize('height, width, expected', [
    (32, 32, (1, 1)), (224, 224, (7, 7)), (97, 131, (4, 5))])
def test_output_is_the_stride_32_map(variables, height, width, expected):
  out = jax.eval_shape(lambda v: efficientnet.EfficientNetB0().apply(
      v, jnp.zeros((2, height, width, 3))), variables)
  assert out.shape == (2, *expected, 1280)


def test_stochastic_depth_only_on_identity_blocks_and_only_in_training():
  args = efficientnet.BlockArgs('block2b', 3, 24, 24, 6, 1, drop_rate=0.5)
  block = efficientnet.MBConv(args)
  x = np.random.default_rng(0).normal(size=(64, 4, 4, 24)).astype(np.float32)
  variables = block.init(jax.random.key(0), x, train=False)
  branch_eval = block.apply(variables, x, train=False) - x
  out, _ = block.apply(variables, x, train=True, rngs={'dropout': jax.random.key(1)},
                       mutable=['batch_stats'])
  branch_train = np.asarray(out - x)
  dropped = np.all(np.abs(branch_train) < 1e-6, axis=(1, 2, 3))
  # About half the examples lose their whole residual branch; the rest keep it.
  assert 16 <= dropped.sum() <= 48
  assert np.all(np.abs(branch_train[~dropped]).sum(axis=(1, 2, 3)) > 0)
  # Evaluation is deterministic and keeps every branch.
  np.testing.assert_array_equal(block.apply(variables, x, train=False) - x, branch_eval)
  assert np.all(np.abs(np.asarray(branch_eval)).sum(axis=(1, 2, 3)) > 0)
  # A down-sampling block has no identity skip, hence no stochastic depth.
  strided = efficientnet.MBConv(efficientnet.BlockArgs('block2a', 3, 24, 40, 6, 2, 0.5))
  strided_vars = strided.init(jax.random.key(0), x, train=False)
  outs = [strided.apply(strided_vars, x, train=True, rngs={'dropout': jax.random.key(seed)},
                        mutable=['batch_stats'])[0] for seed in (1, 2)]
  np.testing.assert_array_equal(outs[0], outs[1])


@pytest.mark.parametrize('zero_init_residual', [False, True])
def test_zero_init_residual_starts_identity_blocks_only_as_the_identity(zero_init_residual):
  x = np.random.default_rng(0).normal(size=(2, 4, 4, 24)).astype(np.float32)
  identity = efficientnet.MBConv(efficientnet.BlockArgs('block2b', 3, 24, 24, 6, 1, 0.0),
                                 zero_init_residual=zero_init_residual)
  variables = identity.init(jax.random.key(0), x, train=False)
  difference = float(jnp.abs(identity.apply(variables, x, train=False) - x).max())
  assert (difference == 0.0) if zero_init_residual else (difference > 0.1)
  # A down-sampling block has no skip to fall back on: its projection keeps scale one.
  strided = efficientnet.MBConv(efficientnet.BlockArgs('block2a', 3, 24, 40, 6, 2, 0.0),
                                zero_init_residual=zero_init_residual)
  strided_variables = strided.init(jax.random.key(0), x, train=False)
  assert float(strided_variables['params']['project_bn']['scale'].min()) == 1.0
  assert float(jnp.abs(strided.apply(strided_variables, x, train=False)).max()) > 0.1
