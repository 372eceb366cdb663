import os

import pytest

from hybridcovid.data import sources


def _touch(root, *relpaths):
  for relpath in relpaths:
    path = os.path.join(root, relpath)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, 'wb') as f:
      f.write(b'not decoded while scanning')


def _summary(records):
  return sorted((r.relpath, r.label, r.modality) for r in records)


def test_radiography_newer_layout_uses_images_and_ignores_masks_and_lung_opacity(tmp_path):
  top = 'COVID-19_Radiography_Dataset'
  _touch(tmp_path, f'{top}/COVID/images/COVID-1.png', f'{top}/COVID/images/COVID-2.png',
         f'{top}/COVID/masks/COVID-1.png', f'{top}/Normal/images/Normal-1.png',
         f'{top}/Lung_Opacity/images/Lung_Opacity-1.png',
         f'{top}/Viral Pneumonia/images/Viral Pneumonia-1.png', f'{top}/COVID.metadata.xlsx')
  records = sources.scan_radiography(str(tmp_path))
  assert _summary(records) == [
      (f'{top}/COVID/images/COVID-1.png', 1, 'cxr'),
      (f'{top}/COVID/images/COVID-2.png', 1, 'cxr'),
      (f'{top}/Normal/images/Normal-1.png', 0, 'cxr'),
      (f'{top}/Viral Pneumonia/images/Viral Pneumonia-1.png', 2, 'cxr')]
  assert {r.source for r in records} == {'covid19-radiography-database'}
  assert not any(r.patient_known for r in records)
  assert len({r.patient_id for r in records}) == 4


def test_radiography_older_flat_layout(tmp_path):
  top = 'COVID-19 Radiography Database'
  _touch(tmp_path, f'{top}/COVID/COVID (1).png', f'{top}/NORMAL/NORMAL (1).png',
         f'{top}/NORMAL/NORMAL (2).png', f'{top}/Viral Pneumonia/Viral Pneumonia (1).png')
  assert _summary(sources.scan_radiography(str(tmp_path / top))) == [
      ('COVID/COVID (1).png', 1, 'cxr'), ('NORMAL/NORMAL (1).png', 0, 'cxr'),
      ('NORMAL/NORMAL (2).png', 0, 'cxr'), ('Viral Pneumonia/Viral Pneumonia (1).png', 2, 'cxr')]


def test_radiography_without_a_pneumonia_folder_has_two_classes(tmp_path):
  _touch(tmp_path, 'COVID/1.png', 'Normal/2.png')
  assert _summary(sources.scan_radiography(str(tmp_path))) == [('COVID/1.png', 1, 'cxr'),
                                                               ('Normal/2.png', 0, 'cxr')]


def test_radiography_without_covid_names_the_folders_it_needs(tmp_path):
  _touch(tmp_path, 'Normal/1.png', 'Viral Pneumonia/2.png')
  with pytest.raises(sources.DataSourceError, match=r"looked for \['covid', 'covid19', 'normal'\]"):
    sources.scan_radiography(str(tmp_path))


def test_ctscan_layout(tmp_path):
  _touch(tmp_path, 'COVID/Covid (1).png', 'non-COVID/Non-Covid (1).png',
         'non-COVID/Non-Covid (2).png')
  records = sources.scan_ctscan(str(tmp_path))
  assert _summary(records) == [('COVID/Covid (1).png', 1, 'ct'),
                               ('non-COVID/Non-Covid (1).png', 0, 'ct'),
                               ('non-COVID/Non-Covid (2).png', 0, 'ct')]
  assert {r.source for r in records} == {'sarscov2-ctscan'}


def test_folder_matches_label_names_loosely_below_modality_folders(tmp_path):
  _touch(tmp_path, 'cxr/Covid-19/a.png', 'cxr/NORMAL/b.jpg', 'cxr/NORMAL/notes.txt',
         'ct/non_covid/series 1/c.dcm', 'ct/COVID/d.PNG', 'ct/pneumonia/e.png',
         'cxr/Viral_Pneumonia/f.png', 'cxr/Lung Opacity/g.png')
  records = sources.scan_folder(str(tmp_path), source='mine')
  assert _summary(records) == [('ct/COVID/d.PNG', 1, 'ct'),
                               ('ct/non_covid/series 1/c.dcm', 0, 'ct'),
                               ('ct/pneumonia/e.png', 2, 'ct'),
                               ('cxr/Covid-19/a.png', 1, 'cxr'),
                               ('cxr/NORMAL/b.jpg', 0, 'cxr'),
                               ('cxr/Viral_Pneumonia/f.png', 2, 'cxr')]
  assert {r.source for r in records} == {'mine-cxr', 'mine-ct'}


def test_folder_with_label_folders_at_the_top_takes_the_given_modality(tmp_path):
  _touch(tmp_path, 'Non COVID/a.png', 'positive/b.png')
  records = sources.scan_folder(str(tmp_path), modality='ct')
  assert _summary(records) == [('Non COVID/a.png', 0, 'ct'), ('positive/b.png', 1, 'ct')]


def test_manifest_gives_patients_modalities_and_sources(tmp_path):
  _touch(tmp_path, 'x/1.png', 'x/2.png', 'y/3.png')
  (tmp_path / 'manifest.csv').write_text(
      'relpath,label,patient_id,modality,source\n'
      'x/1.png,COVID,p1,ct,hospital-a\n'
      'x/2.png,COVID,p1,ct,hospital-a\n'
      'y/3.png,NonCOVID,,ct,\n')
  records = sources.scan_folder(str(tmp_path))
  assert [(r.relpath, r.label, r.patient_id, r.patient_known, r.source) for r in records] == [
      ('x/1.png', 1, 'p1', True, 'hospital-a'),
      ('x/2.png', 1, 'p1', True, 'hospital-a'),
      ('y/3.png', 0, f'{tmp_path.name}-ct:y/3.png', False, f'{tmp_path.name}-ct')]
  assert records[0].key == 'hospital-a:x/1.png'


@pytest.mark.parametrize('files, message', [
    ((), 'no images found'),
    (('COVID/a.png', 'COVID/b.png'), 'the cxr images are all covid'),
    (('cxr/COVID/a.png', 'cxr/normal/b.png', 'ct/normal/c.png'), 'the ct images are all normal'),
])
def test_unusable_folders_are_named_with_the_fix(tmp_path, files, message):
  _touch(tmp_path, *files)
  with pytest.raises(sources.DataSourceError, match=message) as error:
    sources.scan_folder(str(tmp_path))
  assert str(tmp_path) in str(error.value)


def test_empty_class_folder_is_named(tmp_path):
  _touch(tmp_path, 'COVID/a.png')
  os.makedirs(tmp_path / 'Normal')
  with pytest.raises(sources.DataSourceError, match='Normal: class folder without images'):
    sources.scan_folder(str(tmp_path))
  os.makedirs(tmp_path / 'ct' / 'COVID')
  os.makedirs(tmp_path / 'ct' / 'non-COVID')
  _touch(tmp_path, 'ct/COVID/b.png')
  with pytest.raises(sources.DataSourceError, match='non-COVID: class folder without images'):
    sources.scan_ctscan(str(tmp_path / 'ct'))


def test_missing_folder_and_bad_manifest_line(tmp_path):
  with pytest.raises(sources.DataSourceError, match='nowhere: no such folder'):
    sources.scan_folder(str(tmp_path / 'nowhere'))
  with pytest.raises(sources.DataSourceError, match='class folders not found'):
    sources.scan_ctscan(str(tmp_path))
  (tmp_path / 'manifest.csv').write_text('relpath,label\na.png,maybe\n')
  with pytest.raises(sources.DataSourceError, match='manifest.csv, line 2: needs'):
    sources.scan_folder(str(tmp_path))
