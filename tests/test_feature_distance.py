import numpy as np
import pytest

from hybridcovid.evaluation import feature_distance, folds


def _z(values, fitted_on):
  """z-scores of `values` against `fitted_on`, the variances shrunk as documented."""
  count, variance = len(fitted_on), fitted_on.var(0)
  shrunk = (count * variance + 10 * variance.mean()) / (count + 10)
  return (values - fitted_on.mean(0)) / np.sqrt(shrunk)


def _validation(seed=0, patients=100, features=50):
  """Two images per patient, features drawn around a per-feature mean and spread."""
  rng = np.random.default_rng(seed)
  mean, spread = rng.normal(0, 3, features), rng.uniform(0.5, 2, features)
  values = mean + spread * rng.normal(size=(2 * patients, features))
  labels = np.repeat(np.arange(patients) % 2, 2)
  return values, labels, np.repeat([f'p{i}' for i in range(patients)], 2), (mean, spread)


def test_distance_is_the_root_mean_square_z_score():
  values, labels, patients, _ = _validation()
  reference = feature_distance.fit_reference(values, labels, patients)
  new = values[:3] + 1.0
  z = _z(new, values)
  np.testing.assert_allclose(feature_distance.distances(reference, new),
                             np.sqrt(np.mean(z ** 2, axis=1)))
  assert reference['images'] == 200 and len(reference['mean']) == 50


def test_threshold_is_the_farthest_validation_image_from_the_other_folds():
  values, labels, patients, _ = _validation()
  reference = feature_distance.fit_reference(values, labels, patients)
  out_of_fold = np.empty(len(values))
  for fitted_on, held_out in folds.patient_folds(labels, patients):
    z = _z(values[held_out], values[fitted_on])
    out_of_fold[held_out] = np.sqrt(np.mean(z ** 2, axis=1))
  assert reference['threshold'] == pytest.approx(out_of_fold.max())


def test_images_like_validation_pass_and_images_unlike_it_do_not():
  values, labels, patients, (mean, spread) = _validation()
  reference = feature_distance.fit_reference(values, labels, patients)
  rng = np.random.default_rng(1)
  alike = mean + spread * rng.normal(size=(1000, 50))
  assert np.mean(feature_distance.distances(reference, alike) > reference['threshold']) < 0.02
  shifted = alike[:100] + 2 * spread  # Two standard deviations off in every feature.
  assert np.all(feature_distance.distances(reference, shifted) > reference['threshold'])
  # A feature that never varied on validation does not make a near copy look foreign.
  values[:, 0] = 1.0
  reference = feature_distance.fit_reference(values, labels, patients)
  nudged = values[:10].copy()
  nudged[:, 0] += 1e-4
  assert np.all(feature_distance.distances(reference, nudged) < reference['threshold'])


def test_no_reference_without_two_patients_of_each_class():
  values, labels, patients, _ = _validation(patients=3)
  assert feature_distance.fit_reference(values, labels, patients) is None  # One class-1 patient.
