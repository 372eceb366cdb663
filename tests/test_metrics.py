import warnings

import numpy as np
import pytest
from sklearn import metrics as sk
from sklearn.exceptions import UndefinedMetricWarning

from hybridcovid.evaluation import metrics


def _reference(labels, scores, threshold):
  predictions = (scores >= threshold).astype(int)
  nan = np.nan
  with warnings.catch_warnings():
    warnings.simplefilter('ignore', UndefinedMetricWarning)
    try:
      auc = sk.roc_auc_score(labels, scores)  # NaN or an error for one class.
    except ValueError:
      auc = nan
  return {
      'accuracy': sk.accuracy_score(labels, predictions),
      'recall': sk.recall_score(labels, predictions, zero_division=nan),
      'specificity': sk.recall_score(1 - labels, 1 - predictions, zero_division=nan),
      'precision': sk.precision_score(labels, predictions, zero_division=nan),
      'npv': sk.precision_score(1 - labels, 1 - predictions, zero_division=nan),
      'f1': sk.f1_score(labels, predictions, zero_division=nan),
      'auc': auc,
  }


def _cases():
  rng = np.random.default_rng(0)
  for size in (1, 2, 7, 50, 400):
    labels = rng.integers(0, 2, size)
    yield labels, rng.random(size)  # Unrelated scores.
    yield labels, np.clip(labels * 0.4 + rng.random(size) * 0.6, 0, 1)  # Informative.
    yield labels, rng.integers(0, 4, size) / 4  # Many ties, some exactly at 0.5.
  yield np.zeros(10, int), rng.random(10)  # No COVID cases.
  yield np.ones(10, int), rng.random(10)  # No normal cases.
  yield rng.integers(0, 2, 30), np.ones(30)  # Everything predicted COVID.
  yield rng.integers(0, 2, 30), np.zeros(30)  # Everything predicted normal.


@pytest.mark.parametrize('case', range(len(list(_cases()))))
@pytest.mark.parametrize('threshold', [0.5, 0.3])
def test_every_metric_matches_scikit_learn(case, threshold):
  labels, scores = list(_cases())[case]
  ours = metrics.binary_metrics(labels, scores, threshold)
  for name, expected in _reference(labels, scores, threshold).items():
    np.testing.assert_allclose(ours[name], expected, rtol=1e-12, err_msg=name)
  counts = ours['counts']
  assert sum(counts.values()) == len(labels)
  assert sk.confusion_matrix(labels, (scores >= threshold).astype(int),
                             labels=[0, 1]).ravel().tolist() == [
      counts['tn'], counts['fp'], counts['fn'], counts['tp']]


_TWO_CLASS_CASES = [(labels, scores) for labels, scores in _cases()
                    if len(set(labels.tolist())) == 2]


@pytest.mark.parametrize('case', range(len(_TWO_CLASS_CASES)))
def test_roc_curve_matches_scikit_learn(case):
  labels, scores = _TWO_CLASS_CASES[case]
  fpr, tpr, thresholds = metrics.roc_curve(labels, scores)
  expected_fpr, expected_tpr, expected_thresholds = sk.roc_curve(
      labels, scores, drop_intermediate=False)
  np.testing.assert_allclose(fpr, expected_fpr, rtol=1e-12)
  np.testing.assert_allclose(tpr, expected_tpr, rtol=1e-12)
  np.testing.assert_allclose(thresholds[1:], expected_thresholds[1:], rtol=1e-12)
  np.testing.assert_allclose(np.trapezoid(tpr, fpr), metrics.roc_auc(labels, scores),
                             rtol=1e-12)
