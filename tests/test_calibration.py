import numpy as np
import pytest

from hybridcovid import calibration


def test_expected_calibration_error_of_a_hand_computed_case():
  labels = np.array([0, 1, 1, 1, 0])
  probabilities = np.array([0.05, 0.15, 0.95, 0.85, 0.55])
  # One image per bin; gaps |fraction - probability|: .05, .85, .05, .15, .55.
  assert calibration.expected_calibration_error(labels, probabilities) == pytest.approx(
      (0.05 + 0.85 + 0.05 + 0.15 + 0.55) / 5)
  table = calibration.reliability(labels, probabilities)
  assert table['counts'].tolist() == [1, 1, 0, 0, 0, 1, 0, 0, 1, 1]
  assert np.isnan(table['mean_probability'][2])


def _overconfident(temperature, images=20000, seed=0):
  rng = np.random.default_rng(seed)
  calibrated = rng.uniform(0.02, 0.98, images)
  labels = rng.random(images) < calibrated
  return labels, calibration.apply_temperature(calibrated, 1 / temperature)


def test_fitted_temperature_undoes_overconfidence():
  labels, probabilities = _overconfident(2.5)
  temperature = calibration.fit_temperature(labels, probabilities)
  assert temperature == pytest.approx(2.5, rel=0.05)
  calibrated = calibration.apply_temperature(probabilities, temperature)
  assert (calibration.negative_log_likelihood(labels, calibrated)
          < calibration.negative_log_likelihood(labels, probabilities))
  assert calibration.expected_calibration_error(labels, calibrated) < 0.02 < (
      calibration.expected_calibration_error(labels, probabilities))


def test_temperature_keeps_the_order_of_the_scores():
  probabilities = np.array([0.01, 0.3, 0.5, 0.7, 0.999])
  scaled = calibration.apply_temperature(probabilities, 3.0)
  assert np.all(np.diff(scaled) > 0) and scaled[2] == pytest.approx(0.5)


def test_threshold_is_the_highest_that_reaches_the_sensitivity():
  labels = np.array([1, 1, 1, 1, 1, 0, 0])
  scores = np.array([0.9, 0.8, 0.7, 0.6, 0.3, 0.65, 0.1])
  assert calibration.threshold_for_sensitivity(labels, scores, 0.8) == 0.6
  assert calibration.threshold_for_sensitivity(labels, scores, 0.95) == 0.3
  assert calibration.threshold_for_sensitivity(labels, scores, 0.2) == 0.9
  assert calibration.threshold_for_sensitivity(np.zeros(3), np.ones(3), 0.95) == 0.5


@pytest.mark.parametrize('seed', range(5))
def test_threshold_rule_against_every_candidate(seed):
  rng = np.random.default_rng(seed)
  labels = rng.random(60) < 0.4
  scores = np.round(rng.random(60), 1)  # Many ties.
  target = 0.9
  threshold = calibration.threshold_for_sensitivity(labels, scores, target)

  def sensitivity(t):
    return np.mean(scores[labels] >= t)

  assert sensitivity(threshold) >= target
  assert all(sensitivity(t) < target for t in np.unique(scores) if t > threshold)
