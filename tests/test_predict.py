import contextlib
import csv
import json
import os
import subprocess
import sys

import numpy as np
from PIL import Image
import pytest

from hybridcovid import errors, experiment, predict
from hybridcovid.data.dicom_files import write_dicom
from hybridcovid.evaluation import patients
from hybridcovid.training import checkpoints
import data_trees
import test_experiment

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope='module')
def root(tmp_path_factory):
  """A one-epoch ResNet50 run (`work/`) on 16 images of 32x32 (`images/`); bad files
  (`bad/`) and an empty folder (`empty/`)."""
  root = tmp_path_factory.mktemp('predict')
  data_trees.write_folder(str(root / 'images'), patients_per_stratum=4, images_per_patient=1)
  config = test_experiment._config(root, epochs=1)
  config.data.split_fractions = (0.5, 0.25, 0.25)
  config.eval.bootstrap_resamples = 10
  config.eval.gradcam_per_outcome = 0
  experiment.train_and_evaluate(config, str(root / 'work'))
  (root / 'bad').mkdir()
  (root / 'bad' / 'notes.txt').write_text('not an image')
  (root / 'bad' / 'broken.png').write_bytes(b'\x89PNG\r\n\x1a\n' + bytes(20))
  (root / 'empty').mkdir()
  return root


def _main(root, *inputs, mode='predict'):
  flags = [f'--input={path}' for path in inputs]
  if mode == 'evaluate':
    flags = ['--config=configs/pooled_resnet50.py']
  return subprocess.run([sys.executable, 'main.py', f'--mode={mode}', f'--workdir={root}/work',
                         *flags], cwd=ROOT, capture_output=True, text=True)


def _results(root) -> dict:
  """The bytes of each file in WORKDIR/predict/."""
  folder = root / 'work' / predict.PREDICT_DIR
  return {path.name: path.read_bytes() for path in folder.iterdir()} if folder.is_dir() else {}


@pytest.mark.subprocess
def test_nothing_to_score_exits_with_one_line_naming_the_inputs(root):
  before = _results(root)
  result = _main(root, root / 'missing.png', root / 'empty')
  assert result.returncode == 1
  assert result.stderr.strip().splitlines()[-1] == (
      f'error: Nothing to score: {root}/missing.png: no such file or folder; {root}/empty: a '
      'folder without files. Name PNG, JPEG or DICOM files, or folders holding them, with '
      f'--input. Nothing was written to {root}/work/predict.')
  assert 'Traceback' not in result.stderr
  assert _results(root) == before


def test_a_failed_run_leaves_the_previous_results_as_they_were(root, monkeypatch):
  workdir = str(root / 'work')
  predict.predict(workdir, [str(root / 'images' / 'cxr' / 'COVID')])
  before = _results(root)
  assert set(before) == {'predictions.csv', 'predictions.json', 'studies.csv'}
  with pytest.raises(predict.PredictionError, match=(
      f'^Nothing to score: {root}/bad/broken.png: truncated or corrupt PNG .*; '
      f'{root}/bad/notes.txt: not a PNG, JPEG or DICOM file .*Fix or replace the files that '
      'cannot be read, or name others with --input.')):
    predict.predict(workdir, [str(root / 'bad')])
  assert _results(root) == before

  def fail(*args, **kwargs):
    raise OSError('No space left on device')

  monkeypatch.setattr(predict.json_format, 'dump_json', fail)  # The CSV is written, the JSON is not.
  with pytest.raises(OSError, match='No space left'):
    predict.predict(workdir, [str(root / 'images' / 'ct')])
  assert _results(root) == before  # No new CSV, no temporary file left.


def test_unreadable_files_are_rows_of_the_csv_with_advice_for_prediction(root, caplog):
  inputs = [root / 'images' / 'cxr' / 'Normal', root / 'bad', root / 'missing.png']
  result = predict.predict(str(root / 'work'), [str(path) for path in inputs])
  with open(root / 'work' / 'predict' / 'predictions.csv') as f:
    rows = list(csv.DictReader(f))
  assert [os.path.relpath(row['path'], root) for row in rows] == [
      'images/cxr/Normal/0_0.png', 'images/cxr/Normal/1_0.png', 'images/cxr/Normal/2_0.png',
      'images/cxr/Normal/3_0.png', 'bad/broken.png', 'bad/notes.txt', 'missing.png']
  assert all(row['problem'] == '' and row['decision'] in ('COVID', 'normal')
             for row in rows[:4])
  problems = {os.path.basename(row['path']): row['problem'] for row in rows[4:]}
  assert problems == {
      'broken.png': 'truncated or corrupt PNG (Pillow says: cannot identify image file).',
      'notes.txt': "not a PNG, JPEG or DICOM file (it starts with b'not an i').",
      'missing.png': 'no such file or folder'}
  assert all(row['probability'] == row['decision'] == row.get('calibrated_probability', '') == ''
             for row in rows[4:])
  assert {os.path.basename(problem['path']): problem['reason']
          for problem in result['unreadable']} == problems
  warnings = [record.getMessage() for record in caplog.records if record.levelname == 'WARNING']
  assert 'skip_bad' not in ' '.join(warnings)
  for row in rows[4:]:
    [line] = [line for line in warnings if row['path'] in line]
    assert line == f'Not scored: {row["path"]}: {row["problem"]}'
  assert (f'3 files were not scored (listed in {root}/work/predict/predictions.csv with the '
          'problem): fix or remove each, or leave it out of --input.') in warnings


def test_images_unlike_the_training_data_are_flagged_and_warned_about(root, caplog):
  rng = np.random.default_rng(0)
  (root / 'foreign').mkdir(exist_ok=True)
  Image.fromarray(rng.integers(0, 256, (64, 64, 3), np.uint8)).save(
      root / 'foreign' / 'noise.png')
  familiar = root / 'images' / 'ct' / 'COVID' / '0_0.png'
  result = predict.predict(str(root / 'work'), [str(familiar), str(root / 'foreign')])
  threshold = checkpoints.open_trained_run(str(root / 'work')).best_record()[
      'feature_reference']['threshold']
  familiar_row, noise_row = result['predictions']
  assert noise_row['unlike_training_data'] and noise_row['feature_distance'] > threshold
  assert familiar_row['feature_distance'] < noise_row['feature_distance']
  with open(root / 'work' / 'predict' / 'predictions.csv') as f:
    rows = list(csv.DictReader(f))
  assert [row['unlike_training_data'] for row in rows][1] == 'True'
  warnings = [record.getMessage() for record in caplog.records if record.levelname == 'WARNING']
  [warning] = [line for line in warnings if 'look unlike the data' in line]
  assert f'({root}/foreign/noise.png)' in warning


def _studies(root) -> list[dict]:
  with open(root / 'work' / predict.PREDICT_DIR / predict.STUDIES_FILE) as f:
    return list(csv.DictReader(f))


def _check_study_decisions(root, result, expected):
  """Each study of `result` holds the images `expected` ({study: image file names}) says,
  its probability aggregates theirs, and its decision is at the validation patients'
  threshold."""
  point = checkpoints.open_trained_run(str(root / 'work')).best_record()[
      'patient_operating_point']
  assert result['study_threshold'] == point['threshold']
  assert {row['study']: sorted(os.path.basename(image['path']) for image in result['predictions']
                               if image['study'] == row['study'])
          for row in result['studies']} == expected
  for row in result['studies']:
    own = [image['probability'] for image in result['predictions']
           if image['study'] == row['study']]
    assert row['images'] == len(own)
    assert row['probability'] == pytest.approx(patients.aggregate(own, point['aggregation']))
    assert row['decision'] == ('COVID' if row['probability'] >= point['threshold'] else 'normal')
  written = _studies(root)
  assert [(row['study'], int(row['images']), row['decision']) for row in written] == [
      (row['study'], row['images'], row['decision']) for row in result['studies']]


def test_each_folder_is_a_study_when_asked(root):
  folder = root / 'images' / 'cxr'
  result = predict.predict(str(root / 'work'), [str(folder)], studies_by_folder=True)
  _check_study_decisions(root, result, {
      str(folder / 'COVID'): ['0_0.png', '1_0.png', '2_0.png', '3_0.png'],
      str(folder / 'Normal'): ['0_0.png', '1_0.png', '2_0.png', '3_0.png']})
  # Without the flag every image is its own study.
  alone = predict.predict(str(root / 'work'), [str(folder)])
  assert [row['images'] for row in alone['studies']] == [1] * 8


def test_a_csv_of_inputs_groups_images_by_its_patient_id(root):
  (root / 'lists').mkdir(exist_ok=True)
  listing = root / 'lists' / 'inputs.csv'
  listing.write_text('path,patient_id\n../images/ct/COVID/0_0.png,x\n'
                     '../images/ct/COVID/1_0.png,x\n../images/ct/Normal/0_0.png,y\n'
                     '../images/ct/Normal/1_0.png,\n')
  result = predict.predict(str(root / 'work'), [str(listing)])
  _check_study_decisions(root, result, {'x': ['0_0.png', '1_0.png'], 'y': ['0_0.png'],
                                        str(root / 'images' / 'ct' / 'Normal' / '1_0.png'):
                                        ['1_0.png']})
  (root / 'lists' / 'bad.csv').write_text('file,patient\na.png,1\n')
  with pytest.raises(errors.UserError, match=f'^{root}/lists/bad.csv: a CSV of inputs needs a '
                     "path column .*its header is \\['file', 'patient'\\]"):
    predict.predict(str(root / 'work'), [str(root / 'lists' / 'bad.csv')])


def test_dicom_files_of_one_study_get_one_decision(root):
  folder = root / 'dicom'
  folder.mkdir(exist_ok=True)
  with Image.open(root / 'images' / 'ct' / 'COVID' / '0_0.png') as image:
    pixels = np.asarray(image.convert('L'))
  for index, study in enumerate(['1.2.3.1', '1.2.3.1', '1.2.3.2']):
    write_dicom(folder / f'slice{index}.dcm', np.roll(pixels, index, axis=0), Modality='CT',
                StudyInstanceUID=study)
  result = predict.predict(str(root / 'work'), [str(folder)], studies_by_folder=True)
  _check_study_decisions(root, result, {'1.2.3.1': ['slice0.dcm', 'slice1.dcm'],
                                        '1.2.3.2': ['slice2.dcm']})
  assert {row['modality'] for row in result['studies']} == {'ct'}


@contextlib.contextmanager
def _damaged(checkpoint):
  """Flips bytes in the middle of each array file of `checkpoint`, and back after."""
  paths = [os.path.join(folder, name) for folder, _, names in os.walk(checkpoint / 'state')
           for name in names if os.path.basename(folder) == 'd']  # OCDBT's data files.

  def flip():
    for path in paths:
      with open(path, 'r+b') as f:
        f.seek(os.path.getsize(path) // 2)
        data = f.read(16)
        f.seek(-len(data), os.SEEK_CUR)
        f.write(bytes(byte ^ 0xff for byte in data))

  flip()
  try:
    yield
  finally:
    flip()


@pytest.mark.subprocess
def test_a_damaged_checkpoint_ends_in_one_line_that_names_it_and_the_fix(root):
  best, latest = root / 'work' / 'best' / '1', root / 'work' / 'checkpoints'
  with _damaged(best):
    for result in (_main(root, root / 'images'), _main(root, mode='evaluate')):
      assert result.returncode == 1
      lines = result.stderr.strip().splitlines()
      assert lines[-1].startswith(
          f'error: The selected checkpoint {best} (epoch 1) cannot be restored (Orbax says: '
      ), result.stderr[-3000:]
      assert lines[-1].endswith(
          f'{latest} holds epoch 1, the selected one among them: replace the damaged copy with '
          f'it (rm -r {best} && cp -r {latest}/1 {best}), or train again with a new --workdir.')
      assert 'Traceback' not in result.stderr, result.stderr[-3000:]
      assert 'Event loop is closed' not in result.stderr


@pytest.mark.subprocess
def test_predict_logs_the_checkpoint_not_the_default_config(root):
  result = _main(root, root / 'images' / 'ct' / 'COVID' / '0_0.png')
  assert result.returncode == 0, result.stderr
  assert 'Config:' not in result.stderr and 'epochs: 100' not in result.stderr
  assert (f'Scoring with {root}/work/best/1, the epoch selected on validation (1 of 1): '
          'resnet50 trained on cxr + ct, 32x32 images (pad).') in result.stderr
  with open(root / 'work' / 'predict' / 'predictions.json') as f:
    assert len(json.load(f)['predictions']) == 1
