import numpy as np
import pytest

from hybridcovid.evaluation import calibration, folds


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


def _patients(images, per_patient=2):
  return np.array([f'p{index // per_patient}' for index in range(images)])


def test_scaling_that_helps_out_of_sample_is_kept():
  labels, probabilities = _overconfident(2.5, images=400)
  point = calibration.operating_point(labels, probabilities, _patients(400), 0.95)
  checked = point['scaling']['cross_validation']
  assert checked['folds'] == 5
  assert checked['nll_scaled'] < checked['nll_raw'] and checked['ece_scaled'] < checked['ece_raw']
  assert point['scaling']['used'] and calibration.scaling_used(point)
  assert point['temperature'] == point['scaling']['fitted_temperature'] == pytest.approx(
      calibration.fit_temperature(labels, probabilities))
  assert point['scaling']['reason'].startswith(
      'Temperature scaling helps images it was not fitted on (cross-validated over 5 folds')


def test_scaling_that_does_not_help_out_of_sample_is_dropped():
  # Calibrated already, and few images: a fitted temperature only adds noise.
  labels, probabilities = _overconfident(1.0, images=40, seed=3)
  point = calibration.operating_point(labels, probabilities, _patients(40), 0.95)
  checked = point['scaling']['cross_validation']
  assert checked['nll_scaled'] >= checked['nll_raw'] or checked['ece_scaled'] >= checked['ece_raw']
  assert not point['scaling']['used'] and point['temperature'] == 1.0
  assert point['scaling']['fitted_temperature'] != 1.0
  assert point['scaling']['reason'].endswith('so the raw probabilities are kept.')


def test_cross_validation_scales_each_fold_with_the_others_temperature():
  labels, probabilities = _overconfident(2.0, images=60, seed=1)
  patients = _patients(60, per_patient=3)
  checked = calibration.cross_validated_scaling(labels, probabilities, patients, folds=4)
  scaled = np.empty(60)
  for fitted_on, held_out in folds.patient_folds(labels, patients, 4):
    temperature = calibration.fit_temperature(labels[fitted_on], probabilities[fitted_on])
    scaled[held_out] = calibration.apply_temperature(probabilities[held_out], temperature)
  assert checked['folds'] == 4
  assert checked['nll_scaled'] == pytest.approx(
      calibration.negative_log_likelihood(labels, scaled))
  assert checked['ece_scaled'] == pytest.approx(
      calibration.expected_calibration_error(labels, scaled))
  assert checked['nll_raw'] == pytest.approx(
      calibration.negative_log_likelihood(labels, probabilities))
  # Scaled out of fold, not with the temperature fitted on all of them.
  everywhere = calibration.apply_temperature(
      probabilities, calibration.fit_temperature(labels, probabilities))
  assert checked['nll_scaled'] > calibration.negative_log_likelihood(labels, everywhere)


def test_scaling_is_not_checked_without_two_patients_of_each_class():
  assert calibration.cross_validated_scaling(np.ones(6), np.full(6, 0.7), _patients(6)) is None
  assert calibration.cross_validated_scaling(
      np.array([0, 1]), np.array([0.2, 0.7]), np.array(['p', 'p'])) is None
  # One COVID patient among five normal ones: a fold would hold no COVID case.
  assert calibration.cross_validated_scaling(
      np.array([0, 0, 0, 0, 0, 1]), np.linspace(0.1, 0.9, 6), _patients(6)) is None
  point = calibration.operating_point(np.ones(6), np.full(6, 0.7), _patients(6), 0.95)
  assert not point['scaling']['used'] and point['scaling']['reason'].startswith(
      'There are too few validation patients')
