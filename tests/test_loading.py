import collections
import json
import os
import pathlib

import pytest

from configs import default
from hybridcovid.data import audit, loading, sources
import data_trees


def test_load_writes_split_and_audit_and_reuses_the_split(loaded, tmp_path):
  config, workdir, data = loaded
  assert len(data.facts) == 80
  with open(os.path.join(workdir, 'split.json')) as f:
    saved = json.load(f)['assignment']
  assert saved == data.assignment
  counts = collections.Counter(data.assignment.values())
  assert counts == {'train': 56, 'test': 16, 'validation': 8}
  with open(os.path.join(workdir, 'audit.json')) as f:
    report = json.load(f)
  assert report['patients_across_splits'] == [] and report['images'] == 80
  again = loading.load(config, workdir, seed=123)  # Another seed, but the split is reused.
  assert again.assignment == data.assignment


def test_bad_files_stop_the_run_unless_skipped(tmp_path):
  root = tmp_path / 'images'
  data_trees.write_folder(str(root), patients_per_stratum=3)
  (root / 'cxr' / 'COVID' / 'junk.png').write_text('hello')
  with open(root / 'manifest.csv', 'a') as f:
    f.write('cxr/COVID/junk.png,COVID,cxr,junk\n')
  config = data_trees.data_config(tmp_path, root)
  with pytest.raises(sources.DataSourceError, match='(?s)1 image files cannot be used:.*junk.png'):
    loading.load(config, str(tmp_path / 'work'), seed=0)
  config.skip_bad = True
  data = loading.load(config, str(tmp_path / 'work'), seed=0)
  assert len(data.facts) == 24
  assert [entry['file'] for entry in data.report['bad_files']] == [str(root / 'cxr/COVID/junk.png')]


def test_leaking_split_file_is_refused_after_the_audit_is_written(tmp_path):
  root = tmp_path / 'images'
  data_trees.write_folder(str(root), patients_per_stratum=3)
  config = data_trees.data_config(tmp_path, root)
  workdir = tmp_path / 'work'
  data = loading.load(config, str(workdir), seed=0)
  key = next(k for k, split in data.assignment.items() if k.endswith('cxr/COVID/0_0.png'))
  split = json.loads((workdir / 'split.json').read_text())
  split['assignment'][key] = 'test' if data.assignment[key] != 'test' else 'train'
  (workdir / 'split.json').write_text(json.dumps(split))
  with pytest.raises(audit.LeakageError, match='cxr-COVID-0'):
    loading.load(config, str(workdir), seed=0)
  assert json.loads((workdir / 'audit.json').read_text())['patients_across_splits']


def test_no_data_explains_how_to_get_it_and_run_the_demo(tmp_path):
  config = default.get_config().data
  with pytest.raises(sources.DataSourceError, match='--config.data.synthetic=True'):
    loading.load(config, str(tmp_path), seed=0)


@pytest.mark.slow
@pytest.mark.skipif(not os.path.isdir(data_trees.REALMINI),
                    reason='../shared/data/realmini (real CXR and CT images) is absent')
def test_realmini_loads_all_images_with_no_patient_in_two_splits(tmp_path):
  config = data_trees.data_config(tmp_path, os.path.abspath(data_trees.REALMINI))
  data = loading.load(config, str(tmp_path / 'work'), seed=0)
  assert len(data.facts) + len(data.report['bad_files']) == 1000
  assert data.report['bad_files'] == []
  assert data.report['patients_across_splits'] == []
  by_patient = collections.defaultdict(set)
  for fact in data.facts:
    by_patient[fact.record.patient_id].add(data.assignment.get(fact.record.key, 'dropped'))
  assert all(len(found - {'dropped'}) <= 1 for found in by_patient.values())


def test_a_reading_process_writes_nothing_and_evaluation_data_are_all_test(loaded):
  config, workdir, data = loaded
  reader_dir = os.path.join(os.path.dirname(workdir), 'reader')
  # Another process reads the split process 0 wrote and writes no file of its own.
  config_with_split = data_trees.data_config(
      pathlib.Path(os.path.dirname(workdir)), config.folder_dir,
      split_file=os.path.join(workdir, loading.SPLIT_FILE))
  read = loading.load(config_with_split, reader_dir, seed=0, write_files=False)
  assert read.assignment == data.assignment
  assert not os.path.exists(reader_dir)
  external = loading.load(config, reader_dir, seed=0, write_files=False, all_test=True)
  assert set(external.assignment.values()) == {'test'}
  assert len(external.split_ids('test')) == len(external.facts) == 80



def test_two_classes_leave_pneumonia_out_and_three_leave_out_ct_without_it(tmp_path, caplog):
  caplog.set_level('INFO')
  root = tmp_path / 'images'
  data_trees.write_folder(str(root), patients_per_stratum=6)
  data_trees.add_cxr_pneumonia(str(root))
  config = data_trees.data_config(tmp_path, root)
  binary = loading.load(config, str(tmp_path / 'binary'), seed=0)
  assert len(binary.facts) == 48 and {fact.record.label for fact in binary.facts} == {0, 1}
  assert binary.report['classes'] == ['normal', 'covid']
  assert binary.report['modalities_left_out'] == {}
  assert '12 images of other classes (pneumonia) left out' in caplog.text

  config.classes = 'normal,covid,pneumonia'
  three = loading.load(config, str(tmp_path / 'three'), seed=0)
  assert {fact.record.modality for fact in three.facts} == {'cxr'}
  assert collections.Counter(fact.record.label for fact in three.facts) == {0: 12, 1: 12, 2: 12}
  assert list(three.report['modalities_left_out']) == ['ct']
  assert 'no pneumonia images' in three.report['modalities_left_out']['ct']
  assert 'Left out the CT images' in caplog.text
  balance = three.report['class_balance']
  assert set(balance['train']) == {'cxr'}
  assert list(balance['train']['cxr']) == ['normal', 'covid', 'pneumonia']
  assert all(count > 0 for count in balance['train']['cxr'].values())


def test_three_classes_without_pneumonia_images_are_refused(tmp_path):
  root = tmp_path / 'images'
  data_trees.write_folder(str(root), patients_per_stratum=2)
  config = data_trees.data_config(tmp_path, root, classes='normal,covid,pneumonia')
  with pytest.raises(sources.DataSourceError,
                     match='No modality has images of every class of --config.data.classes='
                           'normal,covid,pneumonia: the CT images have no pneumonia images; '
                           'the CXR images have no pneumonia images. Add the missing'):
    loading.load(config, str(tmp_path / 'work'), seed=0)
