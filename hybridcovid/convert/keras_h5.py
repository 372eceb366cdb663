"""Converts keras.applications HDF5 weight files into Flax variables, with h5py alone.

Reads the legacy layout that keras.applications downloads (`*_notop.h5`: root
attribute `layer_names`, per layer `weight_names`, optional `:0` suffixes) and
the Keras 3 `.weights.h5` layout (`layers/<object>/vars/<i>`).
"""

import os
from typing import Any

from absl import logging
import jax
import jax.numpy as jnp
import numpy as np

from hybridcovid import errors, models
from hybridcovid.convert import layer_table

MAX_LISTED = 8


class WeightsError(errors.UserError):
  """A weight file or checkpoint that cannot be used, with the reason and the fix."""


def _listing(names: list[str]) -> str:
  shown = ', '.join(names[:MAX_LISTED])
  more = len(names) - MAX_LISTED
  return shown + (f' (+{more} more)' if more > 0 else '')


def _decode(value: Any) -> str:
  return value.decode('utf8') if isinstance(value, bytes) else str(value)


def _string_list_attribute(group: Any, name: str) -> list[str]:
  """Reads a Keras string-list attribute, which Keras splits into name0, name1... when large."""
  if name in group.attrs:
    return [_decode(value) for value in group.attrs[name]]
  values, chunk = [], 0
  while f'{name}{chunk}' in group.attrs:
    values += [_decode(value) for value in group.attrs[f'{name}{chunk}']]
    chunk += 1
  return values


def _tensor_name(weight_name: str) -> str:
  """'conv1_conv/kernel:0' -> 'kernel'."""
  return weight_name.split('/')[-1].split(':')[0]


def _is_input_normalization(name: str, tensors: list) -> bool:
  """Whether a file layer is keras.applications' input Normalization layer.

  Its published EfficientNet statistics are wrong (the std sits in the
  variance slot); the backbones normalise inputs themselves, so these tensors
  are never used.
  """
  names = [tensor_name for tensor_name, _ in tensors]
  if names == ['mean', 'variance', 'count']:
    return True
  return names == [None] * 3 and name.startswith('normalization')


def read_keras_weights(path: str, layers: list[layer_table.KerasLayer]
                      ) -> dict[str, list[tuple[str | None, np.ndarray]]]:
  """Returns {layer name: [(tensor name or None, array), ...]} in file order.

  Keras 3 object names are translated to layer names through `layers`; its
  tensors carry no names (None).
  """
  if not os.path.isfile(path):
    raise WeightsError(f'{path}: no such file. Give the path of a Keras weight '
                       'file such as resnet50_weights_tf_dim_ordering_tf_kernels'
                       '_notop.h5 or efficientnetb0_notop.h5.')
  try:
    import h5py  # pylint: disable=import-outside-toplevel  # Only conversion needs it.
    with h5py.File(path, 'r') as f:
      root = f['model_weights'] if 'model_weights' in f else f
      layer_names = _string_list_attribute(root, 'layer_names')
      if layer_names:
        return {name: [(_tensor_name(w), np.asarray(root[name][w]))
                       for w in _string_list_attribute(root[name], 'weight_names')]
                for name in layer_names
                if _string_list_attribute(root[name], 'weight_names')}
      if 'layers' in root:
        object_names = layer_table.keras3_object_names(layers)
        weights = {}
        for object_name, group in root['layers'].items():
          tensors = group.get('vars', {})
          if len(tensors):
            name = object_names.get(object_name, object_name)
            weights[name] = [(None, np.asarray(tensors[str(i)]))
                             for i in range(len(tensors))]
        return weights
  except (OSError, KeyError) as error:
    raise WeightsError(
        f'{path}: cannot be read as a Keras HDF5 weight file ({error}). It is '
        'truncated or corrupt: download it again.') from error
  raise WeightsError(
      f'{path}: not a Keras weight file: it has neither the legacy '
      "'layer_names' attribute nor the Keras 3 'layers' group.")


def _match_layers(arch: str, path: str, layers: list[layer_table.KerasLayer],
                  file_layers: dict[str, list]) -> dict[str, list]:
  """Pairs each table layer with the file's tensors: by name, else by order."""
  expected = [layer.name for layer in layers]
  found = [name for name, tensors in file_layers.items()
           if not _is_input_normalization(name, tensors)]
  missing = [name for name in expected if name not in file_layers]
  unexpected = [name for name in found if name not in set(expected)]
  if not missing and not unexpected:
    return {name: file_layers[name] for name in expected}
  renamed = len(found) == len(expected) and all(
      file_name.endswith(name) for file_name, name in zip(found, expected))
  if renamed:
    # Older saves prefix layer names; order and suffix must still agree, so two
    # layers of equal shape (a shortcut and its 1x1 twin) cannot swap.
    logging.warning('%s: layer names carry a prefix (first: %s); matched by '
                    'order and name suffix, with every shape checked.',
                    path, found[0])
    return {name: file_layers[file_name]
            for name, file_name in zip(expected, found)}
  raise WeightsError(
      f'{path} does not hold {arch} weights: {len(found)} weighted layers where '
      f'{arch} has {len(expected)}. Missing layers: {_listing(missing)}. '
      f'Unexpected layers: {_listing(unexpected)}. Check --arch, or download '
      'the notop file of that architecture again.')


def _flax_tensors(layer: layer_table.KerasLayer, tensors: list,
                  has_bias: bool) -> tuple[list, list[str]]:
  """Returns ([(collection, leaf name, array)], name errors) in Flax form."""
  expected_names = layer_table.KERAS_TENSORS[layer.kind]
  if layer.kind == layer_table.CONV and not has_bias:
    expected_names = expected_names[:1]
  if len(tensors) != len(expected_names):
    return [], [f'{layer.name}: {len(tensors)} tensors in the file, '
                f'{len(expected_names)} expected ({", ".join(expected_names)})']
  errors = []
  for (name, _), expected_name in zip(tensors, expected_names):
    aliases = {expected_name}
    if layer.kind == layer_table.DEPTHWISE:
      aliases.add('kernel')  # Keras 3 names the depthwise kernel 'kernel'.
    if name is not None and name not in aliases:
      errors.append(f'{layer.name}/{name}: found where {expected_name} belongs')
  arrays = [array for _, array in tensors]
  if layer.kind == layer_table.BATCHNORM:
    gamma, beta, mean, variance = arrays
    return [('params', 'scale', gamma), ('params', 'bias', beta),
            ('batch_stats', 'mean', mean), ('batch_stats', 'var', variance)], errors
  if layer.kind == layer_table.DEPTHWISE:
    # Keras stores (k, k, channels, 1); a grouped Flax conv wants (k, k, 1, channels).
    return [('params', 'kernel', np.transpose(arrays[0], (0, 1, 3, 2)))], errors
  return list(zip(('params', 'params'), ('kernel', 'bias'), arrays)), errors


def _subtree(tree: dict, path: tuple[str, ...]) -> dict | None:
  for key in path:
    if not isinstance(tree, dict) or key not in tree:
      return None
    tree = tree[key]
  return tree


def backbone_shapes(arch: str) -> dict:
  """The backbone's variables as a tree of jax.ShapeDtypeStruct, computed without FLOPs."""
  module = models.create_backbone(arch)
  images = jnp.zeros((1, 64, 64, 3), jnp.float32)
  return jax.eval_shape(
      lambda: module.init(jax.random.key(0), images, train=False))


def from_keras_h5(arch: str, path: str) -> dict:
  """Reads a keras.applications weight file into {'params', 'batch_stats'} for `arch`.

  Raises WeightsError naming the file and the first missing, unexpected or
  wrongly shaped tensors; nothing is skipped silently.
  """
  if arch not in layer_table.LAYER_TABLES:
    raise WeightsError(f'Unknown architecture {arch!r}; choose from '
                       f'{sorted(layer_table.LAYER_TABLES)}.')
  layers = layer_table.LAYER_TABLES[arch]()
  file_layers = read_keras_weights(path, layers)
  matched = _match_layers(arch, path, layers, file_layers)
  shapes = backbone_shapes(arch)
  variables: dict[str, dict] = {'params': {}, 'batch_stats': {}}
  errors = []
  for layer in layers:
    param_shapes = _subtree(shapes['params'], layer.flax_path)
    tensors, name_errors = _flax_tensors(
        layer, matched[layer.name], has_bias='bias' in param_shapes)
    errors += name_errors
    for collection, leaf, array in tensors:
      expected = _subtree(shapes[collection], layer.flax_path)[leaf].shape
      if array.shape != expected:
        errors.append(f'{layer.name}/{leaf}: file {array.shape}, model {expected}')
        continue
      node = variables[collection]
      for key in layer.flax_path:
        node = node.setdefault(key, {})
      node[leaf] = jnp.asarray(array, jnp.float32)
  if errors:
    raise WeightsError(f'{path} does not fit {arch}; mismatching tensors: '
                       f'{_listing(errors)}.')
  if jax.tree.structure(variables) != jax.tree.structure(shapes):
    raise AssertionError(f'The {arch} layer table does not cover the model.')
  skipped = [name for name, tensors in file_layers.items()
             if _is_input_normalization(name, tensors)]
  if skipped:
    logging.info('%s: ignored %s (the backbone normalises its own inputs).',
                 path, _listing(skipped))
  return variables
