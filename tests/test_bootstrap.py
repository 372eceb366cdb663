import numpy as np
import pytest

from hybridcovid.evaluation import bootstrap, metrics


def _case(images=120, seed=0):
  rng = np.random.default_rng(seed)
  labels = rng.integers(0, 2, images)
  # Rounded scores, so that ties occur.
  scores = np.round(np.clip(0.3 * labels + rng.uniform(0, 0.7, images), 0, 1), 2)
  patients = rng.integers(0, images // 3, images)
  return labels, scores, patients


def test_unit_weights_give_the_plain_metrics():
  labels, scores, _ = _case()
  values = bootstrap.weighted_metrics(labels, scores, np.ones((1, len(labels))), 0.4)
  expected = metrics.binary_metrics(labels, scores, 0.4)
  for name in metrics.METRIC_NAMES:
    assert values[name][0] == pytest.approx(expected[name], abs=1e-12), name


def test_each_resample_equals_the_metrics_of_its_images_repeated():
  labels, scores, patients = _case()
  weights = bootstrap.patient_weights(patients, resamples=20, seed=3)
  values = bootstrap.weighted_metrics(labels, scores, weights)
  for row in range(20):
    # The slow reference: the resample as a list of images, each as often as drawn.
    repeated = np.repeat(np.arange(len(labels)), weights[row].astype(int))
    expected = metrics.binary_metrics(labels[repeated], scores[repeated])
    for name in metrics.METRIC_NAMES:
      assert values[name][row] == pytest.approx(expected[name], abs=1e-12), (row, name)


def test_weights_draw_whole_patients_as_many_times_as_there_are_patients():
  patients = np.array(['a', 'a', 'b', 'c', 'c', 'c'])
  weights = bootstrap.patient_weights(patients, resamples=500, seed=0)
  assert np.all(weights[:, 0] == weights[:, 1])
  assert np.all(weights[:, 3] == weights[:, 5])
  assert np.all(weights[:, [0, 2, 3]].sum(axis=1) == 3)
  # Each patient is drawn once per resample on average.
  assert weights[:, [0, 2, 3]].mean() == pytest.approx(1.0, abs=0.1)


def test_intervals_cover_the_true_accuracy_at_close_to_the_nominal_rate():
  rng = np.random.default_rng(1)
  true_accuracy, trials, covered = 0.85, 300, 0
  for trial in range(trials):
    labels = rng.integers(0, 2, 300)
    correct = rng.random(300) < true_accuracy
    scores = np.where(correct, labels, 1 - labels).astype(float)
    low, high = bootstrap.confidence_intervals(labels, scores, np.arange(300),
                                               resamples=400, seed=trial)['accuracy']
    covered += low <= true_accuracy <= high
  assert 0.91 <= covered / trials <= 0.98


def test_resampling_patients_widens_the_interval_when_their_images_agree():
  rng = np.random.default_rng(2)
  patients = np.repeat(np.arange(100), 5)
  labels = np.repeat(rng.integers(0, 2, 100), 5)
  # Every image of a patient is right or wrong together.
  correct = np.repeat(rng.random(100) < 0.8, 5)
  scores = np.where(correct, labels, 1 - labels).astype(float)

  def width(groups):
    low, high = bootstrap.confidence_intervals(labels, scores, groups)['accuracy']
    return high - low

  # Five perfectly correlated images carry the information of one: about sqrt(5) wider.
  assert width(patients) / width(np.arange(500)) == pytest.approx(np.sqrt(5), rel=0.25)


def test_a_metric_undefined_in_every_resample_has_no_interval():
  intervals = bootstrap.confidence_intervals(np.zeros(10), np.full(10, 0.2), np.arange(10))
  assert np.isnan(intervals['recall']).all()
  assert intervals['specificity'] == (1.0, 1.0)
