"""Patient-level train/test/validation splits, stratified by label and modality.

All images of a patient land in one split. Within each (modality, label)
stratum, patients are shuffled with the seed and each goes to the split
furthest below its target share of images, so every stratum comes close to
the requested fractions (the paper's 70/20/10) however many images a patient
has.
"""

import collections
import json
import os
from typing import Iterable, Mapping

from absl import logging
import numpy as np

from hybridcovid import errors
from hybridcovid.data.sources import Record

SPLITS = ('train', 'test', 'validation')


class SplitError(errors.UserError):
  """A split file that does not fit the data; the message says what to do."""


def _patient_stratum(records: list[Record]) -> tuple[str, int]:
  """A patient's (modality, label): that of the majority of their images."""
  counts = collections.Counter((r.modality, r.label) for r in records)
  return max(sorted(counts), key=lambda stratum: counts[stratum])


def assign_splits(records: Iterable[Record], fractions: Mapping[str, float],
                  seed: int) -> dict[str, str]:
  """Returns {record key: split name}, deterministic for a seed."""
  if (sorted(fractions) != sorted(SPLITS) or any(f < 0 for f in fractions.values())
      or sum(fractions.values()) <= 0):
    raise SplitError(f'Split fractions need {SPLITS} with non-negative values '
                     f'and a positive sum; got {dict(fractions)}.')
  total = sum(fractions.values())
  shares = np.array([fractions[name] / total for name in SPLITS])
  by_patient = collections.defaultdict(list)
  for record in records:
    by_patient[record.patient_id].append(record)
  strata = collections.defaultdict(list)
  for patient in sorted(by_patient):
    strata[_patient_stratum(by_patient[patient])].append(patient)
  rng = np.random.default_rng(seed)
  assignment = {}
  for stratum in sorted(strata):
    patients = strata[stratum]
    order = rng.permutation(len(patients))
    counts = np.zeros(len(SPLITS))
    for index in order:
      images = by_patient[patients[index]]
      deficit = shares * (counts.sum() + len(images)) - counts
      split = int(np.argmax(deficit))
      counts[split] += len(images)
      for record in images:
        assignment[record.key] = SPLITS[split]
  return assignment


def save_split(path: str, assignment: Mapping[str, str], fractions: Mapping[str, float],
               seed: int) -> None:
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  with open(path, 'w') as f:
    json.dump({'seed': seed, 'fractions': dict(fractions),
               'assignment': dict(sorted(assignment.items()))}, f, indent=1)


def load_split(path: str, records: Iterable[Record],
               fractions: Mapping[str, float] | None = None,
               seed: int | None = None) -> dict[str, str]:
  """Reads a split file and checks it assigns every record to a known split.

  A file made with other fractions or another seed than given is used as it
  is, with a warning: the split of a run never changes under it.
  """
  try:
    with open(path) as f:
      saved = json.load(f)
    assignment = saved['assignment']
  except (OSError, ValueError, KeyError, TypeError) as error:
    raise SplitError(f'{path}: not a readable split file ({error}). Remove it to '
                     'split again, or point --config.data.split_file at a '
                     'file with {"assignment": {key: split}}.') from error
  keys = [record.key for record in records]
  missing = [key for key in keys if key not in assignment]
  unknown = sorted({split for split in assignment.values() if split not in SPLITS})
  if missing or unknown:
    raise SplitError(
        f'{path} does not fit the data: {len(missing)} images have no split '
        f'(first: {missing[:3]}), unknown split names {unknown}. The data '
        'changed since the split was made: use a new work directory, or '
        'delete the split file to split again.')
  made_with = (saved.get('fractions'), saved.get('seed'))
  if fractions is not None and made_with != (dict(fractions), seed):
    logging.warning('%s was made with fractions %s and seed %s, not %s and %s as '
                    'configured; it is used as it is. Delete it to split anew.',
                    path, made_with[0], made_with[1], dict(fractions), seed)
  return {key: assignment[key] for key in keys}


def hold_out_source(records: Iterable[Record], assignment: Mapping[str, str],
                    source: str) -> dict[str, str]:
  """The split for testing on `source` after training on every other source.

  Every image of `source` goes to test; the other sources keep their train and
  validation images and lose their test images, which no split then holds, as
  do their images of patients who also have images in `source`.

  Raises:
    SplitError: `source` is not a source of `records`, or the only one of its
      modality (the model would train without that modality at all).
  """
  records = list(records)
  known = sorted({record.source for record in records})
  if source not in known:
    raise SplitError(f'--config.data.held_out_source={source!r} is not a source of the data; '
                     f'its sources are {known}.')
  held_out = [record for record in records if record.source == source]
  modalities = {record.modality for record in held_out}
  if not any(record.modality in modalities for record in records if record.source != source):
    raise SplitError(
        f'{source} is the only {"/".join(sorted(modalities))} source: without it the model '
        'would see no such images, and testing on it would measure a change of modality, '
        'not of source.')
  held_out_patients = {record.patient_id for record in held_out}
  split = {record.key: 'test' for record in held_out}
  split.update({record.key: assignment[record.key] for record in records
                if record.source != source and assignment[record.key] != 'test'
                and record.patient_id not in held_out_patients})
  return split
