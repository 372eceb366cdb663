"""The run's report: metrics.json, report.md in the paper's table layout, and figures.

`WORKDIR/report/` holds `metrics.json`, `report.md`, `predictions.csv` (one
row per test image), `confusion_matrix.png`, `roc.png`, `reliability.png`,
`training_curves.png`, Grad-CAM explanations in `gradcam/`, and the same
decisions per patient: `patient_predictions.csv` and `patient_*.png`. With more
than two classes, also `class_confusion_matrix.png` and `class_roc.png`, and
each image's class probabilities in `predictions.csv`. Every number
is computed from the predictions given; the test split is the one the selected
checkpoint was evaluated on once.
"""

import csv
import os
from typing import Sequence

from hybridcovid import classes
from hybridcovid.report import figures, json_format
from hybridcovid.report import markdown as markdown_lib

REPORT_DIR = 'report'
METRICS_FILE = 'metrics.json'


IMAGE_FIELDS = ('key', 'patient_id', 'modality', 'source', 'label', 'probability')
PATIENT_FIELDS = ('patient_id', 'modality', 'source', 'label', 'images', 'mixed_labels',
                  'probability')


def write_predictions(predictions: Sequence[dict], path: str,
                      fields: Sequence[str] = IMAGE_FIELDS) -> None:
  """A CSV of `predictions`, one row each, with the calibrated probability where there is
  one, and the classes and their probabilities where there are more than two."""
  fields = tuple(fields)
  if predictions and 'calibrated_probability' in predictions[0]:
    fields += ('calibrated_probability',)
  if predictions and 'class' in predictions[0]:
    fields += ('class', 'predicted_class', *(f'probability_{name}' for name in classes.NAMES
                                             if f'probability_{name}' in predictions[0]))
  with open(path, 'w', newline='') as f:
    writer = csv.DictWriter(f, fields, extrasaction='ignore')
    writer.writeheader()
    writer.writerows(predictions)


def _plot_decisions(predictions: Sequence[dict], point: dict | None, report_dir: str,
                    names: Sequence[str], prefix: str = '', unit: str = '') -> None:
  """The confusion matrices, ROC curves and reliability diagram of `predictions`, COVID
  against the other class `names`, at the threshold of `point` (fixed on validation) where
  there is one, else 0.5."""
  threshold = point['threshold'] if point else 0.5
  label = unit + figures.threshold_label(threshold, bool(point))
  figures.plot_confusion_matrices(
      predictions, os.path.join(report_dir, f'{prefix}confusion_matrix.png'), threshold, label,
      classes.negative_name(names))
  figures.plot_roc_curves(predictions, os.path.join(report_dir, f'{prefix}roc.png'), threshold,
                          label)
  figures.plot_reliability(predictions, os.path.join(report_dir, f'{prefix}reliability.png'),
                           threshold, label)


def write_report(report_dir: str, result: dict, predictions: Sequence[dict],
                 history: Sequence[dict], description: dict,
                 patient_predictions: Sequence[dict] = ()) -> None:
  """Writes every report file into `report_dir`.

  Args:
    report_dir: the folder to write, created if needed.
    result: `selected_epoch`, `selection_metric`, `validation` (overall
      metrics of the selected epoch) and `test` (metrics per group, each
      optionally with confidence `intervals`); optionally `intervals` (their
      level, resamples and unit) and `operating_point` (from
      `calibration.operating_point`, plus `test` metrics per group at its
      threshold, `warnings` (`markdown.sensitivity_warnings`), the test ECE raw and,
      where scaling is used, calibrated), `patient` (the same per patient:
      `aggregation`, `patients`, `images`, `mixed_labels`, `test` and
      optionally `operating_point`), `shortcut_probe` (from
      `probe.shortcut_probe`), `leave_one_source_out` ({source: overall test
      metrics of the model trained without it, or 'skipped'}),
      `explanations` (the threshold and one row per Grad-CAM image written
      under `report_dir`), `classes` (the task's class names; two where
      missing) and, with more than two, `test_classes`
      (`multiclass.group_class_metrics`).
    predictions: one dict per test image: key, patient_id, modality, source,
      label (1 for COVID), probability (of COVID) and optionally
      calibrated_probability; with more than two classes also class,
      predicted_class and probability_<class> of each.
    history: one dict per epoch: epoch (from 1), train_loss, validation_loss,
      train_accuracy, learning_rate and validation (overall metrics).
    description: title, model, image_size, data, split, epochs and provenance
      (how the evaluated images were used) as text, and optional notes, for
      report.md.
    patient_predictions: with `result['patient']`, one dict per test patient
      and modality (`patients.patient_rows`), written to patient_predictions.csv
      and drawn as patient_*.png where some patient has several images.
  """
  os.makedirs(report_dir, exist_ok=True)
  json_format.write_json(os.path.join(report_dir, METRICS_FILE),
                         {**result, 'history': list(history)})
  write_predictions(predictions, os.path.join(report_dir, 'predictions.csv'))
  # The figures show the decision a deployment would make: at the threshold
  # fixed on validation where there is one.
  names = tuple(result.get('classes', classes.BINARY))
  _plot_decisions(predictions, result.get('operating_point'), report_dir, names)
  if len(names) > 2:
    figures.plot_class_confusion_matrices(
        result['test_classes'], names, os.path.join(report_dir, 'class_confusion_matrix.png'))
    figures.plot_class_roc_curves(predictions, result['test_classes']['overall'], names,
                                  os.path.join(report_dir, 'class_roc.png'))
  # Where every patient has one image, report.md says the two levels agree.
  if any(row['images'] > 1 for row in patient_predictions):
    write_predictions(patient_predictions, os.path.join(report_dir, 'patient_predictions.csv'),
                      PATIENT_FIELDS)
    _plot_decisions(patient_predictions, result['patient'].get('operating_point'), report_dir,
                    names, 'patient_', 'per patient, ')
  figures.plot_training_curves(history, os.path.join(report_dir, 'training_curves.png'),
                               result['selected_epoch'])
  with open(os.path.join(report_dir, 'report.md'), 'w') as f:
    f.write(markdown_lib.markdown(result, description))
