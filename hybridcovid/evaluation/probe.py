"""Shortcut probe: can the data source be read off the model's features?

A logistic regression on the frozen pooled features (the head's input)
predicts each image's source, modality and disease, cross-validated with all
images of a patient in one fold. Each accuracy is set against chance, always
guessing the commonest value, as the share of the way from chance to perfect
that it goes: (accuracy - chance) / (1 - chance). For the source, chance
knows the modality (the commonest source of each image's modality), since
the modality itself is no shortcut; where every source holds one modality,
the source is not probed apart from the modality. If the source scores at
least as high as the disease on that scale, the features carry where an image
came from at least as clearly as what it shows, and a model can learn the
hospital instead of the disease wherever sources differ in their share of
COVID images.
"""

from typing import Mapping

import numpy as np

from hybridcovid.evaluation import folds as folds_lib

TARGETS = ('disease', 'source', 'modality')


def _chance(values: np.ndarray, given: np.ndarray) -> float:
  """Accuracy of guessing, for each value of `given`, the commonest of `values` there."""
  return float(sum(np.unique(values[given == value], return_counts=True)[1].max()
                   for value in np.unique(given)) / len(values))


def probe_classifier():
  """A standardised, L2-regularised logistic regression (scikit-learn's defaults), fitted
  in the principal axes of the training images (all of them, no truncation).

  With fewer images than features (a few hundred against 3,328) the penalised
  optimum lies in the span of the training images: in those coordinates it
  has the same weights' norm and the same decisions, and the solver finds it
  in a fraction of the time.
  """
  # Imported here: the rest of the package does not need scikit-learn.
  from sklearn import decomposition, linear_model, pipeline, preprocessing  # pylint: disable=g-import-not-at-top
  return pipeline.make_pipeline(preprocessing.StandardScaler(), decomposition.PCA(),
                                linear_model.LogisticRegression(max_iter=2000))


def cross_validated_accuracy(features: np.ndarray, targets: np.ndarray, groups: np.ndarray,
                             folds: int = folds_lib.FOLDS, seed: int = 0) -> float:
  """Accuracy of `probe_classifier` predicting `targets` from `features`, over
  folds that keep each group (patient) whole."""
  from sklearn import model_selection  # pylint: disable=g-import-not-at-top
  predicted = model_selection.cross_val_predict(
      probe_classifier(), features, targets,
      cv=folds_lib.patient_folds(targets, groups, folds, seed))
  return float(np.mean(predicted == targets))


def shortcut_probe(features: np.ndarray, attributes: Mapping[str, np.ndarray],
                   patients: np.ndarray, seed: int = 0) -> dict:
  """Probe accuracy beside chance for each attribute with at least two values.

  Args:
    features: [N, D] pooled features.
    attributes: [N] values of each of 'disease', 'source' and 'modality'.
    patients: [N] patient ids; a patient's images share a fold.
    seed: the fold shuffle.

  Returns:
    {attribute: {'accuracy', 'chance' (share of the commonest value; for the
    source, of the commonest source of each modality),
    'above_chance' ((accuracy - chance) / (1 - chance)), 'classes', 'folds'}}
    for the attributes that vary; 'not_probed': those of them with a value
    seen in one patient only, if any; 'source_is_modality': True where every
    source holds one modality; 'images'; 'single_class_sources':
    {source: its one disease value} for sources with images of one class only;
    and 'warning': a plain-words warning, or None.
  """
  patients = np.asarray(patients)
  disease, source = np.asarray(attributes['disease']), np.asarray(attributes['source'])
  modality = np.asarray(attributes['modality'])
  result = {'images': len(features), 'single_class_sources': {
      str(name): disease[source == name][0].item() for name in np.unique(source)
      if len(np.unique(disease[source == name])) == 1}}
  for name in TARGETS:
    values = np.asarray(attributes[name])
    classes = np.unique(values)
    if len(classes) < 2:
      continue
    if name == 'source' and all(len(np.unique(source[modality == value])) < 2
                                for value in np.unique(modality)):
      result['source_is_modality'] = True
      continue
    if min(len(np.unique(patients[values == value])) for value in classes) < 2:
      # Its folds could not all train on every value.
      result.setdefault('not_probed', []).append(name)
      continue
    accuracy = cross_validated_accuracy(features, values, patients, seed=seed)
    chance = _chance(values, modality if name == 'source' else np.zeros(len(values)))
    result[name] = {'accuracy': accuracy, 'chance': chance,
                    'above_chance': (accuracy - chance) / (1.0 - chance),
                    'classes': len(classes), 'folds': folds_lib.fold_count(values, patients)}
  result['warning'] = shortcut_warning(result)
  return result


def shortcut_warning(result: Mapping[str, dict]) -> str | None:
  """The warning when the source is at least as far above chance as the disease."""
  if 'source' not in result or 'disease' not in result:
    return None
  source, disease = result['source'], result['disease']
  if source['above_chance'] < disease['above_chance']:
    return None
  return (f"The data source is at least as easy to read from the model's features as the "
          f"disease: the probe goes {100 * source['above_chance']:.0f}% of the way from "
          f"chance to perfect for the source ({100 * source['accuracy']:.1f}% against "
          f"{100 * source['chance']:.1f}% chance), {100 * disease['above_chance']:.0f}% for "
          f"the disease ({100 * disease['accuracy']:.1f}% against "
          f"{100 * disease['chance']:.1f}%). Wherever sources differ in their share of COVID "
          'images, a model can score well by recognising the hospital or scanner instead of '
          'the disease, and then fail on images from elsewhere. Compare the per-source '
          'results, and test on a source the model never saw '
          '(--config.eval.leave_one_source_out=True) before trusting these numbers.')
