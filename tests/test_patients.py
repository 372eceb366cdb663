import numpy as np
import pytest

from hybridcovid import errors
from hybridcovid.evaluation import groups, patients


def _image(patient, label, probability, modality='cxr', source='site-a'):
  return {'key': f'{patient}:{probability}', 'patient_id': patient, 'modality': modality,
          'source': source, 'label': label, 'probability': probability}


# Four patients, eight images. Per image at 0.5: 1 TP, 3 FN, 2 TN, 2 FP (accuracy 3/8).
IMAGES = [_image('a', 1, 0.8), _image('a', 1, 0.3),
          _image('b', 1, 0.4), _image('b', 1, 0.45),
          _image('c', 0, 0.6), _image('c', 0, 0.2), _image('c', 0, 0.1),
          _image('d', 0, 0.7)]


def _logistic_of_mean_logit(*probabilities):
  logits = [np.log(p / (1 - p)) for p in probabilities]
  return 1 / (1 + np.exp(-sum(logits) / len(logits)))


def test_each_aggregation_gives_the_hand_computed_probability():
  assert patients.aggregate([0.8, 0.3], 'mean_logit') == pytest.approx(
      _logistic_of_mean_logit(0.8, 0.3))
  # logit(0.8) = 1.386294, logit(0.3) = -0.847298: their mean 0.269498 gives 0.566970.
  assert patients.aggregate([0.8, 0.3], 'mean_logit') == pytest.approx(0.566970, abs=1e-6)
  assert patients.aggregate([0.8, 0.3], 'max') == 0.8
  assert patients.aggregate([0.8, 0.3], 'mean_probability') == pytest.approx(0.55)
  # Mean logits of probabilities p and 1 - p cancel.
  assert patients.aggregate([0.9, 0.1], 'mean_logit') == pytest.approx(0.5)


def test_an_unknown_aggregation_is_refused_with_the_choices():
  with pytest.raises(errors.UserError, match="choose one of mean_logit, max, mean_probability"):
    patients.check_aggregation('median')
  with pytest.raises(errors.UserError, match='patient_aggregation'):
    patients.aggregate([0.5], 'median')


def test_patient_metrics_match_the_hand_computed_confusion_matrix():
  rows = patients.patient_rows(IMAGES, 'mean_logit')
  assert [(row['patient_id'], row['images'], row['label']) for row in rows] == [
      ('a', 2, 1), ('b', 2, 1), ('c', 3, 0), ('d', 1, 0)]
  # Mean logits: a 0.269498 (TP), b -0.303068 (FN), c -1.059351 (TN); d 0.7 (FP).
  np.testing.assert_allclose([row['probability'] for row in rows],
                             [0.566970, 0.424808, 0.257433, 0.7], atol=1e-6)
  overall = groups.group_metrics(rows)['overall']
  assert overall['counts'] == {'tp': 1, 'fn': 1, 'tn': 1, 'fp': 1}
  assert (overall['accuracy'], overall['recall'], overall['specificity']) == (0.5, 0.5, 0.5)
  assert overall['auc'] == 0.5  # a > c, b > c; a < d, b < d.
  images = groups.group_metrics(IMAGES)['overall']
  assert images['counts'] == {'tp': 1, 'fn': 3, 'tn': 2, 'fp': 2}
  # By the largest probability c becomes a false positive: 1 of 4 right.
  by_max = groups.group_metrics(patients.patient_rows(IMAGES, 'max'))['overall']
  assert by_max['counts'] == {'tp': 1, 'fn': 1, 'tn': 0, 'fp': 2}


def test_a_patient_is_one_study_per_modality_and_covid_if_any_image_is():
  rows = patients.patient_rows(
      [_image('p', 0, 0.2), _image('p', 1, 0.9, source='site-b'),
       _image('p', 0, 0.4, modality='ct', source='site-c')], 'mean_probability')
  assert rows == [
      {'patient_id': 'p', 'modality': 'cxr', 'source': 'site-a+site-b', 'label': 1,
       'images': 2, 'mixed_labels': True, 'probability': pytest.approx(0.55)},
      {'patient_id': 'p', 'modality': 'ct', 'source': 'site-c', 'label': 0, 'images': 1,
       'mixed_labels': False, 'probability': 0.4}]


def test_the_operating_point_is_fitted_on_the_patients():
  point = patients.operating_point(IMAGES, 'max', target_sensitivity=0.5)
  # COVID patients score 0.8 and 0.45 by their largest image: 0.8 flags half of them.
  assert point['threshold'] == 0.8
  assert point['validation_sensitivity'] == 0.5
  assert point['aggregation'] == 'max'
  assert 'patients it was not fitted on' in point['scaling']['reason']
