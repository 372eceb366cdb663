"""Reads one chest X-ray or CT image file into an (H, W, 3) uint8 array.

The format is detected from the file's first bytes, not its extension:
PNG and JPEG are decoded by Pillow, DICOM by pydicom. Grey images are
replicated to three channels. Whenever values must be brought to 8 bits they
are mapped linearly to [0, 1], clipped, scaled by 255 and rounded to the
nearest integer (np.round, so exact halves go to the even neighbour).

- 16-bit PNG and CXR DICOM: min-max stretch of the image's own values
  (its minimum becomes 0, its maximum 255; a constant image becomes all 0).
  CXR DICOM first applies the modality LUT and the file's VOI LUT or window,
  and MONOCHROME1 images are inverted after the stretch (255 - x).
- CT DICOM: modality LUT to Hounsfield units, then the window
  (level L, width W) maps [L - W/2, L + W/2] to [0, 255].

Files that cannot be used raise BadImageError, whose message names the file,
the reason and what to do.

This module must not import TensorFlow: it runs on machines without it.
"""

import dataclasses
import os
import warnings

import numpy as np
import pydicom
import pydicom.pixels
from PIL import Image

from hybridcovid import errors

IMAGE_EXTENSIONS = ('.png', '.jpg', '.jpeg', '.dcm', '.dicom')
DICOM_EXTENSIONS = ('.dcm', '.dicom')
MODALITIES = (None, 'ct', 'cxr')
DICOM_MODALITIES = {'CT': 'ct', 'CR': 'cxr', 'DX': 'cxr'}

_HEADER_SIZE = 132
_PNG_MAGIC = b'\x89PNG'
_JPEG_MAGIC = b'\xff\xd8\xff'
_DICOM_MAGIC_OFFSET = 128
_DICOM_MAGIC = b'DICM'
_PNG_BIT_DEPTH_OFFSET = 24
_SKIP_BAD_HINT = 'set --config.data.skip_bad=True to skip bad files.'
_SIXTEEN_BIT_GREY_MODES = ('I;16', 'I;16B', 'I;16L', 'I')


class BadImageError(errors.UserError):
  """An image file that cannot be used; the message names the file, the reason and what to do.

  `path` and `reason` (a sentence) are kept apart too, for callers whose advice
  differs from a training run's (prediction).
  """

  def __init__(self, path: str, reason: str, fix: str = ''):
    self.path, self.reason = path, f'{reason}.'
    super().__init__(f'{path}: {self.reason}' + (f' {fix}, or {_SKIP_BAD_HINT}' if fix else ''))


@dataclasses.dataclass(frozen=True)
class ImageInfo:
  """What an image file held, before conversion to 8-bit RGB."""
  format: str  # 'png', 'jpeg' or 'dicom', detected from the content.
  height: int
  width: int
  mode: str  # Pillow mode ('L', 'I;16', 'RGB', ...) or DICOM PhotometricInterpretation.
  bits: int  # Bits per sample in the file; for DICOM, BitsStored.
  modality: str | None = None  # From a DICOM Modality tag: 'ct', 'cxr' (CR, DX) or None.
  study: str | None = None  # A DICOM's StudyInstanceUID, where it has one.


def read_image(
    path: str,
    modality: str | None = None,
    ct_window: tuple[float, float] = (-600.0, 1500.0),
) -> tuple[np.ndarray, ImageInfo]:
  """Returns the image as (H, W, 3) uint8 and what the file held.

  Args:
    path: a PNG, JPEG or DICOM file.
    modality: 'ct' treats DICOM values as Hounsfield units and applies
      `ct_window`; 'cxr' or None do so only when the DICOM Modality tag is
      'CT'. PNG and JPEG files are taken as already displayable.
    ct_window: (level, width) of the CT window in Hounsfield units; the
      default is a lung window.

  Raises:
    BadImageError: the file is missing, not an image, truncated or unusable.
    ValueError: `modality` or `ct_window` is invalid.
  """
  if modality not in MODALITIES:
    raise ValueError(f'modality must be one of {MODALITIES}; got {modality!r}.')
  if ct_window[1] <= 0:
    raise ValueError(f'ct_window is (level, width) with width > 0; got {ct_window}.')
  try:
    with open(path, 'rb') as file:
      header = file.read(_HEADER_SIZE)
  except FileNotFoundError as error:
    raise BadImageError(path, 'no such file') from error

  if header.startswith(_PNG_MAGIC):
    bits = 16 if header[_PNG_BIT_DEPTH_OFFSET:_PNG_BIT_DEPTH_OFFSET + 1] == b'\x10' else 8
    return _read_with_pillow(path, 'png', bits)
  if header.startswith(_JPEG_MAGIC):
    return _read_with_pillow(path, 'jpeg', 8)
  if header[_DICOM_MAGIC_OFFSET:_HEADER_SIZE] == _DICOM_MAGIC:
    dataset = _read_dicom_dataset(path)
  elif os.path.splitext(path)[1].lower() in DICOM_EXTENSIONS:
    dataset = _read_dicom_without_preamble(path, header)
  else:
    raise _not_an_image_error(path, header)
  return _decode_dicom(path, dataset, modality, ct_window)


def _not_an_image_error(path: str, header: bytes) -> BadImageError:
  start = f'it starts with {header[:8]!r}' if header else 'it is empty'
  return BadImageError(path, f'not a PNG, JPEG or DICOM file ({start})',
                       'Remove it from the data folder')


def _read_with_pillow(path: str, file_format: str, bits: int) -> tuple[np.ndarray, ImageInfo]:
  """Decodes a PNG or JPEG; a truncated or corrupt file raises BadImageError."""
  try:
    with Image.open(path) as image:
      image.load()
      mode = image.mode
      if mode in _SIXTEEN_BIT_GREY_MODES:
        rgb = _grey_to_rgb(_stretch_to_uint8(np.asarray(image)))
      elif mode in ('L', 'LA'):
        rgb = _grey_to_rgb(np.asarray(image.getchannel(0)))
      elif mode in ('RGB', 'RGBA'):
        rgb = np.ascontiguousarray(np.asarray(image)[..., :3])
      else:  # Palette, CMYK, 1-bit and other modes.
        rgb = np.asarray(image.convert('RGB'))
  except (OSError, SyntaxError, ValueError, EOFError) as error:
    # Pillow's message names the file too.
    pillow_says = str(error).replace(f' {path!r}', '')
    raise BadImageError(
        path, f'truncated or corrupt {file_format.upper()} (Pillow says: {pillow_says})',
        'Replace the file') from error
  height, width = rgb.shape[:2]
  return rgb, ImageInfo(file_format, height, width, mode, bits)


def _read_dicom_dataset(path: str) -> pydicom.Dataset:
  """Reads a DICOM file that has the 'DICM' preamble."""
  try:
    return pydicom.dcmread(path)
  except Exception as error:  # pydicom raises many types for bad files.
    raise BadImageError(path, f'unreadable DICOM file (pydicom says: {error})',
                        'Replace the file') from error


def _read_dicom_without_preamble(path: str, header: bytes) -> pydicom.Dataset:
  """Reads a .dcm file without the 'DICM' preamble, if it holds pixel data.

  pydicom's force=True parses almost any bytes into some dataset, so only one
  with pixel data counts as DICOM.
  """
  try:
    with warnings.catch_warnings():
      warnings.simplefilter('ignore')
      dataset = pydicom.dcmread(path, force=True)
  except Exception as error:  # pydicom raises many types for bad files.
    raise _not_an_image_error(path, header) from error
  if 'PixelData' not in dataset:
    raise _not_an_image_error(path, header)
  return dataset


def _decode_dicom(
    path: str,
    dataset: pydicom.Dataset,
    modality: str | None,
    ct_window: tuple[float, float],
) -> tuple[np.ndarray, ImageInfo]:
  """Converts a single-frame DICOM image to (H, W, 3) uint8."""
  if 'PixelData' not in dataset:
    raise BadImageError(path, 'DICOM file without pixel data (it may be a report or a '
                        'structured document)', 'Remove it from the data folder')
  frames = int(dataset.get('NumberOfFrames') or 1)
  if frames > 1:
    raise BadImageError(path, f'DICOM file with {frames} frames; only single-frame images '
                        'are supported', 'Export one frame per file')
  photometric = str(dataset.get('PhotometricInterpretation', ''))
  is_ct = modality == 'ct' or dataset.get('Modality') == 'CT'
  try:
    pixels = dataset.pixel_array
    if pixels.ndim == 3:
      rgb = pixels if pixels.dtype == np.uint8 else _stretch_to_uint8(pixels)
    elif is_ct:
      hounsfield = pydicom.pixels.apply_modality_lut(pixels, dataset)
      rgb = _grey_to_rgb(_window_to_uint8(hounsfield, *ct_window))
    else:
      values = pydicom.pixels.apply_modality_lut(pixels, dataset)
      grey = _stretch_to_uint8(pydicom.pixels.apply_voi_lut(values, dataset))
      if photometric == 'MONOCHROME1':
        grey = 255 - grey
      rgb = _grey_to_rgb(grey)
    bits = int(dataset.BitsStored)
  except Exception as error:  # pydicom raises many types for bad pixel data.
    raise BadImageError(path, f'cannot decode the DICOM pixel data (pydicom says: {error})',
                        'Replace the file') from error
  height, width = rgb.shape[:2]
  return rgb, ImageInfo('dicom', height, width, photometric, bits,
                       DICOM_MODALITIES.get(str(dataset.get('Modality', ''))),
                       str(dataset.get('StudyInstanceUID', '')) or None)


def _fraction_to_uint8(fraction: np.ndarray) -> np.ndarray:
  """Maps [0, 1] to [0, 255], clipping outside values and rounding to nearest."""
  return np.round(np.clip(fraction, 0.0, 1.0) * 255.0).astype(np.uint8)


def _stretch_to_uint8(values: np.ndarray) -> np.ndarray:
  """Maps the image's minimum to 0 and maximum to 255; a constant image to 0."""
  values = values.astype(np.float64)
  low, high = values.min(), values.max()
  if high == low:
    return np.zeros(values.shape, np.uint8)
  return _fraction_to_uint8((values - low) / (high - low))


def _window_to_uint8(values: np.ndarray, level: float, width: float) -> np.ndarray:
  """Maps [level - width / 2, level + width / 2] to [0, 255], clipping outside."""
  return _fraction_to_uint8((values.astype(np.float64) - (level - width / 2)) / width)


def _grey_to_rgb(grey: np.ndarray) -> np.ndarray:
  """Replicates an (H, W) image to (H, W, 3)."""
  return np.repeat(grey[..., np.newaxis], 3, axis=-1)
