"""The groups every result is reported by: overall, each modality and each source."""

from typing import Sequence

import ml_collections
import numpy as np

from hybridcovid.evaluation import bootstrap, metrics


def group_masks(predictions: Sequence[dict], by_source: bool = True) -> dict[str, np.ndarray]:
  """Masks of `predictions` (rows with `modality` and `source`): 'overall', each modality
  present in sorted order, then, with `by_source`, each source as 'source:<name>'."""
  modalities = np.array([row['modality'] for row in predictions])
  masks = {'overall': np.ones(len(predictions), bool),
           **{modality: modalities == modality for modality in sorted(set(modalities.tolist()))}}
  if by_source:
    sources = np.array([row['source'] for row in predictions])
    masks.update({f'source:{source}': sources == source
                  for source in sorted(set(sources.tolist()))})
  return masks


def group_metrics(predictions: Sequence[dict], threshold: float = 0.5,
                  eval_config: ml_collections.ConfigDict | None = None) -> dict:
  """`metrics.binary_metrics` of `predictions` in each of their `group_masks`, at `threshold`.

  Rows give `label` and COVID `probability`. With `eval_config` (the config's
  `eval` section), each group's metrics also get bootstrap confidence
  `intervals`, resampling patients (`patient_id`), and `too_few_images` for a
  group too small for them to be trusted.
  """
  labels = np.array([row['label'] for row in predictions])
  scores = np.array([row['probability'] for row in predictions])
  masks = group_masks(predictions)
  result = {group: metrics.binary_metrics(labels[mask], scores[mask], threshold)
            for group, mask in masks.items()}
  if eval_config is not None:
    patients = np.array([row['patient_id'] for row in predictions])
    for group, values in result.items():
      mask = masks[group]
      values['intervals'] = bootstrap.confidence_intervals(
          labels[mask], scores[mask], patients[mask], threshold,
          eval_config.bootstrap_resamples, eval_config.bootstrap_seed,
          eval_config.confidence_level)
      values['too_few_images'] = bootstrap.too_few_images(values['counts'])
  return result
