"""The test images a report explains: a few of each outcome, and their Grad-CAM images."""

import os
from typing import Sequence

from absl import logging
import ml_collections

from hybridcovid import classes, models
from hybridcovid.data import loading, resize
from hybridcovid.evaluation import explain
from hybridcovid.training import train

# Outcomes at the decision threshold: (name, true label, decision).
OUTCOMES = (('true positive', 1, 1), ('false positive', 0, 1),
            ('true negative', 0, 0), ('false negative', 1, 0))


def explanation_examples(predictions: Sequence[dict], threshold: float, per_outcome: int
                         ) -> list[dict]:
  """Up to `per_outcome` rows of each outcome at `threshold`, the most confident first,
  one image per patient."""
  chosen = []
  for outcome, label, decision in OUTCOMES:
    rows = [row for row in predictions
            if row['label'] == label and (row['probability'] >= threshold) == decision]
    rows.sort(key=lambda row: (-abs(row['probability'] - threshold), row['key']))
    patients = set()
    for row in rows:
      if len(patients) < per_outcome and row['patient_id'] not in patients:
        patients.add(row['patient_id'])
        chosen.append({**row, 'outcome': outcome})
  return chosen


def explain_examples(config: ml_collections.ConfigDict, state: train.InferenceState,
                     data: loading.LoadedData, predictions: Sequence[dict], threshold: float,
                     report_dir: str) -> list[dict]:
  """Grad-CAM PNGs of sample test images in `report_dir`/gradcam/; a row for each."""
  examples = explanation_examples(predictions, threshold, config.eval.gradcam_per_outcome)
  records = {fact.record.key: fact.record for fact in data.facts}
  images, _, problems = resize.read_resized([records[row['key']].path for row in examples],
                                             config.data)
  for problem in problems:
    logging.warning('No Grad-CAM for %s: %s', problem['path'], problem['reason'])
  unread = {problem['path'] for problem in problems}
  examples = [row for row in examples if records[row['key']].path not in unread]
  if not examples:
    return []
  os.makedirs(os.path.join(report_dir, explain.GRADCAM_DIR), exist_ok=True)
  names, counts = [], {}
  for row in examples:
    counts[row['outcome']] = counts.get(row['outcome'], 0) + 1
    names.append(f"{row['outcome'].replace(' ', '_')}_{counts[row['outcome']]}.png")
  shares = explain.explain_images(
      models.create_classifier(config.model, len(classes.of_config(config.data))),
      train.host_variables(state), images,
      [row['probability'] >= threshold for row in examples],
      [explain.decision_title(row['outcome'], row['probability'], threshold)
       for row in examples],
      [os.path.join(report_dir, explain.GRADCAM_DIR, name) for name in names])
  return [{'key': row['key'], 'patient_id': row['patient_id'], 'modality': row['modality'],
           'outcome': row['outcome'], 'probability': row['probability'],
           'image': f'{explain.GRADCAM_DIR}/{name}',
           'evidence_shares': image_shares}
          for row, name, image_shares in zip(examples, names, shares)]
