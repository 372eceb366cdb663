import numpy as np
import pytest

from hybridcovid.data import audit
from hybridcovid.data.sources import Record


def _image(seed, size=64):
  rng = np.random.default_rng(seed)
  smooth = np.cumsum(np.cumsum(rng.normal(size=(size, size)), 0), 1)
  grey = np.interp(smooth, (smooth.min(), smooth.max()), (0, 255)).astype(np.uint8)
  return np.repeat(grey[..., None], 3, axis=-1)


def _fact(name, patient, label=1, modality='cxr', image=None, sha=None, seed=0):
  record = Record(f'/d/{name}', name, label, modality, 'src', patient, True)
  image = _image(seed) if image is None else image
  return audit.ImageFacts(record, sha or f'sha-{name}', audit.thumbnail(image),
                          image.shape[0], image.shape[1], 'png', 8)


def _correlation(a, b):
  facts = [_fact('a.png', 'a', image=a), _fact('b.png', 'b', image=b)]
  pairs = audit.near_duplicates_across_splits(
      facts, {'src:a.png': 'train', 'src:b.png': 'test'}, min_correlation=-1.0)
  return pairs[0]['correlation']


def test_thumbnail_correlation_survives_resizing_but_separates_images():
  from PIL import Image
  image = _image(1, size=128)
  resized = np.asarray(Image.fromarray(image).resize((97, 101)))
  assert _correlation(image, resized) >= 0.99
  assert _correlation(image, _image(2)) < audit.NEAR_DUPLICATE_CORRELATION
  np.testing.assert_array_equal(audit.thumbnail(np.full((40, 30, 3), 7, np.uint8)),
                                np.full(256, 7, np.uint8))


def test_audit_finds_planted_patient_exact_and_near_duplicates():
  facts = [_fact(f'{i}.png', f'p{i}', label=i % 2, seed=10 + i) for i in range(12)]
  facts.append(_fact('leaky.png', 'p0', seed=40))  # p0 is in train, this copy in test.
  facts.append(_fact('copy.png', 'p20', sha='sha-1.png', seed=11))  # Exact copy of 1.png.
  from PIL import Image
  near = np.asarray(Image.fromarray(_image(12)).resize((60, 60)))
  facts.append(_fact('near.png', 'p21', image=near))  # Near copy of 2.png.
  assignment = {f.record.key: 'train' for f in facts}
  assignment.update({'src:leaky.png': 'test', 'src:copy.png': 'validation',
                     'src:near.png': 'test', 'src:5.png': 'test'})
  report = audit.audit(facts, assignment)
  assert report['patients_across_splits'] == [
      {'patient_id': 'p0', 'splits': ['train', 'test'],
       'files': ['src:0.png', 'src:leaky.png']}]
  assert report['exact_duplicates_across_splits'] == [
      {'sha256': 'sha-1.png', 'files': [['src:1.png', 'train'], ['src:copy.png', 'validation']]}]
  near_pairs = [sorted(key for key, _ in pair['files'])
                for pair in report['near_duplicates_across_splits']]
  assert ['src:2.png', 'src:near.png'] in near_pairs
  assert ['src:1.png', 'src:copy.png'] in near_pairs  # Identical pixels are near too.
  assert audit.keys_to_drop(report) == ['src:copy.png', 'src:near.png']
  with pytest.raises(audit.LeakageError, match=r'1 patients .*: p0 \(train/test\)'):
    audit.check_patients(report)
  table = audit.format_table(report)
  assert 'patients in more than one split: 1' in table
  assert 'exact duplicates across splits: 1' in table
  report['dropped_duplicates'] = audit.keys_to_drop(report)
  report['class_balance'] = audit.class_balance(facts, assignment)
  line = audit.summary_line(report)
  assert '\n' not in line
  assert line.startswith(f"{report['images']} images of {report['patients']} patients (train ")
  assert line.endswith('patients in more than one split 1, duplicates across splits 1 exact '
                       f"and {len(near_pairs)} near (2 dropped), bad files 0")


def test_class_balance_and_image_statistics_count_every_image():
  facts = [_fact('a.png', 'a', label=1), _fact('b.png', 'b', label=0),
           _fact('c.png', 'c', label=0, modality='ct'),
           _fact('d.png', 'd', label=1, modality='ct', image=_image(3, size=32))]
  assignment = {'src:a.png': 'train', 'src:b.png': 'train', 'src:c.png': 'test',
                'src:d.png': 'validation'}
  assert audit.class_balance(facts, assignment) == {
      'train': {'cxr': {'normal': 1, 'covid': 1}},
      'test': {'ct': {'normal': 1, 'covid': 0}},
      'validation': {'ct': {'normal': 0, 'covid': 1}}}
  stats = audit.image_statistics(facts)
  assert stats['ct']['height'] == {'min': 32, 'median': 48.0, 'max': 64}
  assert stats['cxr']['formats'] == {'png': 2} and stats['cxr']['images'] == 2
