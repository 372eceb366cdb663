import json
import os

import numpy as np
import pydicom
import pydicom.pixels
from PIL import Image
import pytest

from hybridcovid.benchmark import preparation
from hybridcovid.data import decode


def test_generated_folder_holds_16_bit_radiographs_and_ct_dicoms(tmp_path):
  root = preparation.write_full_size_folder(str(tmp_path), 2, 96, 2)
  with open(os.path.join(root, 'manifest.csv')) as f:
    assert f.read().splitlines() == [
        'relpath,label,modality,patient_id', 'cxr/COVID/0000.png,COVID,cxr,cxr-0',
        'cxr/Normal/0001.png,Normal,cxr,cxr-1', 'ct/COVID/0000.dcm,COVID,ct,ct-0',
        'ct/Normal/0001.dcm,Normal,ct,ct-1']
  with Image.open(os.path.join(root, 'cxr/COVID/0000.png')) as image:
    values = np.asarray(image)
  assert values.shape == (96, 96) and values.dtype == np.uint16
  assert 0 < values.min() < values.max() < 4095 and values.std() > 100
  _, info = decode.read_image(os.path.join(root, 'cxr/COVID/0000.png'))
  assert (info.format, info.bits) == ('png', 16)
  dataset = pydicom.dcmread(os.path.join(root, 'ct/COVID/0000.dcm'))
  hounsfield = pydicom.pixels.apply_modality_lut(dataset.pixel_array, dataset)
  assert (dataset.Modality, dataset.pixel_array.dtype, dataset.RescaleIntercept) == (
      'CT', np.int16, -1024)
  assert hounsfield.shape == (512, 512) and -1024 <= hounsfield.min() < -600 < hounsfield.max()


def test_measure_times_both_settings_and_reports_them(tmp_path):
  result = preparation.measure(str(tmp_path), str(tmp_path / 'absent'), 2, 96, 2, 32)
  assert [folder['folder'] for folder in result['folders']] == ['full-size']
  folder = result['folders'][0]
  before, after = folder['before'], folder['after']
  assert (before['images'], after['images']) == (4, 4)
  assert (before['processes'], before['max_stored_side'], after['max_stored_side']) == (1, 0, 32)
  assert after['processes'] == len(os.sched_getaffinity(0))
  assert before['images_per_second'] == pytest.approx(4 / before['seconds'], rel=0.02)
  assert folder['speedup'] == round(after['images_per_second'] / before['images_per_second'], 2)
  assert 0 < after['stored_bytes'] < before['stored_bytes']
  assert folder['source_bytes'] == sum(
      os.path.getsize(os.path.join(parent, name))
      for parent, _, names in os.walk(tmp_path / 'full-size-2x96-2ct') for name in names)
  assert result['machine']['cpu_cores'] == len(os.sched_getaffinity(0))
  report = preparation.markdown(json.loads(json.dumps(result)))
  assert (f'| full-size | 4 | {folder["source_bytes"] / 1e6:,.1f} | '
          f'{before["images_per_second"]:.2f} | {after["images_per_second"]:.2f} | '
          f'{folder["speedup"]:.2f}x |') in report
