"""Cross-validation folds that keep all images of a patient in one fold.

Images of one patient are alike, so a fold that held some of them while the
others trained would score too well. Each class is spread over the folds as
evenly as the patients allow (scikit-learn's StratifiedGroupKFold).
"""

import numpy as np

# Folds of a cross-validation; fewer when there are fewer patients.
FOLDS = 5


def fold_count(targets: np.ndarray, groups: np.ndarray, folds: int = FOLDS) -> int:
  """`folds`, or fewer where a class has fewer patients, so that each fold can hold
  every class; at least 2."""
  patients_per_class = min(len(np.unique(groups[targets == value]))
                           for value in np.unique(targets))
  return max(2, min(folds, patients_per_class))


def patient_folds(targets: np.ndarray, groups: np.ndarray, folds: int = FOLDS,
                  seed: int = 0) -> list[tuple[np.ndarray, np.ndarray]]:
  """(training, held-out) index arrays of each fold: `fold_count` folds, each group
  (patient) whole in one of them, the classes of `targets` spread over them."""
  # Imported here: most of the package does not need scikit-learn.
  from sklearn import model_selection  # pylint: disable=g-import-not-at-top
  targets, groups = np.asarray(targets), np.asarray(groups)
  splitter = model_selection.StratifiedGroupKFold(fold_count(targets, groups, folds),
                                                  shuffle=True, random_state=seed)
  return list(splitter.split(np.zeros((len(targets), 1)), targets, groups))
