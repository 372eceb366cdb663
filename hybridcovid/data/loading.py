"""The loaded data set: the config's folders prepared, validated, split by patient and audited.

`load` turns the config's folders into usable examples with a patient-level
split and an audit report (`LoadedData`); `input_pipeline.InputPipeline`
serves them as batches.
"""

import dataclasses
import json
import os

from absl import logging
import ml_collections
import numpy as np

from hybridcovid import classes
from hybridcovid.data import audit, sources, splits, synthetic

SPLIT_FILE = 'split.json'
AUDIT_FILE = 'audit.json'
SYNTHETIC_DIR = 'synthetic_data'
# Where prepared data are kept when --config.data.tfds_dir is empty.
PREPARED_DIR = 'prepared_data'
MAX_LISTED = 10


@dataclasses.dataclass
class LoadedData:
  """Usable examples (bad files removed), their split, and the audit report."""
  builders: list
  facts: list[audit.ImageFacts]
  assignment: dict[str, str]
  report: dict

  def split_ids(self, split: str) -> np.ndarray:
    """Indices into `facts` of the examples in `split`."""
    return np.array([i for i, fact in enumerate(self.facts)
                     if self.assignment.get(fact.record.key) == split], np.int32)


def prepared_dir(data_config: ml_collections.ConfigDict, workdir: str) -> str:
  """Where the prepared data are kept: `data_config.tfds_dir`, or WORKDIR/prepared_data."""
  return os.path.expanduser(data_config.tfds_dir) or os.path.join(workdir, PREPARED_DIR)


def source_folders(data_config: ml_collections.ConfigDict, workdir: str
                   ) -> list[tuple[str, str]]:
  """(layout, folder) pairs the config names; generates the synthetic set if asked."""
  if data_config.synthetic:
    root = os.path.expanduser(data_config.synthetic_dir) or os.path.join(workdir,
                                                                         SYNTHETIC_DIR)
    synthetic.generate(root, seed=data_config.synthetic_seed,
                       patients_per_class=data_config.synthetic_patients_per_class,
                       image_size=data_config.synthetic_image_size,
                       names=classes.of_config(data_config))
    return [('folder', root)]
  folders = [(layout, folder) for layout, folder in (
      (data_config.cxr_layout, data_config.cxr_dir),
      (data_config.ct_layout, data_config.ct_dir),
      ('folder', data_config.folder_dir)) if folder]
  if not folders:
    raise sources.DataSourceError(
        'No data given. Download the COVID-19 Radiography Database '
        '(kaggle.com/datasets/tawsifurrahman/covid19-radiography-database) and the '
        'SARS-CoV-2 CT-scan dataset (kaggle.com/datasets/plameneduardo/'
        'sarscov2-ctscan-dataset), unpack them and pass --config.data.cxr_dir=... '
        '--config.data.ct_dir=... (or any folder of COVID and normal images with '
        '--config.data.folder_dir=...). To run the whole pipeline on built-in '
        'synthetic images instead: python main.py --config=configs/hybrid.py:demo '
        '--workdir=DIR (or add --config.data.synthetic=True to any config).')
  return folders


def _bad_file_error(bad: list[audit.ImageFacts]) -> sources.DataSourceError:
  listed = '\n  '.join(fact.error for fact in bad[:MAX_LISTED])
  more = f'\n  (+{len(bad) - MAX_LISTED} more)' if len(bad) > MAX_LISTED else ''
  return sources.DataSourceError(
      f'{len(bad)} image files cannot be used:\n  {listed}{more}\nFix or remove '
      'them, or set --config.data.skip_bad=True to skip them; skipped files '
      f'are listed in {AUDIT_FILE}.')


def load(data_config: ml_collections.ConfigDict, workdir: str, seed: int,
         write_files: bool = True, all_test: bool = False) -> LoadedData:
  """Prepares the data, checks every file, splits by patient and audits the split.

  The audit is written to `workdir/audit.json` before patient leakage stops
  the run, so the report is there to read. `write_files=False` reads the
  split file another process wrote and writes nothing. `all_test=True` puts
  every image in the test split, for evaluating a trained model on a data
  set it never saw. `data_config.held_out_source` moves every image of that
  source to test and drops the other sources' test images
  (`splits.hold_out_source`).
  """
  # Imported here: TensorFlow Datasets, which the modes that load no data do without.
  from hybridcovid.data import builders  # pylint: disable=g-import-not-at-top
  ct_window = (data_config.ct_window_level, data_config.ct_window_width)
  folders = source_folders(data_config, workdir)
  # Configs of runs that predate these fields: whole images, every core.
  prepared = [builders.prepared_builder(
      layout, folder, prepared_dir(data_config, workdir), ct_window,
      max_stored_side=data_config.get('max_stored_side', 0),
      processes=data_config.get('prepare_processes', 0)) for layout, folder in folders]
  names = classes.of_config(data_config)
  facts = of_classes([fact for builder in prepared for fact in builders.read_facts(builder)
                      if fact.record.modality in data_config.modalities], names)
  bad = [fact for fact in facts if fact.error]
  if bad and not data_config.skip_bad:
    raise _bad_file_error(bad)
  facts = [fact for fact in facts if not fact.error]
  # A trained model is evaluated on every image it can score.
  facts, left_out = (facts, {}) if all_test else leave_out_incomplete_modalities(facts, names)
  if not facts:
    raise sources.DataSourceError(
        f'No usable {"/".join(data_config.modalities)} images in '
        f'{[folder for _, folder in folders]}.')

  records = [fact.record for fact in facts]
  split_path = data_config.split_file or os.path.join(workdir, SPLIT_FILE)
  fractions = dict(zip(splits.SPLITS, data_config.split_fractions))
  if all_test:
    assignment = {record.key: 'test' for record in records}
  elif data_config.split_file and not os.path.isfile(split_path):
    raise splits.SplitError(f'{split_path}: no such split file. Fix '
                            '--config.data.split_file, or leave it empty to split '
                            'by patient automatically.')
  elif os.path.exists(split_path):
    assignment = splits.load_split(split_path, records, fractions, seed)
    logging.info('Using the split in %s.', split_path)
  else:
    assignment = splits.assign_splits(records, fractions, seed)
    if write_files:
      splits.save_split(split_path, assignment, fractions, seed)
      logging.info('Wrote a new patient-level split to %s.', split_path)

  if data_config.held_out_source:
    assignment = splits.hold_out_source(records, assignment, data_config.held_out_source)
    facts = [fact for fact in facts if fact.record.key in assignment]

  report = audit.audit(facts, assignment,
                       bad_files=[{'file': f.record.path, 'error': f.error} for f in bad],
                       min_correlation=data_config.near_duplicate_correlation, names=names)
  report['classes'] = list(names)
  report['modalities_left_out'] = left_out
  report['dropped_duplicates'] = (
      audit.keys_to_drop(report) if data_config.drop_duplicates else [])
  dropped = set(report['dropped_duplicates'])
  assignment = {key: split for key, split in assignment.items() if key not in dropped}
  # Balance as trained and evaluated: after duplicates are dropped.
  report['class_balance'] = audit.class_balance(
      [fact for fact in facts if fact.record.key in assignment], assignment, names)
  if write_files:
    os.makedirs(workdir, exist_ok=True)
    with open(os.path.join(workdir, AUDIT_FILE), 'w') as f:
      json.dump(report, f, indent=1)
    logging.info('Data audit (%s): %s.', os.path.join(workdir, AUDIT_FILE),
                 audit.summary_line(report))
  audit.check_patients(report)
  if not all_test:
    _check_classes_per_split(report['class_balance'])
  return LoadedData(prepared, facts, assignment, report)


def of_classes(facts: list[audit.ImageFacts], names: tuple[str, ...]
               ) -> list[audit.ImageFacts]:
  """The images of the task's class `names`: the two-class task leaves pneumonia out."""
  kept = [fact for fact in facts if fact.record.label < len(names)]
  if len(kept) < len(facts):
    logging.info('%d images of other classes (%s) left out: the task is %s.',
                 len(facts) - len(kept), ', '.join(classes.NAMES[len(names):]),
                 ' against '.join(reversed(names)))
  return kept


def leave_out_incomplete_modalities(facts: list[audit.ImageFacts], names: tuple[str, ...]
                                    ) -> tuple[list[audit.ImageFacts], dict[str, str]]:
  """(`facts` less the modalities without images of every class, {modality left out: why}).

  Pooled with the others, such a modality's images would teach that "pneumonia"
  also means "not this modality". Two classes keep every modality: one without
  both stops the run when the split is checked.
  """
  if len(names) == 2:
    return facts, {}
  kept = facts
  modalities = sorted({fact.record.modality for fact in kept})
  missing = {}
  for modality in modalities:
    present = {fact.record.label for fact in kept if fact.record.modality == modality}
    if len(present) < len(names):
      missing[modality] = '/'.join(name for label, name in enumerate(names)
                                   if label not in present)
  if kept and len(missing) == len(modalities):
    raise sources.DataSourceError(
        f'No modality has images of every class of --config.data.classes={",".join(names)}: '
        + '; '.join(f'the {modality.upper()} images have no {absent} images'
                    for modality, absent in missing.items())
        + f'. Add the missing class folders, or train on {",".join(classes.BINARY)}.')
  left_out = {}
  for modality, absent in missing.items():
    others = '/'.join(other.upper() for other in modalities if other not in missing)
    left_out[modality] = (f'the {modality.upper()} data have no {absent} images, so pooled '
                          f'with {others}, {absent} would also mean "not {modality.upper()}"')
    logging.warning('Left out the %s images: %s. Add %s images of %s to train on them, or '
                    'set --config.data.modalities to the others.', modality.upper(),
                    left_out[modality], absent, modality.upper())
  kept = [fact for fact in kept if fact.record.modality not in left_out]
  return kept, left_out


def _check_classes_per_split(balance: dict) -> None:
  """Training needs both classes of each modality; evaluation should have them."""
  for split, by_modality in balance.items():
    for modality, counts in by_modality.items():
      missing = [name for name, count in counts.items() if count == 0]
      if not missing:
        continue
      message = (f'The {split} split has no {"/".join(missing)} {modality} images '
                 f'({counts}).')
      if split == 'train':
        raise sources.DataSourceError(
            f'{message} Add images of that class, or change '
            '--config.data.split_fractions or --config.data.modalities.')
      logging.warning('%s Its metrics for that class will be undefined.', message)
