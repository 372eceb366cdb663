"""Leakage audit before any training: patients, duplicates and balance across splits."""

import collections
import dataclasses
from typing import Iterable, Mapping, Sequence

import numpy as np
from PIL import Image

from hybridcovid import classes, errors
from hybridcovid.data.sources import Record
from hybridcovid.data.splits import SPLITS

THUMBNAIL_SIZE = 16
# Correlation of grey 16x16 thumbnails from which two images count as near
# duplicates (resized, re-encoded or contrast-changed copies reach it).
# Distinct chest images of one modality look alike at this scale: in 1,000
# real CXR and CT images 18 pairs reach 0.97 but only 2 reach 0.99, and
# distinct synthetic patients reach 0.98 but never 0.99.
NEAR_DUPLICATE_CORRELATION = 0.99
_CHUNK = 2048


class LeakageError(errors.UserError):
  """Patients found in more than one split: training would be invalid."""


@dataclasses.dataclass(frozen=True)
class ImageFacts:
  """A record with what decoding it found out."""
  record: Record
  sha256: str
  thumbnail: np.ndarray  # (256,) uint8, see `thumbnail`.
  height: int
  width: int
  format: str
  bits: int
  error: str = ''


def thumbnail(image: np.ndarray) -> np.ndarray:
  """The image as a grey 16x16 thumbnail, flattened to 256 uint8 values."""
  grey = Image.fromarray(np.asarray(image, np.uint8)).convert('L')
  size = (THUMBNAIL_SIZE, THUMBNAIL_SIZE)
  return np.asarray(grey.resize(size, Image.Resampling.BILINEAR), np.uint8).ravel()


def _standardised(thumbnails: np.ndarray) -> np.ndarray:
  centred = thumbnails.astype(np.float32)
  centred -= centred.mean(axis=1, keepdims=True)
  norms = np.linalg.norm(centred, axis=1, keepdims=True)
  return centred / np.maximum(norms, 1e-6)


def _split_order(split: str) -> int:
  return SPLITS.index(split)


def patients_across_splits(facts: Iterable[ImageFacts],
                           assignment: Mapping[str, str]) -> list[dict]:
  splits = collections.defaultdict(set)
  files = collections.defaultdict(list)
  for fact in facts:
    splits[fact.record.patient_id].add(assignment[fact.record.key])
    files[fact.record.patient_id].append(fact.record.key)
  return [{'patient_id': patient, 'splits': sorted(found, key=_split_order),
           'files': files[patient]}
          for patient, found in sorted(splits.items()) if len(found) > 1]


def exact_duplicates_across_splits(facts: list[ImageFacts],
                                   assignment: Mapping[str, str]) -> list[dict]:
  groups = collections.defaultdict(list)
  for fact in facts:
    groups[fact.sha256].append(fact.record.key)
  return [{'sha256': digest,
           'files': [[key, assignment[key]] for key in keys]}
          for digest, keys in sorted(groups.items())
          if len({assignment[key] for key in keys}) > 1]


def near_duplicates_across_splits(facts: list[ImageFacts],
                                  assignment: Mapping[str, str],
                                  min_correlation: float = NEAR_DUPLICATE_CORRELATION
                                  ) -> list[dict]:
  """Pairs in different splits whose thumbnails correlate at >= min_correlation."""
  if not facts:
    return []
  keys = [fact.record.key for fact in facts]
  vectors = _standardised(np.stack([fact.thumbnail for fact in facts]))
  split_ids = np.array([_split_order(assignment[key]) for key in keys])
  pairs = []
  for start in range(0, len(keys), _CHUNK):
    correlation = vectors[start:start + _CHUNK] @ vectors.T
    rows, cols = np.nonzero(correlation >= min_correlation)
    keep = (cols > rows + start) & (split_ids[rows + start] != split_ids[cols])
    for row, col in zip(rows[keep], cols[keep]):
      pairs.append({'correlation': round(float(correlation[row, col]), 4),
                    'files': [[keys[row + start], assignment[keys[row + start]]],
                              [keys[col], assignment[keys[col]]]]})
  return pairs


def keys_to_drop(report: Mapping) -> list[str]:
  """Duplicate copies outside the earliest split they occur in (train, test, validation).

  Dropping them keeps train intact and leaves no copy of a test image in
  validation.
  """
  groups = [group['files'] for group in report['exact_duplicates_across_splits']]
  groups += [pair['files'] for pair in report['near_duplicates_across_splits']]
  drop = set()
  for files in groups:
    first = min(_split_order(split) for _, split in files)
    drop.update(key for key, split in files if _split_order(split) != first)
  return sorted(drop)


def class_balance(facts: Iterable[ImageFacts], assignment: Mapping[str, str],
                  names: Sequence[str] = classes.BINARY) -> dict:
  """Images per split, modality and class (of the task's class `names`)."""
  counts = {split: collections.defaultdict(lambda: dict.fromkeys(names, 0))
            for split in SPLITS}
  for fact in facts:
    record = fact.record
    counts[assignment[record.key]][record.modality][classes.NAMES[record.label]] += 1
  return {split: {modality: dict(labels) for modality, labels in sorted(by_modality.items())}
          for split, by_modality in counts.items()}


def image_statistics(facts: Iterable[ImageFacts]) -> dict:
  by_modality = collections.defaultdict(list)
  for fact in facts:
    by_modality[fact.record.modality].append(fact)
  stats = {}
  for modality, group in sorted(by_modality.items()):
    heights = np.array([fact.height for fact in group])
    widths = np.array([fact.width for fact in group])
    stats[modality] = {
        'images': len(group),
        'formats': dict(collections.Counter(fact.format for fact in group)),
        'bits': {str(bits): n for bits, n in
                 collections.Counter(fact.bits for fact in group).items()},
        'height': {'min': int(heights.min()), 'median': float(np.median(heights)),
                   'max': int(heights.max())},
        'width': {'min': int(widths.min()), 'median': float(np.median(widths)),
                  'max': int(widths.max())},
    }
  return stats


def audit(facts: list[ImageFacts], assignment: Mapping[str, str],
          bad_files: list[dict] = (),
          min_correlation: float = NEAR_DUPLICATE_CORRELATION,
          names: Sequence[str] = classes.BINARY) -> dict:
  """The full audit report of readable images `facts` of the task's class `names` under a
  split `assignment`."""
  return {
      'images': len(facts),
      'patients': len({fact.record.patient_id for fact in facts}),
      'patients_unknown': sum(not fact.record.patient_known for fact in facts),
      'patients_across_splits': patients_across_splits(facts, assignment),
      'exact_duplicates_across_splits': exact_duplicates_across_splits(facts, assignment),
      'near_duplicates_across_splits': near_duplicates_across_splits(
          facts, assignment, min_correlation),
      'class_balance': class_balance(facts, assignment, names),
      'image_statistics': image_statistics(facts),
      'bad_files': list(bad_files),
  }


def format_table(report: Mapping) -> str:
  """A short plain-text table of the audit for the log."""
  names = [name for name in classes.NAMES
           if any(name in labels for by_modality in report['class_balance'].values()
                  for labels in by_modality.values())]
  lines = [f'{"split":<11}{"modality":<9}' + ''.join(f'{name:>10}' for name in names)]
  for split, by_modality in report['class_balance'].items():
    for modality, labels in by_modality.items():
      lines.append(f'{split:<11}{modality:<9}' + ''.join(f'{labels[name]:>10}' for name in names))
  lines += [
      f'images {report["images"]}, patients {report["patients"]} '
      f'({report["patients_unknown"]} images without a patient id)',
      f'patients in more than one split: {len(report["patients_across_splits"])}',
      f'exact duplicates across splits: {len(report["exact_duplicates_across_splits"])}',
      f'near duplicates across splits: {len(report["near_duplicates_across_splits"])}',
      f'dropped from test/validation as duplicates: {len(report.get("dropped_duplicates", []))}',
      f'bad files: {len(report["bad_files"])}',
  ]
  return '\n'.join(lines)


def summary_line(report: Mapping) -> str:
  """The audit in one line for the log: images, split sizes and what was found."""
  sizes = ', '.join(f'{split} {sum(sum(labels.values()) for labels in by_modality.values())}'
                    for split, by_modality in report['class_balance'].items())
  return (f'{report["images"]} images of {report["patients"]} patients ({sizes}); '
          f'patients in more than one split {len(report["patients_across_splits"])}, '
          f'duplicates across splits {len(report["exact_duplicates_across_splits"])} exact and '
          f'{len(report["near_duplicates_across_splits"])} near '
          f'({len(report.get("dropped_duplicates", []))} dropped), '
          f'bad files {len(report["bad_files"])}')


def check_patients(report: Mapping) -> None:
  """Raises LeakageError naming the patients that appear in more than one split."""
  leaked = report['patients_across_splits']
  if leaked:
    named = ', '.join(f'{p["patient_id"]} ({"/".join(p["splits"])})' for p in leaked[:10])
    raise LeakageError(
        f'{len(leaked)} patients have images in more than one split: {named}. '
        'Training would leak them; fix the split file or let the split be '
        'made again by patient.')
