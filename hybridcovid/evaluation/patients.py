"""One decision per patient: the outputs of a patient's images aggregated into one.

Clinicians decide per patient or per study, not per image. The images of one
patient in one modality make one study, and its COVID probability aggregates
theirs. The default, the mean of the logits, is the logistic of the mean
log-odds, so that every image's evidence counts alike and one confident image
can be outweighed; 'max' flags a study as soon as any image looks like COVID;
'mean_probability' averages the probabilities.
"""

from typing import Sequence

import numpy as np

from hybridcovid import errors
from hybridcovid.evaluation import calibration

AGGREGATIONS = ('mean_logit', 'max', 'mean_probability')


def check_aggregation(aggregation: str) -> None:
  """Raises a `errors.UserError` naming the choices unless `aggregation` is one."""
  if aggregation not in AGGREGATIONS:
    raise errors.UserError(
        f'Unknown --config.eval.patient_aggregation={aggregation!r}; choose one of '
        f'{", ".join(AGGREGATIONS)}.')


def aggregate(probabilities: Sequence[float], aggregation: str) -> float:
  """One COVID probability from those of a study's images."""
  check_aggregation(aggregation)
  probabilities = np.asarray(probabilities, np.float64)
  if aggregation == 'mean_logit':
    return float(1 / (1 + np.exp(-np.mean(calibration.logits(probabilities)))))
  if aggregation == 'max':
    return float(np.max(probabilities))
  return float(np.mean(probabilities))


def patient_rows(predictions: Sequence[dict], aggregation: str,
                 key: str = 'patient_id') -> list[dict]:
  """One row per patient (or other `key`, such as a study) and modality, in order of
  first appearance.

  Rows of `predictions` give `key`, modality, COVID probability and, where
  known, source and label. Each row returned has `key`, modality, `images`
  (how many were aggregated) and probability; where labels are known, also
  source (a study's sources joined with '+'), label and `mixed_labels` (its
  images disagree: the study is then COVID, as a patient with any COVID image
  has COVID).
  """
  studies: dict[tuple[str, str], list[dict]] = {}
  for row in predictions:
    studies.setdefault((row[key], row['modality']), []).append(row)
  rows = []
  for (study, modality), images in studies.items():
    row = {key: study, 'modality': modality, 'images': len(images),
           'probability': aggregate([image['probability'] for image in images], aggregation)}
    if 'label' in images[0]:
      labels = {int(image['label']) for image in images}
      row.update(source='+'.join(sorted({image['source'] for image in images})),
                 label=max(labels), mixed_labels=len(labels) > 1)
    rows.append(row)
  return rows


def operating_point(predictions: Sequence[dict], aggregation: str,
                    target_sensitivity: float) -> dict:
  """`calibration.operating_point` fitted on the patient rows of validation `predictions`,
  with the `aggregation` it holds for."""
  rows = patient_rows(predictions, aggregation)
  labels, probabilities, patients = (np.array([row[field] for row in rows])
                                     for field in ('label', 'probability', 'patient_id'))
  return {**calibration.operating_point(labels, probabilities, patients, target_sensitivity,
                                       'patients'),
          'aggregation': aggregation}
