import collections
import dataclasses

import numpy as np
import pytest

from hybridcovid.data import splits
from hybridcovid.data.sources import Record

FRACTIONS = {'train': 0.7, 'test': 0.2, 'validation': 0.1}


def _records(seed=0, patients=240):
  """Patients with 1 to 4 images each, over two modalities and two labels."""
  rng = np.random.default_rng(seed)
  records = []
  for p in range(patients):
    modality, label = ('cxr', 'ct')[p % 2], (p // 2) % 2
    for i in range(rng.integers(1, 5)):
      records.append(Record(f'/d/{p}-{i}.png', f'{p}-{i}.png', label, modality,
                            f'src-{modality}', f'patient-{p}', True))
  return records


def test_patient_level_stratified_split_is_close_to_70_20_10():
  records = _records()
  assignment = splits.assign_splits(records, FRACTIONS, seed=0)
  assert set(assignment) == {r.key for r in records}
  by_patient = collections.defaultdict(set)
  for r in records:
    by_patient[r.patient_id].add(assignment[r.key])
  assert all(len(found) == 1 for found in by_patient.values())
  for stratum in {(r.modality, r.label) for r in records}:
    keys = [r.key for r in records if (r.modality, r.label) == stratum]
    assert len(keys) > 100
    counts = collections.Counter(assignment[key] for key in keys)
    for split, fraction in FRACTIONS.items():
      assert abs(counts[split] / len(keys) - fraction) <= 0.02, (stratum, counts)


def test_split_is_deterministic_for_a_seed():
  records = _records()
  first = splits.assign_splits(records, FRACTIONS, seed=3)
  assert splits.assign_splits(list(reversed(records)), FRACTIONS, seed=3) == first
  assert splits.assign_splits(records, FRACTIONS, seed=4) != first


def test_saved_split_is_reused_and_checked(tmp_path):
  records = _records(patients=20)
  assignment = splits.assign_splits(records, FRACTIONS, seed=0)
  path = str(tmp_path / 'split.json')
  splits.save_split(path, assignment, FRACTIONS, seed=0)
  assert splits.load_split(path, records) == assignment
  extra = Record('/d/new.png', 'new.png', 1, 'cxr', 'src-cxr', 'patient-new', True)
  with pytest.raises(splits.SplitError, match='1 images have no split'):
    splits.load_split(path, records + [extra])
  (tmp_path / 'broken.json').write_text('{')
  with pytest.raises(splits.SplitError, match='broken.json: not a readable split file'):
    splits.load_split(str(tmp_path / 'broken.json'), records)


def test_bad_fractions_are_refused():
  with pytest.raises(splits.SplitError, match='Split fractions need'):
    splits.assign_splits(_records(patients=4), {'train': 0.8, 'test': 0.2}, seed=0)


def _two_site_records():
  """`_records` with the CXR patients over two sites and one CT site."""
  return [dataclasses.replace(record, source=f'src-cxr-{int(record.patient_id[8:]) % 4 // 2}')
          if record.modality == 'cxr' else record for record in _records(patients=40)]


def test_holding_out_a_source_tests_all_of_it_and_trains_on_the_rest():
  records = _two_site_records()
  assignment = splits.assign_splits(records, FRACTIONS, seed=0)
  held_out = splits.hold_out_source(records, assignment, 'src-cxr-0')
  for record in records:
    if record.source == 'src-cxr-0':
      assert held_out[record.key] == 'test'
    elif assignment[record.key] == 'test':
      assert record.key not in held_out  # No split: neither trained on nor tested.
    else:
      assert held_out[record.key] == assignment[record.key]
  assert sum(record.source == 'src-cxr-0' for record in records) == sum(
      split == 'test' for split in held_out.values()) > 0
  with pytest.raises(splits.SplitError, match=r"'src-mri' is not a source of the data; its "
                     r"sources are \['src-ct', 'src-cxr-0', 'src-cxr-1'\]"):
    splits.hold_out_source(records, assignment, 'src-mri')
  with pytest.raises(splits.SplitError, match='src-ct is the only ct source'):
    splits.hold_out_source(records, assignment, 'src-ct')


def test_a_held_out_patient_is_kept_out_of_training_in_every_source():
  records = _two_site_records()
  shared = next(record for record in records if record.source == 'src-cxr-0')
  moved = dataclasses.replace(next(record for record in records if record.source == 'src-cxr-1'),
                              patient_id=shared.patient_id)
  records.append(dataclasses.replace(moved, relpath='moved.png'))
  assignment = {record.key: 'train' for record in records}
  held_out = splits.hold_out_source(records, assignment, 'src-cxr-0')
  assert records[-1].key not in held_out
  assert held_out[shared.key] == 'test'
