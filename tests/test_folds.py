import numpy as np

from hybridcovid.evaluation import folds


def test_folds_are_fewer_where_a_class_has_few_patients():
  targets = np.array([0] * 20 + [1] * 6)
  patients = np.array(list(range(20)) + [20, 20, 21, 21, 22, 22])
  assert folds.fold_count(targets, patients) == 3
  assert folds.fold_count(np.array([0, 0, 1]), np.array([0, 1, 2])) == 2
  assert folds.fold_count(np.repeat([0, 1], 50), np.arange(100)) == 5


def test_each_patient_is_whole_in_one_fold_and_each_fold_holds_both_classes():
  rng = np.random.default_rng(0)
  patients = np.repeat(np.arange(40), rng.integers(1, 4, 40))
  targets = (patients % 4 == 0).astype(int)  # A quarter of the patients are positive.
  splits = folds.patient_folds(targets, patients)
  assert len(splits) == 5
  held_out = np.concatenate([test for _, test in splits])
  assert sorted(held_out.tolist()) == list(range(len(patients)))  # Each image once.
  for train, test in splits:
    assert not set(patients[train]) & set(patients[test])
    assert set(targets[test]) == {0, 1}
  assert all(np.array_equal(a[1], b[1]) for a, b in zip(splits, folds.patient_folds(
      targets, patients)))  # The same seed, the same folds.
