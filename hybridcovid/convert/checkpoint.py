"""Converted backbone checkpoints: write once, load into any classifier.

A checkpoint directory holds `backbone.json` (architecture and source file)
and `variables/` (an Orbax checkpoint of {'params', 'batch_stats'}).
"""

import json
import os
import shutil
import tempfile
from typing import Any, Mapping

from absl import logging
import jax
import numpy as np
import orbax.checkpoint as ocp

from hybridcovid.convert.keras_h5 import WeightsError, backbone_shapes

METADATA_FILE = 'backbone.json'
VARIABLES_DIR = 'variables'


def save_backbone(directory: str, arch: str, variables: dict,
                  source: Mapping[str, Any]) -> None:
  """Writes a converted backbone to `directory`, which must not exist yet.

  The checkpoint is assembled beside `directory` and renamed into place, so an
  interrupted save leaves no half-written checkpoint.
  """
  directory = os.path.abspath(directory)
  if os.path.exists(directory):
    raise WeightsError(f'{directory} already exists; choose a new --output '
                       'or remove it first.')
  parent = os.path.dirname(directory)
  os.makedirs(parent, exist_ok=True)
  staging = tempfile.mkdtemp(prefix='.partial-', dir=parent)
  try:
    with ocp.StandardCheckpointer() as checkpointer:
      # Host arrays: a checkpoint tied to no device restores on any machine.
      checkpointer.save(os.path.join(staging, VARIABLES_DIR), jax.device_get(variables))
      checkpointer.wait_until_finished()
    with open(os.path.join(staging, METADATA_FILE), 'w') as f:
      json.dump({'arch': arch, **source}, f, indent=2)
    os.replace(staging, directory)
  finally:
    shutil.rmtree(staging, ignore_errors=True)


def _shape_mismatches(restored: Any, expected: Any) -> list[str]:
  restored_leaves = dict(jax.tree_util.tree_leaves_with_path(restored))
  problems = []
  for key_path, leaf in jax.tree_util.tree_leaves_with_path(expected):
    name = jax.tree_util.keystr(key_path)
    if key_path not in restored_leaves:
      problems.append(f'{name} missing')
    elif np.shape(restored_leaves[key_path]) != leaf.shape:
      problems.append(f'{name}: checkpoint {np.shape(restored_leaves[key_path])}'
                      f', model {leaf.shape}')
  expected_paths = {path for path, _ in
                    jax.tree_util.tree_leaves_with_path(expected)}
  problems += [f'{jax.tree_util.keystr(path)} unexpected'
               for path in restored_leaves if path not in expected_paths]
  return problems


def load_backbone(directory: str, arch: str) -> dict:
  """Reads a checkpoint written by `save_backbone`, checking it holds `arch`."""
  directory = os.path.abspath(directory)
  metadata_path = os.path.join(directory, METADATA_FILE)
  fix = ('Write it with `python -m hybridcovid.convert --arch=ARCH '
         '--keras_h5=FILE --output=DIR`.')
  try:
    with open(metadata_path) as f:
      metadata = json.load(f)
  except (OSError, ValueError) as error:
    raise WeightsError(f'{directory} is not a converted backbone checkpoint: '
                       f'cannot read {METADATA_FILE} ({error}). {fix}') from error
  if metadata.get('arch') != arch:
    raise WeightsError(f'{directory} holds {metadata.get("arch")!r} weights, '
                       f'not {arch!r}. Point the {arch} entry at a {arch} '
                       'checkpoint.')
  try:
    with ocp.StandardCheckpointer() as checkpointer:
      restored = checkpointer.restore(os.path.join(directory, VARIABLES_DIR))
  except Exception as error:  # Orbax raises many types for damaged files.
    raise WeightsError(f'{directory}: the checkpoint cannot be restored '
                       f'({type(error).__name__}: {error}). If it is damaged, '
                       f'convert the weights again. {fix}') from error
  problems = _shape_mismatches(restored, backbone_shapes(arch))
  if problems:
    raise WeightsError(f'{directory} does not fit {arch}: '
                       f'{"; ".join(problems[:8])}. {fix}')
  return restored


def load_pretrained(variables: dict, pretrained: Mapping[str, str]) -> dict:
  """Fills each named backbone's subtree of a classifier's variables.

  `pretrained` maps backbone names to checkpoint directories; empty paths are
  skipped. Everything else (the head, backbones without a path) keeps its
  fresh initialisation. What was loaded and what was not is logged.
  """
  params = dict(variables['params'])
  batch_stats = dict(variables.get('batch_stats', {}))
  loaded = []
  for name, directory in pretrained.items():
    if not directory:
      continue
    if name not in params:
      raise WeightsError(f'Pretrained weights given for {name!r}, but the model '
                         f'has no such backbone (its parts: {sorted(params)}).')
    backbone = load_backbone(directory, name)
    params[name] = backbone['params']
    batch_stats[name] = backbone['batch_stats']
    loaded.append(name)
    logging.info('Loaded ImageNet weights for %s from %s.', name, directory)
  fresh = [name for name in params if name not in loaded]
  logging.info('Freshly initialised: %s.', ', '.join(fresh) or 'nothing')
  return {**variables, 'params': params, 'batch_stats': batch_stats}
