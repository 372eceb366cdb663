"""Classifier head over one or more backbones: the paper's single and hybrid models."""

from typing import Any, Callable, Mapping, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from hybridcovid.models.efficientnet import EfficientNetB0
from hybridcovid.models.resnet import ResNet50

# Name of the head's input (the pooled feature vector) in the 'intermediates' collection.
POOLED_FEATURES = 'pooled_features'

BACKBONES: dict[str, Callable[..., nn.Module]] = {
    'resnet50': ResNet50,
    'efficientnetb0': EfficientNetB0,
}


def create_backbone(arch: str, **kwargs: Any) -> nn.Module:
  """Returns the backbone module `arch` ('resnet50' or 'efficientnetb0').

  `kwargs` set its attributes: dtype, axis_name, batchnorm_momentum, conv_impl,
  zero_init_residual.
  """
  if arch not in BACKBONES:
    raise ValueError(
        f'Unknown backbone {arch!r}; choose from {sorted(BACKBONES)}.')
  return BACKBONES[arch](**kwargs)


def initialize(module: nn.Module, rng: jax.Array, images: jax.Array | Any) -> dict:
  """`module.init(rng, images)`, compiled.

  Initialisation runs once: on CPU, optimising its hundreds of random-number
  kernels takes longer than running them unoptimised (36 s against 58 s for
  the hybrid at 32x32 on 2 cores of an AMD EPYC), so there it is compiled
  unoptimised, which can round a value differently in its last bit.
  """
  options = {'xla_backend_optimization_level': 0} if jax.default_backend() == 'cpu' else {}
  return jax.jit(module.init).lower(rng, images).compile(compiler_options=options)(rng, images)


def create_classifier(model_config: Any, num_classes: int, axis_name: str | None = None
                      ) -> 'HybridClassifier':
  """Builds the classifier of `num_classes` outputs from a config's `model` section (see
  configs/default.py); `classes.of_config(config.data)` names them."""
  return HybridClassifier(
      backbones=tuple(model_config.backbones),
      num_classes=num_classes,
      hidden_units=model_config.hidden_units,
      dropout_rate=model_config.dropout_rate,
      dtype=jnp.dtype(model_config.dtype),
      freeze_backbone_batchnorm=model_config.freeze_backbone_batchnorm,
      batchnorm_momentum=model_config.batchnorm_momentum,
      # Configs saved with older checkpoints have no conv_impl.
      conv_impl=model_config.get('conv_impl', 'auto'),
      zero_init_residual=model_config.get('zero_init_residual', False),
      axis_name=axis_name)


class HybridClassifier(nn.Module):
  """Concatenated backbone feature maps, global average pooling, FC, dropout, FC.

  With one backbone this is the paper's single-model classifier; with
  ('resnet50', 'efficientnetb0') it is the hybrid model. Returns logits.

  Attributes:
    backbones: backbone names; each becomes a parameter subtree of that name.
    num_classes: output classes.
    hidden_units: width of the first fully connected layer.
    dropout_rate: dropout between the two fully connected layers.
    dtype: compute dtype; parameters stay float32.
    freeze_backbone_batchnorm: run the backbones in inference mode (running
      BatchNorm statistics, no stochastic depth) even while training.
    batchnorm_momentum: decay of the backbones' running BatchNorm statistics.
    axis_name: device axis over which training BatchNorm statistics are
      averaged, so that a step on many devices equals one on a single device.
    conv_impl: how the backbones' convolutions and pooling run: 'xla', 'cpu'
      or 'auto' (see models/conv.py); the parameters are the same.
    zero_init_residual: start the backbones' residual blocks as the identity
      (see `resnet.residual_scale_init`); only random initialisation changes.
  """

  backbones: Sequence[str] = ('resnet50', 'efficientnetb0')
  num_classes: int = 2
  hidden_units: int = 256
  dropout_rate: float = 0.5
  dtype: Any = jnp.float32
  freeze_backbone_batchnorm: bool = False
  batchnorm_momentum: float = 0.99
  axis_name: str | None = None
  conv_impl: str = 'auto'
  zero_init_residual: bool = False

  @nn.compact
  def __call__(self, images: jnp.ndarray, train: bool = False) -> jnp.ndarray:
    if not self.backbones:
      raise ValueError('HybridClassifier needs at least one backbone.')
    backbone_train = train and not self.freeze_backbone_batchnorm
    feature_maps = [
        create_backbone(name, dtype=self.dtype, axis_name=self.axis_name,
                        batchnorm_momentum=self.batchnorm_momentum,
                        conv_impl=self.conv_impl,
                        zero_init_residual=self.zero_init_residual, name=name)(
            images, train=backbone_train) for name in self.backbones]
    shapes = {feature_map.shape[1:3] for feature_map in feature_maps}
    if len(shapes) != 1:
      raise ValueError(f'Backbone feature maps differ in size: {sorted(shapes)}.')
    features = jnp.concatenate(feature_maps, axis=-1)
    pooled = jnp.mean(features.astype(jnp.float32), axis=(1, 2))
    self.sow('intermediates', POOLED_FEATURES, pooled)
    x = nn.Dense(self.hidden_units, dtype=self.dtype, name='hidden')(pooled)
    x = nn.Dropout(self.dropout_rate, deterministic=not train)(nn.relu(x))
    # Logits in float32 whatever the compute dtype, as mixed-precision practice advises.
    return nn.Dense(self.num_classes, dtype=jnp.float32, name='logits')(x)


def apply_with_feature_maps(model: HybridClassifier, variables: Mapping[str, Any],
                            images: jax.Array,
                            offsets: Mapping[str, jax.Array] | None = None
                            ) -> tuple[jax.Array, dict[str, jax.Array]]:
  """Inference-mode logits and each backbone's last feature map, by backbone name.

  `offsets`, keyed like the feature maps, are added to them before the head:
  the gradient of the logits with respect to an offset is their gradient with
  respect to that feature map, which Grad-CAM needs.
  """
  offsets = offsets or {}
  feature_maps = {}

  def interceptor(next_fun, args, kwargs, context):
    output = next_fun(*args, **kwargs)
    module = context.module
    if (context.method_name == '__call__' and module.name in model.backbones
        and module.path == (module.name,)):
      feature_maps[module.name] = output
      if module.name in offsets:
        output = output + offsets[module.name]
    return output

  with nn.intercept_methods(interceptor):
    logits = model.apply(variables, images, train=False)
  return logits, feature_maps
