"""Calibration and the operating point, fitted on the validation split.

The classifier's COVID probability is the logistic of the COVID log-odds
(with two classes, the difference of the two logits; with three, the COVID
logit against the log-sum-exp of the others): temperature scaling divides
the log-odds by one number T fitted to minimise the validation negative
log-likelihood of COVID against the rest. The decision threshold is the highest one that reaches a
target sensitivity on the validation split. Both are chosen without the
test split and then applied to it unchanged.

A temperature fitted on validation always lowers the validation loss, so that
says nothing. Scaling is kept only where it helps images it was not fitted on:
the validation patients are dealt into folds, each fold is scaled with the
temperature fitted on the others, and both the log-loss and the calibration
error must fall. Otherwise the raw probabilities are kept (temperature 1).
"""

import numpy as np

from hybridcovid.evaluation import folds as folds_lib

# Probabilities are clipped this far from 0 and 1 before taking logits.
EPSILON = 1e-7


def logits(probabilities: np.ndarray) -> np.ndarray:
  """The logit difference whose logistic is `probabilities`."""
  p = np.clip(np.asarray(probabilities, np.float64), EPSILON, 1 - EPSILON)
  return np.log(p) - np.log1p(-p)


def apply_temperature(probabilities: np.ndarray, temperature: float) -> np.ndarray:
  """Probabilities with their logits divided by `temperature`."""
  return 1 / (1 + np.exp(-logits(probabilities) / temperature))


def negative_log_likelihood(labels: np.ndarray, probabilities: np.ndarray) -> float:
  labels = np.asarray(labels, bool)
  p = np.clip(np.asarray(probabilities, np.float64), EPSILON, 1 - EPSILON)
  return float(-np.mean(np.where(labels, np.log(p), np.log1p(-p))))


def fit_temperature(labels: np.ndarray, probabilities: np.ndarray) -> float:
  """The temperature in [0.05, 20] minimising the negative log-likelihood.

  A golden-section search on log T: the likelihood is unimodal in it.
  """
  def loss(log_temperature):
    return negative_log_likelihood(
        labels, apply_temperature(probabilities, np.exp(log_temperature)))

  low, high = np.log(0.05), np.log(20.0)
  ratio = (np.sqrt(5) - 1) / 2
  left, right = high - ratio * (high - low), low + ratio * (high - low)
  loss_left, loss_right = loss(left), loss(right)
  for _ in range(60):
    if loss_left <= loss_right:
      high, right, loss_right = right, left, loss_left
      left = high - ratio * (high - low)
      loss_left = loss(left)
    else:
      low, left, loss_left = left, right, loss_right
      right = low + ratio * (high - low)
      loss_right = loss(right)
  return float(np.exp((low + high) / 2))


def threshold_for_sensitivity(labels: np.ndarray, probabilities: np.ndarray,
                              sensitivity: float) -> float:
  """The highest threshold at which at least `sensitivity` of the COVID cases score >= it.

  The highest such threshold keeps specificity as high as the target allows.
  Without COVID cases it is 0.5.
  """
  positives = np.sort(np.asarray(probabilities, np.float64)[np.asarray(labels, bool)])[::-1]
  if not len(positives):
    return 0.5
  # The k-th highest positive score flags k positives (ties flag more).
  needed = max(int(np.ceil(sensitivity * len(positives) - 1e-9)), 1)
  return float(positives[needed - 1])


def reliability(labels: np.ndarray, probabilities: np.ndarray, bins: int = 10
                ) -> dict[str, np.ndarray]:
  """Per equal-width bin of the COVID probability: images, mean probability, COVID fraction.

  Empty bins have NaN means.
  """
  p = np.asarray(probabilities, np.float64)
  labels = np.asarray(labels, np.float64)
  index = np.minimum((p * bins).astype(int), bins - 1)
  counts = np.bincount(index, minlength=bins)
  with np.errstate(invalid='ignore', divide='ignore'):
    confidence = np.bincount(index, p, bins) / counts
    observed = np.bincount(index, labels, bins) / counts
  return {'counts': counts, 'mean_probability': confidence, 'covid_fraction': observed,
          'edges': np.linspace(0, 1, bins + 1)}


def expected_calibration_error(labels: np.ndarray, probabilities: np.ndarray,
                               bins: int = 10) -> float:
  """Sum over bins of |COVID fraction - mean probability|, weighted by the bin's share."""
  table = reliability(labels, probabilities, bins)
  filled = table['counts'] > 0
  gaps = np.abs(table['covid_fraction'][filled] - table['mean_probability'][filled])
  return float(np.sum(table['counts'][filled] * gaps) / max(len(probabilities), 1))


def cross_validated_scaling(labels: np.ndarray, probabilities: np.ndarray,
                            patients: np.ndarray, folds: int = folds_lib.FOLDS) -> dict | None:
  """Log-loss and ECE of the raw probabilities and of out-of-fold scaled ones.

  Each fold of patients (`folds.patient_folds`) is scaled with the temperature
  fitted on the other folds. None when that cannot be done: a class with fewer
  than two patients (some fold would lack it), or one class only.
  """
  labels = np.asarray(labels, bool)
  probabilities = np.asarray(probabilities, np.float64)
  patients = np.asarray(patients).astype(str)
  if min(len(np.unique(patients[labels == value])) for value in (False, True)) < 2:
    return None
  splits = folds_lib.patient_folds(labels, patients, folds)
  scaled = np.empty_like(probabilities)
  for fitted_on, held_out in splits:
    temperature = fit_temperature(labels[fitted_on], probabilities[fitted_on])
    scaled[held_out] = apply_temperature(probabilities[held_out], temperature)
  return {'folds': len(splits),
          'nll_raw': negative_log_likelihood(labels, probabilities),
          'nll_scaled': negative_log_likelihood(labels, scaled),
          'ece_raw': expected_calibration_error(labels, probabilities),
          'ece_scaled': expected_calibration_error(labels, scaled)}


def _scaling_decision(checked: dict | None, unit: str) -> tuple[bool, str]:
  """Whether to scale, given `cross_validated_scaling`, and why, in a sentence about
  `unit`s (images or patients)."""
  if checked is None:
    return False, ('There are too few validation patients, or one class only, to check '
                   f'that temperature scaling helps {unit} it was not fitted on, so the raw '
                   'probabilities are kept.')
  numbers = (f"cross-validated over {checked['folds']} folds of validation patients, "
             f"log-loss {checked['nll_raw']:.4f} raw against {checked['nll_scaled']:.4f} "
             f"scaled, calibration error {100 * checked['ece_raw']:.2f}% against "
             f"{100 * checked['ece_scaled']:.2f}%")
  if checked['nll_scaled'] < checked['nll_raw'] and checked['ece_scaled'] < checked['ece_raw']:
    return True, f'Temperature scaling helps {unit} it was not fitted on ({numbers}).'
  return False, (f'Temperature scaling does not help {unit} it was not fitted on '
                 f'({numbers}), so the raw probabilities are kept.')


def operating_point(labels: np.ndarray, probabilities: np.ndarray, patients: np.ndarray,
                    target_sensitivity: float, unit: str = 'images') -> dict:
  """Temperature and decision threshold fitted on validation predictions, with their ECE.

  `temperature` is the one to apply: the fitted one where scaling helps out
  of sample (`cross_validated_scaling`), else 1; `scaling` says which and why.
  """
  fitted = fit_temperature(labels, probabilities)
  checked = cross_validated_scaling(labels, probabilities, patients)
  used, reason = _scaling_decision(checked, unit)
  threshold = threshold_for_sensitivity(labels, probabilities, target_sensitivity)
  positives = np.asarray(labels, bool)
  return {'temperature': fitted if used else 1.0, 'threshold': threshold,
          'target_sensitivity': target_sensitivity,
          'validation_sensitivity': float(np.mean(
              np.asarray(probabilities)[positives] >= threshold)) if positives.any() else None,
          'validation_ece': expected_calibration_error(labels, probabilities),
          'scaling': {'used': used, 'fitted_temperature': fitted, 'reason': reason,
                      'cross_validation': checked}}


def scaling_used(point: dict) -> bool:
  """Whether an `operating_point` scales the probabilities (runs older than the
  out-of-sample check always did)."""
  return point.get('scaling', {}).get('used', True)
