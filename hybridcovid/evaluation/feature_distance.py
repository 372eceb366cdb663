"""How far an image's features lie from those of the images a model was validated on.

A model scores any image, with no sign that the score means nothing for an
image unlike its training data (a real radiograph given to a model trained on
synthetic ones, a CT slice given to a CXR model, a photograph). Prediction
warns about such images. The reference is the validation images' pooled
features (the head's input): the mean and spread of each feature, each
spread shrunk toward their average (`SHRINKAGE_IMAGES`). An image's
distance is the root mean square of its features' z-scores against it. The
threshold is the largest distance of a validation image from a reference
fitted without its fold of patients (`folds.patient_folds`), so that an image
beyond it lies farther from the validation images than any of them lies from
the others: about one in as many images as validation holds, if it is like
them.
"""

import numpy as np

from hybridcovid.evaluation import folds

# Each feature's variance is shrunk toward the mean variance of all features as
# if this many more images had shown it: with few validation images a
# per-feature variance is too rough, and a feature that hardly varied would
# make a tiny change in it look foreign.
SHRINKAGE_IMAGES = 10


def _moments(features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  """Per-feature mean and spread (shrunk standard deviation) of [N, D] `features`."""
  features = np.asarray(features, np.float64)
  variance = features.var(axis=0)
  pooled = max(float(variance.mean()), np.finfo(np.float32).tiny)
  count = len(features)
  shrunk = (count * variance + SHRINKAGE_IMAGES * pooled) / (count + SHRINKAGE_IMAGES)
  return features.mean(axis=0), np.sqrt(shrunk)


def _distances(mean: np.ndarray, scale: np.ndarray, features: np.ndarray) -> np.ndarray:
  z = (np.asarray(features, np.float64) - mean) / scale
  return np.sqrt(np.mean(z * z, axis=1))


def fit_reference(features: np.ndarray, labels: np.ndarray, patients: np.ndarray
                  ) -> dict | None:
  """The reference and threshold from validation `features` [N, D], as JSON-ready lists.

  `labels` are the images' classes, two or more. None when the images cannot be
  split into folds of patients that hold every class (fewer than two classes, or
  fewer than two patients of one).
  """
  labels, patients = np.asarray(labels), np.asarray(patients).astype(str)
  values = np.unique(labels)
  if len(values) < 2 or min(len(np.unique(patients[labels == value])) for value in values) < 2:
    return None
  out_of_fold = np.empty(len(features))
  for fitted_on, held_out in folds.patient_folds(labels, patients):
    mean, scale = _moments(features[fitted_on])
    out_of_fold[held_out] = _distances(mean, scale, features[held_out])
  mean, scale = _moments(features)
  return {'mean': mean.tolist(), 'scale': scale.tolist(),
          'threshold': float(out_of_fold.max()), 'images': len(features)}


def distances(reference: dict, features: np.ndarray) -> np.ndarray:
  """Each image's distance from `reference` (`fit_reference`), for [N, D] `features`."""
  return _distances(np.asarray(reference['mean']), np.asarray(reference['scale']), features)
