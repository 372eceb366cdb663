"""TFDS builders for the paper's data sets and for any folder of images.

Each builder scans its manually downloaded folder (see `sources`), decodes
every image once (PNG, JPEG or DICOM, see `decode`) and stores it as a
3-channel uint8 PNG with its label, modality, source, patient id, path,
sha256, a 16x16 thumbnail for near-duplicate search and original size. A file that cannot be decoded is
stored too, with an empty image and the reason in `error`, so the decision to
stop or to skip it (`--config.data.skip_bad`) needs no second pass.
"""

import concurrent.futures
import hashlib
import os
from typing import Callable

import numpy as np
import tensorflow_datasets as tfds

from hybridcovid import hashing
from hybridcovid.data import audit, decode, sources

_FEATURES = {
    'image': tfds.features.Image(shape=(None, None, 3), dtype=np.uint8),
    'label': tfds.features.ClassLabel(names=sources.CLASS_NAMES),
    'modality': tfds.features.Text(),
    'source': tfds.features.Text(),
    'patient_id': tfds.features.Text(),
    'patient_known': np.bool_,
    'relpath': tfds.features.Text(),
    'path': tfds.features.Text(),
    'sha256': tfds.features.Text(),
    'thumbnail': tfds.features.Tensor(shape=(audit.THUMBNAIL_SIZE ** 2,), dtype=np.uint8),
    'height': np.int32,
    'width': np.int32,
    'format': tfds.features.Text(),
    'bits': np.int32,
    'error': tfds.features.Text(),
}
ALL_SPLIT = 'images'


def _fingerprint(root: str, ct_window: tuple[float, float],
                 records: list[sources.Record]) -> str:
  """Changes whenever a file, a label or a patient id changes, or the CT window does."""
  digest = hashlib.sha1(f'{root}|{ct_window[0]}|{ct_window[1]}'.encode())
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
  ids and the CT window stay the same; any change prepares the data anew.
  """

  def __init__(self, *, root: str, ct_window: tuple[float, float],
               records: list[sources.Record], **kwargs):
    root = os.path.abspath(root)
    super().__init__(
        name=f'{os.path.basename(root) or "root"}-{_fingerprint(root, ct_window, records)}',
        description=f'Images under {root}.', **kwargs)
    self.ct_window = tuple(ct_window)
    self.records = records


def encode_example(record: sources.Record, ct_window: tuple[float, float]) -> dict:
  """Decodes one file into a builder example; a bad file gives an empty image and the reason."""
  try:
    digest = hashing.file_sha256(record.path)
    image, info = decode.read_image(record.path, record.modality, ct_window)
    facts = {'height': info.height, 'width': info.width, 'format': info.format,
             'bits': info.bits, 'error': ''}
  except (OSError, decode.BadImageError) as error:
    digest, image = '', np.zeros((1, 1, 3), np.uint8)
    facts = {'height': 0, 'width': 0, 'format': '', 'bits': 0,
             'error': str(error) if isinstance(error, decode.BadImageError)
             else f'{record.path}: cannot be read ({error}).'}
  return {
      'image': image, 'label': record.label, 'modality': record.modality,
      'source': record.source, 'patient_id': record.patient_id,
      'patient_known': record.patient_known, 'relpath': record.relpath,
      'path': record.path, 'sha256': digest,
      'thumbnail': audit.thumbnail(image), **facts,
  }


class _ScannedImages(tfds.core.GeneratorBasedBuilder):
  """Shared body: subclasses say how to scan their folder."""

  VERSION = tfds.core.Version('1.0.0')
  RELEASE_NOTES = {'1.0.0': 'First release.'}
  scan: Callable[[str], list[sources.Record]]

  def _info(self) -> tfds.core.DatasetInfo:
    return self.dataset_info_from_configs(
        features=tfds.features.FeaturesDict(_FEATURES),
        description=self.__doc__)

  def _split_generators(self, dl_manager):
    # Nothing is downloaded: the files are in the manual folder, already scanned.
    del dl_manager
    return {ALL_SPLIT: self._generate_examples()}

  def _generate_examples(self):
    records, window = self.builder_config.records, self.builder_config.ct_window
    workers = os.cpu_count() or 1
    with concurrent.futures.ThreadPoolExecutor(workers) as pool:
      # In chunks, so that decoded images never pile up beyond a few per worker.
      for start in range(0, len(records), 4 * workers):
        chunk = records[start:start + 4 * workers]
        for record, example in zip(chunk, pool.map(
            lambda record: encode_example(record, window), chunk)):
          yield record.key, example


class Covid19Radiography(_ScannedImages):
  """COVID-19 Radiography Database (CXR): its COVID and Normal images."""

  name = 'hybridcovid_radiography'
  scan = staticmethod(sources.scan_radiography)
  MANUAL_DOWNLOAD_INSTRUCTIONS = """
  Download the COVID-19 Radiography Database from Kaggle
  (https://www.kaggle.com/datasets/tawsifurrahman/covid19-radiography-database),
  unzip it, and pass the unzipped folder as --config.data.cxr_dir. Both the
  newer layout (COVID/images/*.png, Normal/images/*.png) and the older flat
  one (COVID/*.png, NORMAL/*.png) are read; other classes and masks are
  ignored.
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
  non-COVID; optionally below cxr/ and ct/ folders), or list them in
  <root>/manifest.csv with columns relpath,label and optionally
  patient_id,modality,source. Pass the root as --config.data.folder_dir.
  """


LAYOUTS = {
    'radiography': Covid19Radiography,
    'ctscan': Sarscov2Ctscan,
    'folder': ImageFolder,
}


def prepared_builder(layout: str, root: str, data_dir: str,
                     ct_window: tuple[float, float]) -> tfds.core.DatasetBuilder:
  """The builder of `layout` for `root`, prepared (scanned and decoded) once."""
  if layout not in LAYOUTS:
    raise sources.DataSourceError(
        f'Unknown data layout {layout!r}; choose from {sorted(LAYOUTS)}.')
  if not os.path.isdir(root):
    instructions = ' '.join(LAYOUTS[layout].MANUAL_DOWNLOAD_INSTRUCTIONS.split())
    raise sources.DataSourceError(f'{root}: no such folder. {instructions}')
  records = LAYOUTS[layout].scan(root)
  builder = LAYOUTS[layout](
      config=ScanConfig(root=root, ct_window=ct_window, records=records),
      data_dir=os.path.expanduser(data_dir))
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
