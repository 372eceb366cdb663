"""One pass of a model over a split: every example once, and its prediction row."""

from typing import Any, Callable

import jax
from jax.experimental import multihost_utils
import numpy as np

from hybridcovid import classes
from hybridcovid.data import input_pipeline, loading
from hybridcovid.evaluation import multiclass
from hybridcovid.training import parallel, train


def predict_split(state: train.InferenceState, stream: input_pipeline.InputPipeline, split: str,
                  eval_fn: Callable, data_parallel: parallel.DataParallel
                  ) -> tuple[np.ndarray, Any]:
  """(example ids, `eval_fn`'s outputs) of every example of `split`, once each.

  `state` is in `data_parallel`'s layout. The outputs keep `eval_fn`'s
  structure: an array, or a dict of arrays.
  """
  ids, outputs = [], []
  for batch, device_batch in parallel.prefetch_to_devices(
      stream.eval_batches(split), data_parallel, ('image',)):
    mask = np.asarray(multihost_utils.process_allgather(batch['mask'], tiled=True))
    batch_ids = np.asarray(multihost_utils.process_allgather(batch['example_id'], tiled=True))
    ids.append(batch_ids[mask])
    outputs.append(jax.tree.map(lambda x: x[mask], data_parallel.host_outputs(
        eval_fn(state, device_batch))))
  return np.concatenate(ids), jax.tree.map(lambda *parts: np.concatenate(parts), *outputs)


def prediction_rows(data: loading.LoadedData, ids: np.ndarray, outputs: dict) -> list[dict]:
  """One row per example: key, patient, modality, source, label (1 for COVID, 0 for any other
  class) and COVID `probability`, from `outputs` of `train.eval_features_step`.

  With more than two classes, also the true `class` and the `predicted_class` (the most
  probable) by name, and `probability_<class>` of each.
  """
  records = [data.facts[i].record for i in ids]
  rows = [{'key': record.key, 'patient_id': record.patient_id,
           'modality': record.modality, 'source': record.source,
           'label': int(record.label == classes.COVID), 'probability': float(probability)}
          for record, probability in zip(records, outputs['probability'])]
  if outputs['class_probabilities'].shape[1] > 2:
    for row, record, probabilities in zip(rows, records, outputs['class_probabilities']):
      row['class'] = classes.NAMES[record.label]
      row.update(multiclass.class_fields(probabilities))
  return rows
