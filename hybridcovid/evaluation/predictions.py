"""One pass of a model over a split: every example once, and its prediction row."""

from typing import Any, Callable

import jax
from jax.experimental import multihost_utils
import numpy as np

from hybridcovid.data import input_pipeline, loading
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


def prediction_rows(data: loading.LoadedData, ids: np.ndarray,
                    probabilities: np.ndarray) -> list[dict]:
  """One row per example: key, patient, modality, source, label, COVID probability."""
  records = [data.facts[i].record for i in ids]
  return [{'key': record.key, 'patient_id': record.patient_id,
           'modality': record.modality, 'source': record.source,
           'label': record.label, 'probability': float(probability)}
          for record, probability in zip(records, probabilities)]
