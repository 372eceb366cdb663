import numpy as np
import pydicom
import pytest
from PIL import Image

from hybridcovid.data import decode
from hybridcovid.data.dicom_files import write_dicom

# HU values of a CT slice and what the default lung window (level -600,
# width 1500, so [-1350, 150]) and a (0, 2000) window make of them.
HOUNSFIELD = np.array([[-2000, -1350, -975], [-600, 150, 1000]], np.int16)
LUNG_WINDOW_GREY = np.array([[0, 0, 64], [128, 255, 255]], np.uint8)
WIDE_WINDOW_GREY = np.array([[0, 0, 3], [51, 147, 255]], np.uint8)


def _assert_grey_rgb(rgb: np.ndarray, expected_grey: np.ndarray) -> None:
  assert rgb.dtype == np.uint8
  np.testing.assert_array_equal(rgb, np.repeat(expected_grey[..., None], 3, axis=-1))


def test_8_bit_grey_png_is_replicated_exactly(tmp_path):
  grey = np.random.default_rng(0).integers(0, 256, (3, 5), dtype=np.uint8)
  path = str(tmp_path / 'grey.png')
  Image.fromarray(grey, 'L').save(path)
  rgb, info = decode.read_image(path)
  _assert_grey_rgb(rgb, grey)
  assert info == decode.ImageInfo('png', 3, 5, 'L', 8)


def test_16_bit_grey_png_is_min_max_stretched(tmp_path):
  # (v - 1000) / 4000 * 255 = 0, 12.75, 127.5, 255; np.round takes 127.5 to 128.
  values = np.array([[1000, 1200], [3000, 5000]], np.uint16)
  path = str(tmp_path / 'grey16.png')
  Image.fromarray(values).save(path)
  rgb, info = decode.read_image(path)
  _assert_grey_rgb(rgb, np.array([[0, 13], [128, 255]], np.uint8))
  assert info == decode.ImageInfo('png', 2, 2, 'I;16', 16)


def test_constant_16_bit_png_becomes_zeros(tmp_path):
  path = str(tmp_path / 'flat16.png')
  Image.fromarray(np.full((2, 3), 700, np.uint16)).save(path)
  rgb, _ = decode.read_image(path)
  _assert_grey_rgb(rgb, np.zeros((2, 3), np.uint8))


def _smooth_rgb(height: int = 16, width: int = 24) -> np.ndarray:
  rows, columns = np.mgrid[:height, :width]
  return np.stack([rows * 10, columns * 10, 255 - rows * 5 - columns * 5], -1).astype(np.uint8)


@pytest.mark.parametrize('file_name', ['photo.jpg', 'photo_named_like.png'])
def test_rgb_jpeg_is_close_to_its_source_whatever_its_extension(tmp_path, file_name):
  source = _smooth_rgb()
  path = str(tmp_path / file_name)
  Image.fromarray(source).save(path, format='JPEG', quality=95)
  rgb, info = decode.read_image(path)
  difference = np.abs(rgb.astype(int) - source)
  assert difference.mean() < 2 and difference.max() < 16
  assert info == decode.ImageInfo('jpeg', 16, 24, 'RGB', 8)


def test_rgba_png_drops_alpha_exactly(tmp_path):
  source = _smooth_rgb(4, 6)
  alpha = np.random.default_rng(1).integers(0, 256, (4, 6, 1), dtype=np.uint8)
  path = str(tmp_path / 'rgba.png')
  Image.fromarray(np.concatenate([source, alpha], -1), 'RGBA').save(path)
  rgb, info = decode.read_image(path)
  np.testing.assert_array_equal(rgb, source)
  assert info == decode.ImageInfo('png', 4, 6, 'RGBA', 8)


def test_palette_png_is_converted_to_its_colours(tmp_path):
  palette = np.array([[255, 0, 0], [0, 200, 0], [10, 20, 30]], np.uint8)
  indices = np.array([[0, 1, 2], [2, 1, 0]], np.uint8)
  image = Image.fromarray(indices, 'L').convert('P')
  image.putpalette(palette.ravel().tolist())
  path = str(tmp_path / 'palette.png')
  image.save(path)
  rgb, info = decode.read_image(path)
  np.testing.assert_array_equal(rgb, palette[indices])
  assert info == decode.ImageInfo('png', 2, 3, 'P', 8)


@pytest.mark.parametrize('modality_tag, modality, ct_window, expected', [
    ('CT', None, (-600.0, 1500.0), LUNG_WINDOW_GREY),
    ('OT', 'ct', (0.0, 2000.0), WIDE_WINDOW_GREY),
])
def test_ct_dicom_applies_rescale_then_window(tmp_path, modality_tag, modality, ct_window,
                                              expected):
  stored = HOUNSFIELD + 1024
  path = write_dicom(tmp_path / 'ct.dcm', stored, Modality=modality_tag,
                      RescaleIntercept=-1024, RescaleSlope=1)
  rgb, info = decode.read_image(path, modality=modality, ct_window=ct_window)
  _assert_grey_rgb(rgb, expected)
  # The Modality tag, not the argument, says what the file is.
  assert info == decode.ImageInfo('dicom', 2, 3, 'MONOCHROME2', 16,
                                  'ct' if modality_tag == 'CT' else None)


def test_monochrome1_cxr_dicom_is_stretched_then_inverted(tmp_path):
  # Stretch: 0, 63.75, 127.5, 255 -> 0, 64, 128, 255; inverted: 255, 191, 127, 0.
  values = np.array([[0, 1000], [2000, 4000]], np.uint16)
  path = write_dicom(tmp_path / 'cxr.dcm', values, PhotometricInterpretation='MONOCHROME1',
                      BitsStored=12, HighBit=11, Modality='DX')
  rgb, info = decode.read_image(path, modality='cxr')
  _assert_grey_rgb(rgb, np.array([[255, 191], [127, 0]], np.uint8))
  assert info == decode.ImageInfo('dicom', 2, 2, 'MONOCHROME1', 12, 'cxr')


def test_cxr_dicom_applies_its_window_before_the_stretch(tmp_path):
  # The window (centre 150, width 101) maps 100 to 0.005 and 150 to 0.505 of
  # the range and clips 0 below and 200 and above; the stretch keeps that.
  values = np.array([[0, 100, 150], [200, 300, 4000]], np.uint16)
  path = write_dicom(tmp_path / 'windowed.dcm', values, BitsStored=12, HighBit=11,
                      WindowCenter=150, WindowWidth=101)
  rgb, info = decode.read_image(path)
  _assert_grey_rgb(rgb, np.array([[0, 1, 129], [255, 255, 255]], np.uint8))
  assert info == decode.ImageInfo('dicom', 2, 3, 'MONOCHROME2', 12)


def test_a_dicom_names_its_study(tmp_path):
  path = write_dicom(tmp_path / 'slice.dcm', np.zeros((2, 2), np.uint8), Modality='CT',
                     StudyInstanceUID='1.2.826.0.1.3680043.8.498.1')
  assert decode.read_image(path)[1].study == '1.2.826.0.1.3680043.8.498.1'

def test_rgb_dicom_is_used_as_is(tmp_path):
  source = _smooth_rgb(3, 4)
  path = write_dicom(tmp_path / 'colour.dcm', source)
  rgb, info = decode.read_image(path)
  np.testing.assert_array_equal(rgb, source)
  assert info == decode.ImageInfo('dicom', 3, 4, 'RGB', 8)


def test_dicom_without_preamble_is_read_only_with_a_dicom_extension(tmp_path):
  values = np.array([[0, 1000], [2000, 4000]], np.uint16)
  path = write_dicom(tmp_path / 'bare.dcm', values, preamble=False)
  rgb, info = decode.read_image(path)
  _assert_grey_rgb(rgb, np.array([[0, 64], [128, 255]], np.uint8))
  assert info == decode.ImageInfo('dicom', 2, 2, 'MONOCHROME2', 16)
  other_path = str(tmp_path / 'bare.bin')
  write_dicom(other_path, values, preamble=False)
  with pytest.raises(decode.BadImageError, match='not a PNG, JPEG or DICOM'):
    decode.read_image(other_path)


def test_dicom_without_pixel_data_is_rejected(tmp_path):
  path = str(tmp_path / 'report.dcm')
  write_dicom(path, np.zeros((2, 2), np.uint8))
  dataset = pydicom.dcmread(path)
  del dataset.PixelData
  dataset.save_as(path, enforce_file_format=True)
  with pytest.raises(decode.BadImageError) as error:
    decode.read_image(path)
  assert path in str(error.value) and 'without pixel data' in str(error.value)


def test_multi_frame_dicom_is_rejected(tmp_path):
  frames = np.zeros((2, 2, 2), np.uint8)
  path = write_dicom(tmp_path / 'cine.dcm', frames[0], NumberOfFrames=2,
                      PixelData=frames.tobytes())
  with pytest.raises(decode.BadImageError, match='only single-frame images'):
    decode.read_image(path)


@pytest.mark.parametrize('file_name', ['x.png', 'x.dcm'])
def test_text_file_is_not_an_image(tmp_path, file_name):
  path = str(tmp_path / file_name)
  with open(path, 'w') as file:
    file.write('patient list\n' * 20)
  with pytest.raises(decode.BadImageError) as error:
    decode.read_image(path)
  message = str(error.value)
  assert path in message and 'not a PNG, JPEG or DICOM' in message
  assert "b'patient '" in message and 'skip_bad=True' in message


@pytest.mark.parametrize('image_format', ['PNG', 'JPEG'])
def test_truncated_file_is_rejected(tmp_path, image_format):
  noise = np.random.default_rng(2).integers(0, 256, (64, 64, 3), dtype=np.uint8)
  path = str(tmp_path / f'cut.{image_format.lower()}')
  Image.fromarray(noise).save(path, format=image_format)
  with open(path, 'rb') as file:
    content = file.read()
  with open(path, 'wb') as file:
    file.write(content[:len(content) // 2])
  with pytest.raises(decode.BadImageError) as error:
    decode.read_image(path)
  message = str(error.value)
  assert path in message and f'truncated or corrupt {image_format}' in message


def test_missing_file_is_named(tmp_path):
  path = str(tmp_path / 'absent.png')
  with pytest.raises(decode.BadImageError, match='absent.png: no such file'):
    decode.read_image(path)


def test_invalid_arguments_are_rejected(tmp_path):
  path = str(tmp_path / 'grey.png')
  Image.fromarray(np.zeros((2, 2), np.uint8)).save(path)
  with pytest.raises(ValueError, match='modality must be one of'):
    decode.read_image(path, modality='CT')
  with pytest.raises(ValueError, match='width > 0'):
    decode.read_image(path, ct_window=(-600.0, 0.0))
