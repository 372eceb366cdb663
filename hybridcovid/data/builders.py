"""TFDS builders for the paper's data sets and for any folder of images.

Each builder scans its manually downloaded folder (see `sources`) and
prepares every image once in worker processes (see `prepare`): decoded (PNG,
JPEG or DICOM, see `decode`), its longer side shrunk to at most
`max_stored_side` and stored as a lossless PNG with its label, modality,
source, patient id, path, sha256, a 16x16 thumbnail for near-duplicate search
and the file's original size. A file that cannot be decoded is stored too,
with an empty image and the reason in `error`, so the decision to stop or to
skip it (`--config.data.skip_bad`) needs no second pass.
"""

import hashlib
import os
from typing import Callable

from absl import logging
import numpy as np
import tensorflow_datasets as tfds
import tqdm

from hybridcovid import classes
from hybridcovid.data import audit, prepare, sources

_FEATURES = {
    # PNG bytes from `prepare`, stored as they are (grey ones decode to 3 channels).
    'image': tfds.features.Image(shape=(None, None, 3), dtype=np.uint8),
    'label': tfds.features.ClassLabel(names=classes.NAMES),
    'modality': tfds.features.Text(),
    'source': tfds.features.Text(),
    'patient_id': tfds.features.Text(),
    'patient_known': np.bool_,
    'relpath': tfds.features.Text(),
    'path': tfds.features.Text(),
    'sha256': tfds.features.Text(),
    'thumbnail': tfds.features.Tensor(shape=(audit.THUMBNAIL_SIZE ** 2,), dtype=np.uint8),
    'height': np.int32,  # Of the file, not of the stored image.
    'width': np.int32,
    'format': tfds.features.Text(),
    'bits': np.int32,
    'error': tfds.features.Text(),
}
ALL_SPLIT = 'images'


def _fingerprint(root: str, ct_window: tuple[float, float], max_stored_side: int,
                 records: list[sources.Record]) -> str:
  """Changes whenever a file, a label or a patient id changes, or the CT window, the
  stored size or the class names do."""
  digest = hashlib.sha1(f'{root}|{ct_window[0]}|{ct_window[1]}|{max_stored_side}|'
                        f'{",".join(classes.NAMES)}'.encode())
  for record in records:
    try:
      stat = os.stat(record.path)
      size, modified = stat.st_size, stat.st_mtime_ns
    except OSError:
      size, modified = -1, -1
    digest.update(f'{record.key}|{record.label}|{record.modality}|{record.patient_id}|'
                  f'{record.patient_known}|{size}|{modified}\n'.encode())
  return digest.hexdigest()[:12]


class ScanConfig(tfds.core.BuilderConfig):
  """The scanned records of a folder, named by their fingerprint.

  Prepared data are reused only while the folder's files, labels and patient
  ids, the CT window and the stored size stay the same; any change prepares
  the data anew. The number of processes preparing them changes nothing stored.
  """

  def __init__(self, *, root: str, ct_window: tuple[float, float], max_stored_side: int,
               processes: int, records: list[sources.Record], **kwargs):
    root = os.path.abspath(root)
    fingerprint = _fingerprint(root, ct_window, max_stored_side, records)
    stored = f'at most {max_stored_side} pixels long' if max_stored_side else 'whole'
    super().__init__(name=f'{os.path.basename(root) or "root"}-{fingerprint}',
                     description=f'Images under {root}, stored {stored}.', **kwargs)
    self.ct_window = tuple(ct_window)
    self.max_stored_side = max_stored_side
    self.processes = processes
    self.records = records


class _ScannedImages(tfds.core.GeneratorBasedBuilder):
  """Shared body: subclasses say how to scan their folder."""

  VERSION = tfds.core.Version('1.0.0')
  RELEASE_NOTES = {'1.0.0': 'First release.'}
  scan: Callable[[str], list[sources.Record]]

  def _info(self) -> tfds.core.DatasetInfo:
    return self.dataset_info_from_configs(
        features=tfds.features.FeaturesDict(_FEATURES),
        description=self.__doc__)

  # TFDS prints "Downloading and preparing dataset" and where it went to
  # standard output; nothing is downloaded, and prepare.py logs the preparation.
  def _log_download_bytes(self) -> None:
    pass

  def _log_download_done(self) -> None:
    logging.info('Prepared data kept in %s.', self.data_dir)

  def _split_generators(self, dl_manager):
    # Nothing is downloaded: the files are in the manual folder, already scanned.
    del dl_manager
    return {ALL_SPLIT: self._generate_examples()}

  def _generate_examples(self):
    config = self.builder_config
    examples = prepare.prepare_examples(config.records, config.ct_window,
                                        config.max_stored_side, config.processes)
    progress = tqdm.tqdm(examples, total=len(config.records), desc='preparing', unit='image')
    for record, example in zip(config.records, progress):
      yield record.key, example


class Covid19Radiography(_ScannedImages):
  """COVID-19 Radiography Database (CXR): its COVID, Normal and Viral Pneumonia images."""

  name = 'hybridcovid_radiography'
  scan = staticmethod(sources.scan_radiography)
  MANUAL_DOWNLOAD_INSTRUCTIONS = """
  Download the COVID-19 Radiography Database from Kaggle
  (https://www.kaggle.com/datasets/tawsifurrahman/covid19-radiography-database),
  unzip it, and pass the unzipped folder as --config.data.cxr_dir. Both the
  newer layout (COVID/images/*.png, Normal/images/*.png) and the older flat
  one (COVID/*.png, NORMAL/*.png) are read, with the Viral Pneumonia folder
  for --config.data.classes=normal,covid,pneumonia; Lung_Opacity and the masks
  are ignored.
  """


class Sarscov2Ctscan(_ScannedImages):
  """SARS-CoV-2 CT-scan dataset (CT): its COVID and non-COVID slices."""

  name = 'hybridcovid_ctscan'
  scan = staticmethod(sources.scan_ctscan)
  MANUAL_DOWNLOAD_INSTRUCTIONS = """
  Download the SARS-CoV-2 CT-scan dataset from Kaggle
  (https://www.kaggle.com/datasets/plameneduardo/sarscov2-ctscan-dataset),
  unzip it, and pass the folder holding COVID/ and non-COVID/ as
  --config.data.ct_dir.
  """


class ImageFolder(_ScannedImages):
  """Any folder of images: <root>/[<modality>/]<label>/**/<image>, optional manifest.csv."""

  name = 'hybridcovid_folder'
  scan = staticmethod(sources.scan_folder)
  MANUAL_DOWNLOAD_INSTRUCTIONS = """
  Put the images in <root>/<label>/... (label folders such as COVID, Normal,
  non-COVID, Pneumonia; optionally below cxr/ and ct/ folders), or list them in
  <root>/manifest.csv with columns relpath,label and optionally
  patient_id,modality,source. Pass the root as --config.data.folder_dir.
  """


LAYOUTS = {
    'radiography': Covid19Radiography,
    'ctscan': Sarscov2Ctscan,
    'folder': ImageFolder,
}


def prepared_builder(layout: str, root: str, data_dir: str, ct_window: tuple[float, float],
                     *, max_stored_side: int, processes: int) -> tfds.core.DatasetBuilder:
  """The builder of `layout` for `root`, prepared (scanned and decoded) once.

  Stored images have their longer side at most `max_stored_side` pixels (0
  keeps them whole); `processes` prepare them (0: one per usable core).
  """
  if layout not in LAYOUTS:
    raise sources.DataSourceError(
        f'Unknown data layout {layout!r}; choose from {sorted(LAYOUTS)}.')
  if not os.path.isdir(root):
    instructions = ' '.join(LAYOUTS[layout].MANUAL_DOWNLOAD_INSTRUCTIONS.split())
    raise sources.DataSourceError(f'{root}: no such folder. {instructions}')
  records = LAYOUTS[layout].scan(root)
  builder = LAYOUTS[layout](
      config=ScanConfig(root=root, ct_window=ct_window, max_stored_side=max_stored_side,
                        processes=processes, records=records),
      data_dir=os.path.expanduser(data_dir))
  # Its nested bars garble a log; `_generate_examples` shows one of its own.
  tfds.display_progress_bar(False)
  builder.download_and_prepare(
      download_config=tfds.download.DownloadConfig(manual_dir=os.path.abspath(root)))
  return builder


def read_facts(builder: tfds.core.DatasetBuilder) -> list[audit.ImageFacts]:
  """Everything but the pixels, for every example (bad files included)."""
  dataset = builder.as_dataset(split=ALL_SPLIT,
                               decoders={'image': tfds.decode.SkipDecoding()})
  facts = []
  for example in tfds.as_numpy(dataset):
    text = {key: example[key].decode() for key in (
        'modality', 'source', 'patient_id', 'relpath', 'path', 'sha256',
        'format', 'error')}
    record = sources.Record(
        path=text['path'], relpath=text['relpath'], label=int(example['label']),
        modality=text['modality'], source=text['source'],
        patient_id=text['patient_id'], patient_known=bool(example['patient_known']))
    facts.append(audit.ImageFacts(
        record=record, sha256=text['sha256'], thumbnail=example['thumbnail'],
        height=int(example['height']), width=int(example['width']),
        format=text['format'], bits=int(example['bits']), error=text['error']))
  return sorted(facts, key=lambda fact: fact.record.key)
