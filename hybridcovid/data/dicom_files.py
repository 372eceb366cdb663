"""Writing minimal single-frame DICOM files, for generated data sets (benchmarks, tests)."""

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, SecondaryCaptureImageStorage, generate_uid


def write_dicom(path: str, pixels: np.ndarray, *, sop_class_uid: str = SecondaryCaptureImageStorage,
                preamble: bool = True, **elements) -> str:
  """Writes `pixels` ((H, W) grey or (H, W, 3) RGB, of their own integer type) to `path`.

  `elements` set or override data elements (e.g. Modality='CT',
  RescaleIntercept=-1024); `preamble=False` leaves out the 128-byte preamble
  and 'DICM' marker, as some writers do. Returns the path.
  """
  meta = FileMetaDataset()
  meta.TransferSyntaxUID = ExplicitVRLittleEndian
  meta.MediaStorageSOPClassUID = sop_class_uid
  meta.MediaStorageSOPInstanceUID = generate_uid()
  dataset = Dataset()
  dataset.file_meta = meta
  dataset.SOPClassUID = meta.MediaStorageSOPClassUID
  dataset.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
  dataset.Modality = 'OT'
  dataset.Rows, dataset.Columns = pixels.shape[:2]
  dataset.SamplesPerPixel = 1 if pixels.ndim == 2 else 3
  dataset.PhotometricInterpretation = 'MONOCHROME2' if pixels.ndim == 2 else 'RGB'
  if pixels.ndim == 3:
    dataset.PlanarConfiguration = 0
  dataset.BitsAllocated = dataset.BitsStored = pixels.itemsize * 8
  dataset.HighBit = dataset.BitsStored - 1
  dataset.PixelRepresentation = int(pixels.dtype.kind == 'i')
  dataset.PixelData = pixels.tobytes()
  for name, value in elements.items():
    setattr(dataset, name, value)
  dataset.save_as(str(path), enforce_file_format=preamble)
  return str(path)
