"""Metrics of a classifier of more than two classes: one class against the rest, and the
confusion matrix.

Each image's decision is its most probable class. For each class, that class
is positive and every other one negative: sensitivity (recall), specificity,
PPV (precision) and the ROC AUC of the class's probability. The macro AUC is
the mean of the AUCs of the classes that have images (external data may lack
one). Confidence intervals resample patients, as
`bootstrap` does for the COVID-against-the-rest metrics, from the same
weighted sums: a point estimate is the case of one resample with every
weight 1.
"""

from typing import Sequence
import warnings

import ml_collections
import numpy as np

from hybridcovid import classes
from hybridcovid.evaluation import bootstrap, groups

CLASS_METRICS = ('recall', 'specificity', 'precision', 'auc')
OVERALL_METRICS = ('accuracy', 'macro_auc')


def class_fields(probabilities: np.ndarray) -> dict:
  """An image's `predicted_class` (the most probable) and `probability_<class>` of each
  class, from its class probabilities."""
  return {'predicted_class': classes.NAMES[int(np.argmax(probabilities))],
          **{f'probability_{name}': float(probability)
             for name, probability in zip(classes.NAMES, probabilities)}}


def confusion_matrix(true: np.ndarray, predicted: np.ndarray, count: int) -> np.ndarray:
  """(count, count) image counts: row the true class, column the predicted one."""
  return np.bincount(np.asarray(true) * count + np.asarray(predicted),
                     minlength=count * count).reshape(count, count)


def _weighted(true: np.ndarray, probabilities: np.ndarray, weights: np.ndarray) -> dict:
  """Every metric for each row of `weights` (image weights), as arrays over the rows."""
  predicted = np.argmax(probabilities, axis=1)
  values = {'accuracy': bootstrap.ratio(weights @ (predicted == true), weights.sum(axis=1)),
            'classes': []}
  for label in range(probabilities.shape[1]):
    positive, chosen = true == label, predicted == label
    tp, fp = weights @ (positive & chosen), weights @ (~positive & chosen)
    fn, tn = weights @ (positive & ~chosen), weights @ (~positive & ~chosen)
    values['classes'].append({
        'recall': bootstrap.ratio(tp, tp + fn), 'specificity': bootstrap.ratio(tn, tn + fp),
        'precision': bootstrap.ratio(tp, tp + fp),
        'auc': bootstrap.weighted_auc(positive, probabilities[:, label], weights)})
  with warnings.catch_warnings():  # A resample with no class defined is NaN.
    warnings.simplefilter('ignore', RuntimeWarning)
    values['macro_auc'] = np.nanmean([by_class['auc'] for by_class in values['classes']],
                                     axis=0)
  return values


def class_metrics(true: Sequence[int], probabilities: np.ndarray, names: Sequence[str],
                  patients: Sequence[str] | None = None,
                  eval_config: ml_collections.ConfigDict | None = None) -> dict:
  """Accuracy, macro AUC, the confusion matrix and, per class of `names`, its images and
  one-against-the-rest metrics, of labels `true` and (images, classes) `probabilities`.

  With `patients` and `eval_config` (the config's `eval` section), each metric also gets
  its bootstrap confidence interval in `intervals`, resampling patients, and the
  result `too_few_images` where the images, or those of a class, are too few to trust
  them (`bootstrap.MIN_IMAGES`, `bootstrap.MIN_IMAGES_PER_CLASS`).
  """
  true = np.asarray(true, np.int64)
  probabilities = np.asarray(probabilities, np.float64).reshape(len(true), len(names))
  point = _weighted(true, probabilities, np.ones((1, len(true))))
  images = np.bincount(true, minlength=len(names))
  result = {'images': len(true),
            **{name: float(point[name][0]) for name in OVERALL_METRICS},
            'absent_classes': [name for label, name in enumerate(names) if not images[label]],
            'confusion_matrix': confusion_matrix(true, np.argmax(probabilities, axis=1),
                                                 len(names)).tolist(),
            'classes': {name: {'images': int(images[label]),
                               **{metric: float(point['classes'][label][metric][0])
                                  for metric in CLASS_METRICS}}
                        for label, name in enumerate(names)}}
  if patients is None or eval_config is None:
    return result
  resampled = _weighted(true, probabilities, bootstrap.patient_weights(
      patients, eval_config.bootstrap_resamples, eval_config.bootstrap_seed))
  level = eval_config.confidence_level
  result['intervals'] = {name: bootstrap.percentile_interval(resampled[name], level)
                         for name in OVERALL_METRICS}
  for label, name in enumerate(names):
    result['classes'][name]['intervals'] = {
        metric: bootstrap.percentile_interval(resampled['classes'][label][metric], level)
        for metric in CLASS_METRICS}
  result['too_few_images'] = bool(len(true) < bootstrap.MIN_IMAGES
                                  or images.min() < bootstrap.MIN_IMAGES_PER_CLASS)
  return result


def group_class_metrics(predictions: Sequence[dict], names: Sequence[str],
                        eval_config: ml_collections.ConfigDict | None = None) -> dict:
  """`class_metrics` of `predictions` in each of their `groups.group_masks`.

  Rows give their `class` by name and `probability_<name>` of each class, as
  `predictions.prediction_rows` writes them, and `patient_id`.
  """
  true = np.array([list(names).index(row['class']) for row in predictions], np.int64)
  probabilities = np.array([[row[f'probability_{name}'] for name in names]
                            for row in predictions]).reshape(len(predictions), len(names))
  patients = np.array([row['patient_id'] for row in predictions])
  return {group: class_metrics(true[mask], probabilities[mask], names, patients[mask],
                               eval_config)
          for group, mask in groups.group_masks(predictions).items()}


def selection_value(validation: dict, metric: str) -> float:
  """The overall validation `metric` that selects a checkpoint: that of the classes
  (accuracy, macro AUC) where `validation` has more than two, else that of COVID against
  the rest."""
  return validation.get('classes', {}).get(metric, validation.get(metric))
