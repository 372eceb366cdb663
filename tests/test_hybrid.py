import os
import subprocess
import sys

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from configs import default
from hybridcovid import models
from hybridcovid.models import efficientnet, resnet
from primitives import count_primitives
import stable_init


def _train_apply(model):
  """Jitted training-mode forward: (variables, images, seed) -> (logits, updates)."""
  forward = jax.jit(lambda v, x, key: model.apply(
      v, x, train=True, rngs={'dropout': key}, mutable=['batch_stats']))
  return lambda variables, images, seed: forward(variables, images,
                                                 jax.random.key(seed))


def test_unknown_backbone_is_named_in_the_error():
  with pytest.raises(ValueError, match="Unknown backbone 'vgg16'; choose from"):
    models.create_backbone('vgg16')


def _model_config(**overrides):
  model_config = default.get_config().model
  model_config.update(overrides)
  return model_config


def _backbone_ops(model):
  """XLA convolutions (depthwise among them) and reduce-window max pools the model traces."""
  images = jnp.zeros((1, 64, 64, 3))
  counts = count_primitives(lambda x: model.init(jax.random.key(0), x), images)
  return counts['conv_general_dilated'], counts['reduce_window_max']


def test_conv_impl_reaches_every_convolution_and_the_pool():
  # ResNet50: 53 convolutions and a max pool; EfficientNetB0: 65 convolutions, 16 depthwise.
  assert _backbone_ops(models.create_classifier(_model_config(conv_impl='xla'), 2)) == (134, 1)
  # 'cpu' keeps XLA's convolution only for k x k kernels over inputs at least k wide
  # at 64x64: ResNet50's 7x7 stem and 3x3s of conv2..conv4 (1 + 3 + 4 + 6), B0's stem.
  cpu_ops = _backbone_ops(models.create_classifier(_model_config(conv_impl='cpu'), 2))
  assert cpu_ops == (15, 0)
  # A config saved before conv_impl existed is 'auto': 'cpu' on this machine.
  old_config = _model_config().to_dict()
  del old_config['conv_impl']
  old_model = models.create_classifier(ml_collections.ConfigDict(old_config), 2)
  assert _backbone_ops(old_model) == cpu_ops
  with pytest.raises(ValueError, match="Unknown conv_impl 'gpu'; choose from auto, xla, cpu"):
    _backbone_ops(models.create_classifier(_model_config(conv_impl='gpu'), 2))


def test_conv_impls_have_one_parameter_layout_and_agree(hybrid_variables, small_images):
  shapes = {impl: jax.eval_shape(lambda: models.HybridClassifier(conv_impl=impl).init(
      jax.random.key(0), small_images)) for impl in ('xla', 'cpu')}
  assert shapes['xla'] == shapes['cpu'] == jax.eval_shape(lambda: hybrid_variables)
  variables = {'params': stable_init.damp_residual_branches(hybrid_variables['params']),
               'batch_stats': hybrid_variables['batch_stats']}
  logits = {impl: jax.jit(models.HybridClassifier(conv_impl=impl).apply)(variables, small_images)
            for impl in ('xla', 'cpu')}
  np.testing.assert_allclose(logits['xla'], logits['cpu'], rtol=1e-4, atol=1e-5)
  assert np.abs(np.asarray(logits['xla'])).max() > 1e-3


def test_head_concatenates_pools_and_applies_two_dense_layers(hybrid_variables,
                                                              small_images):
  params = hybrid_variables['params']
  assert params['hidden']['kernel'].shape == (2048 + 1280, 256)
  assert params['logits']['kernel'].shape == (256, 2)
  features = []
  for name in ('resnet50', 'efficientnetb0'):
    backbone_vars = {'params': params[name],
                     'batch_stats': hybrid_variables['batch_stats'][name]}
    features.append(models.create_backbone(name).apply(backbone_vars, small_images))
  pooled = np.concatenate(features, axis=-1).mean(axis=(1, 2))
  hidden = np.maximum(pooled @ params['hidden']['kernel'] + params['hidden']['bias'], 0)
  expected = hidden @ params['logits']['kernel'] + params['logits']['bias']
  logits = models.HybridClassifier().apply(hybrid_variables, small_images)
  np.testing.assert_allclose(logits, expected, rtol=1e-4, atol=1e-4)


def test_single_backbone_classifier_has_only_that_backbone():
  shapes = jax.eval_shape(lambda: models.HybridClassifier(
      backbones=('efficientnetb0',), hidden_units=64, num_classes=3).init(
          jax.random.key(0), jnp.zeros((1, 32, 32, 3))))
  assert set(shapes['params']) == {'efficientnetb0', 'hidden', 'logits'}
  assert shapes['params']['hidden']['kernel'].shape == (1280, 64)
  assert shapes['params']['logits']['kernel'].shape == (64, 3)



def test_the_classifier_has_one_output_per_class_of_the_task():
  config = default.get_config().model
  config.backbones = ('efficientnetb0',)
  config.hidden_units = 8
  for count in (2, 3):
    shapes = jax.eval_shape(models.create_classifier(config, count).init, jax.random.key(0),
                            jnp.zeros((1, 32, 32, 3)))
    assert shapes['params']['logits']['kernel'].shape == (8, count)


def test_initialize_gives_the_variables_init_gives():
  class Block(nn.Module):  # `initialize` calls the module on images alone.
    @nn.compact
    def __call__(self, x):
      return resnet.Bottleneck(4, projection=True, name='block')(x, train=False)

  images = np.random.default_rng(0).normal(size=(2, 6, 6, 8)).astype(np.float32)
  expected = Block().init(jax.random.key(3), images)
  actual = models.initialize(Block(), jax.random.key(3), images)
  assert jax.tree.structure(actual) == jax.tree.structure(expected)
  # Compiled unoptimised on CPU, the truncated normals can round differently in the last bit.
  for got, want in zip(jax.tree.leaves(actual), jax.tree.leaves(expected)):
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-7)
  assert float(jnp.abs(actual['params']['block']['1_conv']['kernel']).max()) > 0


def test_zero_init_residual_reaches_every_block_of_both_backbones():
  config = default.get_config().model
  config.zero_init_residual = True
  seen = []

  def record(next_fun, args, kwargs, context):
    if isinstance(context.module, (resnet.Bottleneck, efficientnet.MBConv)):
      seen.append((type(context.module).__name__, context.module.zero_init_residual))
    return next_fun(*args, **kwargs)

  with nn.intercept_methods(record):
    jax.eval_shape(models.create_classifier(config, 2).init, jax.random.key(0),
                   jnp.zeros((1, 32, 32, 3)))
  assert sorted(set(seen)) == [('Bottleneck', True), ('MBConv', True)]
  assert len(seen) == 16 + 16  # ResNet50's 16 blocks and EfficientNetB0's 16.
  assert not models.create_classifier(default.get_config().model, 2).zero_init_residual


def test_dropout_is_active_only_in_training(hybrid_variables, small_images):
  model = models.HybridClassifier(freeze_backbone_batchnorm=True)
  eval_logits = jax.jit(model.apply)(hybrid_variables, small_images)
  np.testing.assert_array_equal(eval_logits,
                                jax.jit(model.apply)(hybrid_variables, small_images))
  train_apply = _train_apply(model)
  first, _ = train_apply(hybrid_variables, small_images, 1)
  second, _ = train_apply(hybrid_variables, small_images, 2)
  assert np.abs(np.asarray(first - second)).max() > 1e-3
  # Inverted dropout keeps the expectation: many masks average to evaluation.
  draws = [train_apply(hybrid_variables, small_images, seed)[0]
           for seed in range(3, 203)]
  mean = np.mean(draws, axis=0)
  spread = np.std(draws, axis=0) / np.sqrt(len(draws))
  assert np.all(np.abs(mean - eval_logits) < 5 * spread + 1e-3)


def test_frozen_batchnorm_leaves_batch_statistics_unchanged(hybrid_variables,
                                                            small_images):
  old = hybrid_variables['batch_stats']
  _, frozen = _train_apply(models.HybridClassifier(freeze_backbone_batchnorm=True))(
      hybrid_variables, small_images, 0)
  for before, after in zip(jax.tree.leaves(old), jax.tree.leaves(frozen['batch_stats'])):
    np.testing.assert_array_equal(before, after)
  _, trained = _train_apply(models.HybridClassifier())(
      hybrid_variables, small_images, 0)
  stem_mean = trained['batch_stats']['resnet50']['conv1_bn']['mean']
  # Momentum 0.99: the running mean moves 1% of the way to the batch mean.
  assert np.abs(np.asarray(stem_mean - old['resnet50']['conv1_bn']['mean'])).max() > 1e-3


def test_bfloat16_forward_is_within_one_percent_of_float32(hybrid_variables):
  variables = {'params': stable_init.damp_residual_branches(hybrid_variables['params']),
               'batch_stats': hybrid_variables['batch_stats']}
  images = np.random.default_rng(5).uniform(0, 255, (4, 64, 64, 3)).astype(np.float32)
  float32 = jax.jit(models.HybridClassifier().apply)(variables, images)
  bfloat16 = jax.jit(models.HybridClassifier(dtype=jnp.bfloat16).apply)(
      variables, images)
  assert bfloat16.dtype == jnp.float32
  for leaf in jax.tree.leaves(variables):
    assert leaf.dtype == jnp.float32
  error = np.linalg.norm(bfloat16 - float32) / np.linalg.norm(float32)
  assert 0 < error <= 1e-2


@pytest.mark.subprocess
def test_forward_pass_does_not_import_tensorflow():
  program = os.path.join(os.path.dirname(__file__), 'programs', 'forward_without_tensorflow.py')
  subprocess.run([sys.executable, program], check=True)
