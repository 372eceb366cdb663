import ml_collections
import numpy as np
import pytest
from sklearn import metrics as sk

from hybridcovid.evaluation import groups

# (modality, source, label, probability): two modalities, three sources, both classes in each.
_ROWS = [('cxr', 'site-a', 1, 0.91), ('cxr', 'site-a', 0, 0.12), ('cxr', 'site-a', 1, 0.45),
         ('cxr', 'site-a', 0, 0.55), ('cxr', 'site-b', 1, 0.81), ('cxr', 'site-b', 0, 0.30),
         ('cxr', 'site-b', 0, 0.62), ('cxr', 'site-b', 1, 0.97), ('ct', 'site-c', 1, 0.70),
         ('ct', 'site-c', 0, 0.40), ('ct', 'site-c', 1, 0.35), ('ct', 'site-c', 0, 0.05)]
PREDICTIONS = [{'key': f'{source}:{index}.png', 'patient_id': f'p{index // 2}',
                'modality': modality, 'source': source, 'label': label,
                'probability': probability}
               for index, (modality, source, label, probability) in enumerate(_ROWS)]


def _sklearn(rows, threshold):
  labels = np.array([row['label'] for row in rows])
  scores = np.array([row['probability'] for row in rows])
  decisions = (scores >= threshold).astype(int)
  return {'accuracy': sk.accuracy_score(labels, decisions),
          'recall': sk.recall_score(labels, decisions),
          'specificity': sk.recall_score(labels, decisions, pos_label=0),
          'precision': sk.precision_score(labels, decisions),
          'npv': sk.precision_score(labels, decisions, pos_label=0),
          'f1': sk.f1_score(labels, decisions),
          'auc': sk.roc_auc_score(labels, scores)}


def test_groups_are_overall_then_modalities_then_sources_in_sorted_order():
  assert list(groups.group_masks(PREDICTIONS)) == [
      'overall', 'ct', 'cxr', 'source:site-a', 'source:site-b', 'source:site-c']
  assert list(groups.group_masks(PREDICTIONS, by_source=False)) == ['overall', 'ct', 'cxr']
  masks = groups.group_masks(PREDICTIONS)
  assert masks['overall'].all() and masks['ct'].sum() == 4 and masks['source:site-b'].sum() == 4


@pytest.mark.parametrize('threshold', [0.5, 0.4])
def test_each_group_matches_scikit_learn_on_its_rows(threshold):
  result = groups.group_metrics(PREDICTIONS, threshold)
  members = {'overall': lambda row: True,
             'cxr': lambda row: row['modality'] == 'cxr',
             'ct': lambda row: row['modality'] == 'ct',
             **{f'source:{source}': (lambda row, source=source: row['source'] == source)
                for source in ('site-a', 'site-b', 'site-c')}}
  assert set(result) == set(members)
  for group, member in members.items():
    rows = [row for row in PREDICTIONS if member(row)]
    expected = _sklearn(rows, threshold)
    for name, value in expected.items():
      assert result[group][name] == pytest.approx(value, abs=1e-12), (group, name)
    assert sum(result[group]['counts'].values()) == len(rows)
    assert result[group]['threshold'] == threshold


def test_intervals_come_with_the_eval_config():
  eval_config = ml_collections.ConfigDict({'bootstrap_resamples': 20, 'bootstrap_seed': 0,
                                           'confidence_level': 0.95})
  result = groups.group_metrics(PREDICTIONS, 0.5, eval_config)
  assert all('intervals' in values and values['too_few_images'] for values in result.values())
  assert 'intervals' not in groups.group_metrics(PREDICTIONS)['overall']
