import numpy as np
import pytest
from sklearn import linear_model, pipeline, preprocessing

from hybridcovid.evaluation import probe


def _case(source_strength, disease_strength, seed=0):
  """200 patients of 2 images; features carry source and disease with these strengths."""
  rng = np.random.default_rng(seed)
  patients = np.repeat(np.arange(200), 2)
  disease = np.repeat(rng.integers(0, 2, 200), 2)
  source = np.repeat(rng.choice(['a', 'b', 'c'], 200), 2)
  features = rng.normal(size=(400, 20))
  features[:, 0] += disease_strength * disease
  features[:, 1:4] += source_strength * (source[:, None] == np.array(['a', 'b', 'c']))
  modality = np.full(400, 'cxr')
  return features, {'disease': disease, 'source': source, 'modality': modality}, patients


def test_a_source_clearer_than_the_disease_gets_the_warning():
  features, attributes, patients = _case(source_strength=6.0, disease_strength=1.0)
  result = probe.shortcut_probe(features, attributes, patients)
  assert 'modality' not in result  # One value: nothing to predict.
  assert result['source']['classes'] == 3
  assert result['images'] == 400 and result['single_class_sources'] == {}
  assert result['source']['accuracy'] > 0.95
  assert 0.6 < result['disease']['accuracy'] < 0.8
  covid_share = np.mean(attributes['disease'])
  assert result['disease']['chance'] == max(covid_share, 1 - covid_share) != 0.5
  source_shares = [np.mean(attributes['source'] == name) for name in 'abc']
  assert result['source']['chance'] == max(source_shares)
  for name in ('source', 'disease'):
    values = result[name]
    assert values['above_chance'] == pytest.approx(
        (values['accuracy'] - values['chance']) / (1 - values['chance']))
  assert 'source is at least as easy' in result['warning']
  assert f"{100 * result['source']['above_chance']:.0f}% of the way" in result['warning']
  assert '--config.eval.leave_one_source_out=True' in result['warning']


def test_a_disease_clearer_than_the_source_gets_none():
  features, attributes, patients = _case(source_strength=0.0, disease_strength=6.0)
  result = probe.shortcut_probe(features, attributes, patients)
  assert result['disease']['accuracy'] > 0.95
  # Features without source information predict it at about chance.
  assert abs(result['source']['accuracy'] - result['source']['chance']) < 0.1
  assert result['warning'] is None


def test_folds_keep_patients_whole():
  # Each patient's images share a feature vector (wide enough to memorise) and a
  # random label: only folds that split a patient's images can predict it.
  rng = np.random.default_rng(0)
  patients = np.repeat(np.arange(100), 2)
  features = np.repeat(rng.normal(size=(100, 500)), 2, axis=0)
  labels = np.repeat(rng.integers(0, 2, 100), 2)
  grouped = probe.cross_validated_accuracy(features, labels, patients)
  leaky = probe.cross_validated_accuracy(features, labels, np.arange(200))
  assert grouped < 0.65
  assert leaky > 0.9


def test_sources_of_one_class_are_named():
  features, attributes, patients = _case(source_strength=1.0, disease_strength=1.0)
  attributes['disease'][attributes['source'] == 'b'] = 1
  result = probe.shortcut_probe(features, attributes, patients)
  assert result['single_class_sources'] == {'b': 1}


def test_the_warning_weighs_accuracy_against_chance():
  # 70% against 25% chance is as far above chance as 80% against 50%.
  result = {'source': {'accuracy': 0.7, 'chance': 0.25, 'above_chance': 0.6},
            'disease': {'accuracy': 0.8, 'chance': 0.5, 'above_chance': 0.6}}
  assert probe.shortcut_warning(result) is not None
  result['disease'] = {'accuracy': 0.85, 'chance': 0.5, 'above_chance': 0.7}
  assert probe.shortcut_warning(result) is None


def test_a_value_of_one_patient_is_not_probed():
  features, attributes, patients = _case(source_strength=1.0, disease_strength=1.0)
  attributes['source'][patients == 7] = 'd'  # Patient 7's two images alone.
  result = probe.shortcut_probe(features, attributes, patients)
  assert result['not_probed'] == ['source'] and 'source' not in result
  assert 'disease' in result and result['warning'] is None


def test_source_chance_knows_the_modality():
  features, attributes, patients = _case(source_strength=1.0, disease_strength=1.0)
  # CXR from sources a and b, CT from c alone: knowing the modality, chance guesses
  # the commoner of a and b for CXR, and c for CT.
  attributes['modality'] = np.where(attributes['source'] == 'c', 'ct', 'cxr')
  result = probe.shortcut_probe(features, attributes, patients)
  cxr = attributes['modality'] == 'cxr'
  commonest = max(np.sum(attributes['source'][cxr] == name) for name in 'ab')
  assert result['source']['chance'] == (commonest + np.sum(~cxr)) / 400
  assert result['source']['chance'] > max(np.mean(attributes['source'] == name) for name in 'abc')


def test_a_source_per_modality_is_not_probed_apart_from_the_modality():
  features, attributes, patients = _case(source_strength=6.0, disease_strength=1.0)
  attributes['source'] = np.where(attributes['source'] == 'a', 'kaggle-ct', 'kaggle-cxr')
  attributes['modality'] = np.where(attributes['source'] == 'kaggle-ct', 'ct', 'cxr')
  result = probe.shortcut_probe(features, attributes, patients)
  assert result['source_is_modality'] and 'source' not in result
  assert result['modality']['accuracy'] > 0.9
  assert result['warning'] is None


def test_the_rotation_to_principal_axes_finds_the_same_classifier():
  # More features than images, as in the report (3,328 features, a few hundred images).
  rng = np.random.default_rng(0)
  features = rng.normal(size=(120, 400))
  targets = (features[:, :5].sum(axis=1) + rng.normal(size=120) > 0).astype(int)
  unseen = rng.normal(size=(60, 400))
  rotated = probe.probe_classifier().set_params(logisticregression__tol=1e-10)
  rotated.fit(features, targets)
  # The same regression on the standardised features themselves, as scikit-learn fits it.
  plain = pipeline.make_pipeline(preprocessing.StandardScaler(),
                                 linear_model.LogisticRegression(max_iter=2000, tol=1e-10))
  plain.fit(features, targets)
  np.testing.assert_allclose(rotated.decision_function(unseen),
                             plain.decision_function(unseen), rtol=1e-5, atol=1e-5)
  weights = rotated[-1].coef_ @ rotated[1].components_
  np.testing.assert_allclose(weights, plain[-1].coef_, atol=1e-6)
  assert abs(plain.decision_function(unseen)).max() > 1  # Not a degenerate, all-zero fit.
