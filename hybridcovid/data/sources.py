"""Finding the images of a data set on disk: one `Record` per image, no decoding.

Three layouts are understood:
- a generic folder, `<root>/[<modality>/]<label>/**/<image>`, with an optional
  `manifest.csv` (`relpath,label` and optionally `patient_id,modality,source`);
- the COVID-19 Radiography Database (CXR), in its older flat layout
  (`COVID/*.png`, `NORMAL/*.png`) and its newer one (`COVID/images/*.png`),
  with its `Viral Pneumonia` folder (`Lung_Opacity` names no diagnosis and is
  ignored);
- the SARS-CoV-2 CT-scan dataset (`COVID/`, `non-COVID/`).

Labels are indices into `classes.NAMES`: pneumonia images are found whatever
the task, and the two-class task leaves them out later (`loading`).
"""

import csv
import dataclasses
import os
import re

from absl import logging

from hybridcovid import classes, errors
from hybridcovid.data.decode import IMAGE_EXTENSIONS

MODALITIES = ('cxr', 'ct')
_COVID, _NORMAL, _PNEUMONIA = (classes.NAMES.index(name) for name in ('covid', 'normal',
                                                                       'pneumonia'))
_LABEL_ALIASES = {
    'covid': _COVID, 'covid19': _COVID, 'sarscov2': _COVID, 'positive': _COVID,
    'normal': _NORMAL, 'noncovid': _NORMAL, 'noncovid19': _NORMAL, 'negative': _NORMAL,
    'pneumonia': _PNEUMONIA, 'viralpneumonia': _PNEUMONIA, 'bacterialpneumonia': _PNEUMONIA,
    'otherpneumonia': _PNEUMONIA, 'noncovidpneumonia': _PNEUMONIA,
    'communityacquiredpneumonia': _PNEUMONIA,
}
_MODALITY_ALIASES = {'cxr': 'cxr', 'xray': 'cxr', 'chestxray': 'cxr', 'ct': 'ct',
                     'ctscan': 'ct'}
MANIFEST = 'manifest.csv'


class DataSourceError(errors.UserError):
  """A data folder that cannot be used; the message names it and says what to do."""


@dataclasses.dataclass(frozen=True)
class Record:
  """One image file and what is known about it before decoding."""
  path: str
  relpath: str
  label: int
  modality: str
  source: str
  patient_id: str
  patient_known: bool

  @property
  def key(self) -> str:
    """Unique across sources: the source and the path inside it."""
    return f'{self.source}:{self.relpath}'


def _folded(name: str) -> str:
  return re.sub(r'[\s_\-]+', '', name.lower())


def label_from_name(name: str) -> int | None:
  """The label a folder or manifest names: COVID, normal (also non-COVID) or pneumonia
  (also Viral Pneumonia and the like), in any case, spaces, hyphens, underscores."""
  return _LABEL_ALIASES.get(_folded(name))


def modality_from_name(name: str) -> str | None:
  return _MODALITY_ALIASES.get(_folded(name))


def _is_image(name: str) -> bool:
  return name.lower().endswith(IMAGE_EXTENSIONS)


def _images_below(folder: str) -> list[str]:
  found = []
  for parent, dirs, files in os.walk(folder):
    dirs.sort()
    found += [os.path.join(parent, name) for name in sorted(files) if _is_image(name)]
  return found


def _class_images(folder: str) -> list[str]:
  """The images below a class folder; an empty class folder is an error naming it."""
  images = _images_below(folder)
  if not images:
    raise DataSourceError(
        f'{folder}: class folder without images (PNG, JPEG or DICOM). Put the '
        'images of that class there, or remove the folder.')
  return images


def _file_patient_id(source: str, relpath: str) -> str:
  """Stands in for an unknown patient: the image alone."""
  return f'{source}:{relpath}'


def _check_classes(records: list[Record], root: str) -> list[Record]:
  if not records:
    raise DataSourceError(
        f'{root}: no images found. Expected <root>/<label>/<image> with label '
        'folders such as COVID and Normal (or non-COVID), optionally below '
        'cxr/ and ct/ folders, or a manifest.csv.')
  for modality in sorted({record.modality for record in records}):
    labels = {record.label for record in records if record.modality == modality}
    if len(labels) < 2:
      present = classes.NAMES[labels.pop()]
      raise DataSourceError(
          f'{root}: the {modality} images are all {present}; a classifier needs '
          'COVID and normal images. Add the missing class folder.')
  unknown = sum(not record.patient_known for record in records)
  if unknown:
    logging.warning(
        '%s: %d of %d images have no patient id; each is its own patient, so '
        'splits cannot keep the images of one patient together. Add a '
        'patient_id column to manifest.csv where the ids are known.',
        root, unknown, len(records))
  return records


def _records_from_manifest(root: str, default_source: str) -> list[Record]:
  path = os.path.join(root, MANIFEST)
  with open(path, newline='') as f:
    rows = list(csv.DictReader(f))
  records = []
  for line, row in enumerate(rows, start=2):
    relpath = (row.get('relpath') or '').strip()
    label = label_from_name(row.get('label') or '')
    modality = modality_from_name(row.get('modality') or 'cxr')
    if not relpath or label is None or modality is None:
      raise DataSourceError(
          f'{path}, line {line}: needs a relpath, a label (COVID, normal or pneumonia) '
          f'and, if given, a modality (cxr or ct); got {dict(row)}.')
    source = (row.get('source') or '').strip() or f'{default_source}-{modality}'
    patient = (row.get('patient_id') or '').strip()
    records.append(Record(
        path=os.path.join(root, relpath), relpath=relpath, label=label,
        modality=modality, source=source,
        patient_id=patient or _file_patient_id(source, relpath),
        patient_known=bool(patient)))
  return records


def scan_folder(root: str, modality: str = 'cxr', source: str | None = None
                ) -> list[Record]:
  """Records of a generic folder data set, from its manifest.csv if it has one.

  Without a manifest, top-level folders are labels, or modalities (cxr, ct)
  holding label folders; `modality` applies to label folders at the top.
  Folders that name no known label are ignored, with a log line.
  """
  root = os.path.abspath(root)
  if not os.path.isdir(root):
    raise DataSourceError(f'{root}: no such folder. Point --config.data.* at the '
                          'folder that holds the class folders.')
  source = source or os.path.basename(root)
  if os.path.isfile(os.path.join(root, MANIFEST)):
    return _check_classes(_records_from_manifest(root, source), root)
  records = []
  for top in sorted(os.listdir(root)):
    top_path = os.path.join(root, top)
    if not os.path.isdir(top_path):
      continue
    if modality_from_name(top) is not None:
      groups = [(modality_from_name(top), os.path.join(top_path, name), name)
                for name in sorted(os.listdir(top_path))
                if os.path.isdir(os.path.join(top_path, name))]
    else:
      groups = [(modality, top_path, top)]
    for group_modality, folder, name in groups:
      label = label_from_name(name)
      if label is None:
        logging.warning('%s: folder %s names no known label (such as COVID, '
                        'Normal or non-COVID); its images are ignored.', root, folder)
        continue
      for path in _class_images(folder):
        relpath = os.path.relpath(path, root)
        group_source = f'{source}-{group_modality}'
        records.append(Record(path, relpath, label, group_modality, group_source,
                              _file_patient_id(group_source, relpath), False))
  return _check_classes(records, root)


def _find_class_folders(root: str, names: dict[str, int], required: set[int]
                        ) -> dict[int, str]:
  """Finds class folders in `root` or in one of its sub-folders (the archive's top): those
  of the `required` labels, and of the others where they are."""
  candidates = [root] + [os.path.join(root, name) for name in sorted(os.listdir(root))
                         if os.path.isdir(os.path.join(root, name))]
  for folder in candidates:
    found = {}
    for name in sorted(os.listdir(folder)):
      label = names.get(_folded(name))
      if label is not None and os.path.isdir(os.path.join(folder, name)):
        found[label] = os.path.join(folder, name)
    if required <= set(found):
      return found
  raise DataSourceError(
      f'{root}: class folders not found (looked for '
      f'{sorted(name for name, label in names.items() if label in required)} in the folder '
      'and its sub-folders). Unpack the archive there, keeping its folders.')


def _scan_kaggle(root: str, names: dict[str, int], modality: str, source: str
                 ) -> list[Record]:
  """The images of a Kaggle archive's class folders; COVID and normal ones must be there."""
  root = os.path.abspath(root)
  if not os.path.isdir(root):
    raise DataSourceError(f'{root}: no such folder; see the manual download '
                          'instructions of the data set.')
  records = []
  for label, folder in sorted(_find_class_folders(root, names, {_COVID, _NORMAL}).items()):
    images = os.path.join(folder, 'images')  # Newer layout; masks/ is ignored.
    for path in _class_images(images if os.path.isdir(images) else folder):
      relpath = os.path.relpath(path, root)
      records.append(Record(path, relpath, label, modality, source,
                            _file_patient_id(source, relpath), False))
  return _check_classes(records, root)


def scan_radiography(root: str) -> list[Record]:
  """COVID, Normal and, where present, Viral Pneumonia CXR images of the COVID-19
  Radiography Database."""
  return _scan_kaggle(root, {'covid': _COVID, 'covid19': _COVID, 'normal': _NORMAL,
                             'viralpneumonia': _PNEUMONIA}, 'cxr',
                      'covid19-radiography-database')


def scan_ctscan(root: str) -> list[Record]:
  """COVID and non-COVID CT slices of the SARS-CoV-2 CT-scan dataset."""
  return _scan_kaggle(root, {'covid': _COVID, 'noncovid': _NORMAL}, 'ct', 'sarscov2-ctscan')
