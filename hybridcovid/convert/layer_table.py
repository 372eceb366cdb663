"""Which Keras layer fills which Flax module, in keras.applications' layer order.

A Flax module path is the Keras layer name split at the block boundary:
Keras `conv2_block1_1_conv` is Flax `conv2_block1/1_conv`, Keras
`block2a_dwconv` is Flax `block2a/dwconv`. The order is the order of
`model.layers` in keras.applications, which the Keras 3 `.weights.h5` format
and order-based loading of legacy files rely on.
"""

import dataclasses
from typing import Callable

from hybridcovid.models import efficientnet, resnet

CONV = 'conv'
DEPTHWISE = 'depthwise'
BATCHNORM = 'batchnorm'

# Tensor names inside a Keras layer, in Keras' order, for each kind of layer.
KERAS_TENSORS = {
    CONV: ('kernel', 'bias'),
    DEPTHWISE: ('depthwise_kernel',),
    BATCHNORM: ('gamma', 'beta', 'moving_mean', 'moving_variance'),
}
# Object-name stem the Keras 3 `.weights.h5` format gives each kind of layer.
KERAS3_OBJECT_NAMES = {
    CONV: 'conv2d',
    DEPTHWISE: 'depthwise_conv2d',
    BATCHNORM: 'batch_normalization',
}


@dataclasses.dataclass(frozen=True)
class KerasLayer:
  name: str
  kind: str
  flax_path: tuple[str, ...]


def _layer(block: str | None, part: str) -> KerasLayer:
  if part.endswith('bn'):
    kind = BATCHNORM
  elif part == 'dwconv':
    kind = DEPTHWISE
  else:
    kind = CONV
  if block is None:
    return KerasLayer(part, kind, (part,))
  return KerasLayer(f'{block}_{part}', kind, (block, part))


def resnet50_layers() -> list[KerasLayer]:
  layers = [_layer(None, 'conv1_conv'), _layer(None, 'conv1_bn')]
  for stage, (_, blocks, _) in enumerate(resnet.STAGES, start=2):
    for block in range(1, blocks + 1):
      if block == 1:
        # Keras orders layers by graph depth: the shortcut pair sits beside 3_*.
        parts = ('1_conv', '1_bn', '2_conv', '2_bn', '0_conv', '3_conv', '0_bn',
                 '3_bn')
      else:
        parts = ('1_conv', '1_bn', '2_conv', '2_bn', '3_conv', '3_bn')
      layers += [_layer(f'conv{stage}_block{block}', part) for part in parts]
  return layers


def efficientnetb0_layers() -> list[KerasLayer]:
  layers = [_layer(None, 'stem_conv'), _layer(None, 'stem_bn')]
  for block in efficientnet.b0_blocks():
    parts = ('expand_conv', 'expand_bn') if block.expand_ratio != 1 else ()
    parts += ('dwconv', 'bn', 'se_reduce', 'se_expand', 'project_conv',
              'project_bn')
    layers += [_layer(block.name, part) for part in parts]
  return layers + [_layer(None, 'top_conv'), _layer(None, 'top_bn')]


LAYER_TABLES: dict[str, Callable[[], list[KerasLayer]]] = {
    'resnet50': resnet50_layers,
    'efficientnetb0': efficientnetb0_layers,
}


def keras3_object_names(layers: list[KerasLayer]) -> dict[str, str]:
  """Maps each Keras 3 `.weights.h5` object name (`conv2d_7`) to its layer name."""
  counts: dict[str, int] = {}
  names = {}
  for layer in layers:
    stem = KERAS3_OBJECT_NAMES[layer.kind]
    count = counts.get(stem, 0)
    counts[stem] = count + 1
    names[stem if count == 0 else f'{stem}_{count}'] = layer.name
  return names
