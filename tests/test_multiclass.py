import ml_collections
import numpy as np
import pytest
from sklearn import metrics as sk

from hybridcovid import classes
from hybridcovid.evaluation import bootstrap, multiclass

NAMES = classes.NAMES


def _random_case(seed: int, images: int = 90):
  rng = np.random.default_rng(seed)
  true = rng.integers(0, 3, images)
  logits = rng.normal(size=(images, 3)) + 1.5 * np.eye(3)[true]
  probabilities = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
  return true, probabilities


@pytest.mark.parametrize('seed', [0, 1, 2])
def test_every_metric_matches_scikit_learn(seed):
  true, probabilities = _random_case(seed)
  predicted = probabilities.argmax(axis=1)
  result = multiclass.class_metrics(true, probabilities, NAMES)
  matrix = sk.confusion_matrix(true, predicted, labels=[0, 1, 2])
  assert result['confusion_matrix'] == matrix.tolist()
  assert result['accuracy'] == pytest.approx(sk.accuracy_score(true, predicted))
  assert result['macro_auc'] == pytest.approx(
      sk.roc_auc_score(true, probabilities, multi_class='ovr', average='macro'))
  recall = sk.recall_score(true, predicted, labels=[0, 1, 2], average=None)
  precision = sk.precision_score(true, predicted, labels=[0, 1, 2], average=None)
  for label, name in enumerate(NAMES):
    values = result['classes'][name]
    negatives = true != label
    assert values['images'] == np.sum(true == label)
    assert values['recall'] == pytest.approx(recall[label])
    assert values['precision'] == pytest.approx(precision[label])
    assert values['specificity'] == pytest.approx(
        sk.recall_score(negatives, predicted != label))
    assert values['auc'] == pytest.approx(
        sk.roc_auc_score(true == label, probabilities[:, label]))


def test_a_hand_computed_case():
  # Normal, COVID, pneumonia: two images each; one pneumonia image is called COVID.
  true = [0, 0, 1, 1, 2, 2]
  probabilities = [[.8, .1, .1], [.6, .3, .1], [.1, .8, .1], [.2, .7, .1], [.1, .2, .7],
                   [.1, .5, .4]]
  result = multiclass.class_metrics(true, probabilities, NAMES)
  assert result['confusion_matrix'] == [[2, 0, 0], [0, 2, 0], [0, 1, 1]]
  assert result['accuracy'] == pytest.approx(5 / 6)
  covid = result['classes']['covid']
  assert covid['recall'] == 1 and covid['specificity'] == pytest.approx(3 / 4)
  assert covid['precision'] == pytest.approx(2 / 3)
  # COVID probabilities .8 and .7 against .1, .3, .2 and .5: every pair ranked right.
  assert covid['auc'] == 1
  pneumonia = result['classes']['pneumonia']
  assert pneumonia['recall'] == 0.5 and pneumonia['specificity'] == 1
  assert pneumonia['precision'] == 1
  # Pneumonia .7 and .4 against .1, .1, .1, .1: ranked right; normal .8 .6 against the rest.
  assert pneumonia['auc'] == 1 and result['classes']['normal']['auc'] == 1
  assert result['macro_auc'] == 1


def test_intervals_resample_patients_and_hold_the_point_estimate():
  true, probabilities = _random_case(3, images=120)
  patients = np.arange(120) // 3
  config = ml_collections.ConfigDict({'bootstrap_resamples': 300, 'bootstrap_seed': 0,
                                      'confidence_level': 0.95})
  result = multiclass.class_metrics(true, probabilities, NAMES, patients, config)
  low, high = result['intervals']['macro_auc']
  assert low < result['macro_auc'] < high and high - low < 0.2
  for name in NAMES:
    for metric in multiclass.CLASS_METRICS:
      low, high = result['classes'][name]['intervals'][metric]
      assert low <= result['classes'][name][metric] <= high
  assert not result['too_few_images']
  # The first resample's accuracy is that of the images its patients bring, counted as
  # often as they were drawn.
  weights = bootstrap.patient_weights(patients, 1, 0)[0]
  correct = probabilities.argmax(axis=1) == true
  resampled = multiclass._weighted(true, probabilities, weights[None])
  assert resampled['accuracy'][0] == pytest.approx(np.sum(weights * correct) / weights.sum())


def test_groups_read_rows_by_class_name():
  true, probabilities = _random_case(4, images=40)
  rows = [{'class': NAMES[label], 'patient_id': str(index), 'modality': 'cxr',
           'source': f'site-{index % 2}',
           **{f'probability_{name}': p for name, p in zip(NAMES, row)}}
          for index, (label, row) in enumerate(zip(true, probabilities))]
  by_group = multiclass.group_class_metrics(rows, NAMES)
  assert list(by_group) == ['overall', 'cxr', 'source:site-0', 'source:site-1']
  assert by_group['overall'] == multiclass.class_metrics(true, probabilities, NAMES)
  assert by_group['source:site-1']['images'] == 20
