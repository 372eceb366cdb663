import collections
import csv
import hashlib
import os

import numpy as np
from PIL import Image
import pytest
from sklearn.linear_model import LogisticRegression

from hybridcovid.data import synthetic

PROBE_SIZE = 64
PROBE_PATIENTS = 40
TEST_FRACTION = 0.3
# Lateral lung bands, where COVID opacities lie: |x| and y ranges in [-1, 1]
# image coordinates (x to the right, y downwards).
LATERAL_BANDS = {'cxr': ((0.5, 0.8), (-0.5, 0.35)), 'ct': ((0.45, 0.75), (-0.3, 0.5))}


def _read_manifest(manifest_path: str) -> list[dict]:
  with open(manifest_path, newline='') as f:
    return list(csv.DictReader(f))


def _file_hashes(root: str) -> dict[str, str]:
  hashes = {}
  for folder, _, names in os.walk(root):
    for name in names:
      path = os.path.join(folder, name)
      with open(path, 'rb') as f:
        hashes[os.path.relpath(path, root)] = hashlib.sha256(f.read()).hexdigest()
  return hashes


@pytest.fixture(scope='module')
def probe_set(tmp_path_factory) -> dict:
  """The 64x64 data set of 40 patients per class, as arrays, split by patient."""
  root = str(tmp_path_factory.mktemp('probe'))
  rows = _read_manifest(synthetic.generate(
      root, patients_per_class=PROBE_PATIENTS, image_size=PROBE_SIZE))
  images = np.stack([np.asarray(Image.open(os.path.join(root, row['relpath'])))
                     for row in rows]).astype(np.float64) / 255.0
  patient_ids = np.array([row['patient_id'] for row in rows])
  groups = np.array([f"{row['modality']}-{row['label']}" for row in rows])
  rng = np.random.default_rng(0)
  test_ids = set()
  for group in sorted(set(groups)):
    members = sorted(set(patient_ids[groups == group]))
    test_ids.update(rng.permutation(members)[:round(TEST_FRACTION * len(members))])
  return {
      'images': images,
      'is_covid': np.array([row['label'] == 'COVID' for row in rows]),
      'modality': np.array([row['modality'] for row in rows]),
      'group': groups,
      'patient_id': patient_ids,
      'is_test': np.isin(patient_ids, sorted(test_ids)),
  }


def _correct_test_predictions(features: np.ndarray, probe_set: dict, selected: np.ndarray,
                              **options) -> np.ndarray:
  """Fits logistic regression on the selected training images; scores their test images."""
  train, test = selected & ~probe_set['is_test'], selected & probe_set['is_test']
  classifier = LogisticRegression(**options).fit(features[train], probe_set['is_covid'][train])
  return classifier.predict(features[test]) == probe_set['is_covid'][test]


def _lateral_band_brightness(images: np.ndarray, modality: str) -> np.ndarray:
  """Brightest quarter of the lateral lung bands, in each image standardised.

  The bands are cut into left and right, upper and lower quarters, since
  opacities may lie in one lung or one zone only.
  """
  coordinates = (np.arange(images.shape[1]) + 0.5) / images.shape[1] * 2.0 - 1.0
  y, x = np.meshgrid(coordinates, coordinates, indexing='ij')
  (x_low, x_high), (y_low, y_high) = LATERAL_BANDS[modality]
  band = (np.abs(x) > x_low) & (np.abs(x) < x_high) & (y > y_low) & (y < y_high)
  lower = y > (y_low + y_high) / 2
  mean = images.mean(axis=(1, 2), keepdims=True)
  standardised = (images - mean) / images.std(axis=(1, 2), keepdims=True)
  quarters = [band & ((x > 0) == right) & (lower == below)
              for right in (True, False) for below in (True, False)]
  return np.max([standardised[:, quarter].mean(axis=1) for quarter in quarters], axis=0)


def test_layout_and_manifest(tmp_path):
  root = str(tmp_path)
  manifest_path = synthetic.generate(root, seed=3, patients_per_class=5, image_size=40)
  assert manifest_path == os.path.join(root, 'manifest.csv')
  with open(manifest_path) as f:
    assert f.readline() == 'relpath,label,modality,source,patient_id\n'
  rows = _read_manifest(manifest_path)
  images_per_patient = collections.Counter(row['patient_id'] for row in rows)
  assert len(images_per_patient) == 2 * 2 * 5
  assert set(images_per_patient.values()) <= {2, 3, 4}
  for modality in ('cxr', 'ct'):
    for label in ('COVID', 'Normal'):
      group = [row for row in rows if row['modality'] == modality and row['label'] == label]
      assert {row['patient_id'] for row in group} == {
          f'{modality}-{label.lower()}-{index:03d}' for index in range(5)}
      assert {row['source'] for row in group} == {f'synthetic-{modality}-a',
                                                  f'synthetic-{modality}-b'}
      for row in group:
        assert row['source'][-1] == 'ab'[int(row['patient_id'][-3:]) % 2]
      assert all(row['relpath'].startswith(f'{modality}/{label}/') for row in group)
      on_disk = os.listdir(os.path.join(root, modality, label))
      assert len(on_disk) == len(group)
  for row in rows:
    with Image.open(os.path.join(root, row['relpath'])) as image:
      assert (image.format, image.mode, image.size) == ('PNG', 'L', (40, 40))
      pixels = np.asarray(image)
    assert pixels.dtype == np.uint8 and pixels.std() > 10
    # Site b's marker: 40 * 0.03 = 1.2 to 40 * 0.09 = 3.6, rounded.
    marked = np.all(pixels[1:4, 1:4] == 242)
    assert marked == row['source'].endswith('-b')


def test_same_seed_gives_identical_files_and_another_seed_differs(tmp_path):
  for folder, seed in (('a', 0), ('b', 0), ('c', 1)):
    synthetic.generate(str(tmp_path / folder), seed=seed, patients_per_class=2)
  first, second, other = (_file_hashes(str(tmp_path / folder)) for folder in 'abc')
  assert len(first) == sum(name.endswith('.png') for name in first) + 2
  assert first == second
  shared = set(first) & set(other)
  assert sum(first[name] == other[name] for name in shared if name.endswith('.png')) == 0


def _digest(root: str) -> str:
  digest = hashlib.sha256()
  for name, file_hash in sorted(_file_hashes(root).items()):
    digest.update(f'{name}:{file_hash}\n'.encode())
  return digest.hexdigest()


def test_two_class_files_are_those_written_before_pneumonia_was_added(tmp_path):
  synthetic.generate(str(tmp_path), seed=0, patients_per_class=3, image_size=48)
  # Every file's name and sha256 as the two-class generator wrote them before the
  # pneumonia class existed: the binary demo trains on the same bytes.
  assert _digest(str(tmp_path)) == (
      '3355a5fbb5bb3d052b9e5cc9cee0ffd69487d306e2ef189232e90f6b86bb5c70')


def test_three_classes_add_cxr_pneumonia_patients_and_keep_every_other_image(tmp_path):
  two, three = str(tmp_path / 'two'), str(tmp_path / 'three')
  synthetic.generate(two, seed=1, patients_per_class=3, image_size=40)
  synthetic.generate(three, seed=1, patients_per_class=3, image_size=40,
                     names=('normal', 'covid', 'pneumonia'))
  two_files, three_files = _file_hashes(two), _file_hashes(three)
  images = {name for name in two_files if name.endswith('.png')}
  assert {name: three_files[name] for name in images} == {name: two_files[name]
                                                           for name in images}
  added = sorted(set(three_files) - set(two_files))
  assert added and all(name.startswith('cxr/Pneumonia/cxr-pneumonia-') for name in added)
  rows = _read_manifest(os.path.join(three, 'manifest.csv'))
  pneumonia = [row for row in rows if row['label'] == 'Pneumonia']
  assert {row['patient_id'] for row in pneumonia} == {f'cxr-pneumonia-{index:03d}'
                                                      for index in range(3)}
  assert {row['modality'] for row in pneumonia} == {'cxr'}
  assert [row for row in rows if row['label'] != 'Pneumonia'] == _read_manifest(
      os.path.join(two, 'manifest.csv'))
  with pytest.raises(ValueError, match='Choose an empty folder'):
    synthetic.generate(two, seed=1, patients_per_class=3, image_size=40,
                       names=('normal', 'covid', 'pneumonia'))


def test_pneumonia_is_a_dense_opacity_in_one_lung_and_covid_mostly_in_both():
  def one_side_share(label):
    shares = []
    for index in range(30):
      _, densities = synthetic.patient_images(0, 'cxr', label, index, 64)
      density = densities[0]
      shares.append(max(density[:, :32].sum(), density[:, 32:].sum()) / density.sum())
    return np.array(shares)

  pneumonia, covid = one_side_share('Pneumonia'), one_side_share('COVID')
  assert pneumonia.min() > 0.85
  assert np.mean(covid < 0.85) > 0.3


def test_rerun_with_same_parameters_is_a_no_op(tmp_path):
  manifest_path = synthetic.generate(str(tmp_path), patients_per_class=1, image_size=32)
  before = _file_hashes(str(tmp_path))
  modified = os.stat(manifest_path).st_mtime_ns
  again = synthetic.generate(str(tmp_path), patients_per_class=1, image_size=32)
  assert again == manifest_path
  assert _file_hashes(str(tmp_path)) == before
  assert os.stat(manifest_path).st_mtime_ns == modified


@pytest.mark.parametrize('changes', [{'seed': 1}, {'patients_per_class': 2},
                                     {'image_size': 48}])
def test_rerun_with_other_parameters_raises(tmp_path, changes):
  synthetic.generate(str(tmp_path), patients_per_class=1, image_size=32)
  parameters = {'patients_per_class': 1, 'image_size': 32, **changes}
  with pytest.raises(ValueError, match='Choose an empty folder'):
    synthetic.generate(str(tmp_path), **parameters)


def test_folder_with_other_files_raises(tmp_path):
  (tmp_path / 'notes.txt').write_text('mine')
  with pytest.raises(ValueError, match='other files'):
    synthetic.generate(str(tmp_path), patients_per_class=1)
  assert os.listdir(tmp_path) == ['notes.txt']


@pytest.mark.parametrize('parameters, message', [
    ({'patients_per_class': 0}, 'patients_per_class must be at least 1; got 0'),
    ({'image_size': 16}, 'image_size must be at least 32; got 16'),
    ({'seed': -1}, 'seed must be a non-negative integer; got -1'),
])
def test_bad_parameters_raise(tmp_path, parameters, message):
  with pytest.raises(ValueError, match=message):
    synthetic.generate(str(tmp_path), **parameters)


def test_linear_model_on_pixels_is_not_perfect(probe_set):
  pixels = probe_set['images'].reshape(len(probe_set['images']), -1)
  everything = np.ones(len(pixels), dtype=bool)
  correct = _correct_test_predictions(pixels, probe_set, everything, C=1.0, max_iter=5000)
  assert 0.6 < correct.mean() < 0.95


def test_mean_brightness_does_not_give_the_class(probe_set):
  mean_brightness = probe_set['images'].mean(axis=(1, 2))[:, None]
  everything = np.ones(len(mean_brightness), dtype=bool)
  assert _correct_test_predictions(mean_brightness, probe_set, everything).mean() < 0.65


@pytest.mark.parametrize('modality', ['cxr', 'ct'])
def test_lateral_lung_bands_are_brighter_with_covid(probe_set, modality):
  of_modality = probe_set['modality'] == modality
  brightness = _lateral_band_brightness(probe_set['images'][of_modality], modality)
  is_covid = probe_set['is_covid'][of_modality]
  covid, normal = brightness[is_covid], brightness[~is_covid]
  pooled_std = np.sqrt((covid.var() + normal.var()) / 2)
  assert (covid.mean() - normal.mean()) / pooled_std > 1.2


def test_lateral_band_brightness_predicts_the_class(probe_set):
  correct = []
  for modality in ('cxr', 'ct'):
    of_modality = probe_set['modality'] == modality
    brightness = np.zeros((len(of_modality), 1))
    brightness[of_modality, 0] = _lateral_band_brightness(
        probe_set['images'][of_modality], modality)
    correct.append(_correct_test_predictions(brightness, probe_set, of_modality, C=100.0))
  assert np.concatenate(correct).mean() >= 0.8


def test_images_of_a_patient_are_alike(probe_set):
  images = probe_set['images'].reshape(len(probe_set['images']), -1)
  mean = images.mean(axis=1, keepdims=True)
  standardised = (images - mean) / images.std(axis=1, keepdims=True)
  correlation = standardised @ standardised.T / images.shape[1]
  patient_ids, groups = probe_set['patient_id'], probe_set['group']
  same_patient = patient_ids[:, None] == patient_ids[None, :]
  same_group = groups[:, None] == groups[None, :]
  off_diagonal = ~np.eye(len(images), dtype=bool)
  within = correlation[same_patient & off_diagonal].mean()
  across = correlation[same_group & ~same_patient].mean()
  assert within > 0.9
  assert within - across > 0.08
