"""Builds the configured classifier, loads its pretrained backbones and describes it."""

import json
import os
from typing import Any

from absl import logging
import jax
import jax.numpy as jnp
import ml_collections

from hybridcovid import classes, models
from hybridcovid.training import train


def _size(tree: Any) -> int:
  return sum(leaf.size for leaf in jax.tree.leaves(tree))


def summarize(config: ml_collections.ConfigDict, workdir: str) -> dict:
  """Writes `workdir/model_summary.json`: values per part, output shape, weights loaded."""
  model = models.create_classifier(config.model, len(classes.of_config(config.data)))
  size = config.data.image_size
  images = jnp.zeros((1, size, size, 3), jnp.uint8)
  variables = train.initial_variables(config)
  pretrained = dict(config.model.pretrained)
  logits = jax.jit(model.apply)(variables, images)
  parts = {name: _size(variables['params'][name])
           + _size(variables['batch_stats'].get(name, {}))
           for name in variables['params']}
  summary = {
      'backbones': list(config.model.backbones),
      'values_per_part': parts,
      'total_values': sum(parts.values()),
      'input_shape': list(images.shape),
      'logits_shape': list(logits.shape),
      'dtype': config.model.dtype,
      'pretrained': {name: pretrained.get(name, '') or None
                     for name in config.model.backbones},
  }
  for name, count in parts.items():
    logging.info('%-16s %12d values', name, count)
  logging.info('%-16s %12d values', 'total', summary['total_values'])
  os.makedirs(workdir, exist_ok=True)
  with open(os.path.join(workdir, 'model_summary.json'), 'w') as f:
    json.dump(summary, f, indent=2)
  return summary
