import csv
import json
import os
import subprocess
import sys

import jax
import numpy as np
import pytest

from configs import default
from hybridcovid import errors, evaluate, experiment, leave_one_source_out, models
from hybridcovid.report import json_format, writer
from hybridcovid.training import checkpoints, optimizers, train
import data_trees

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _config(tmp_path, epochs, folder='images'):
  config = default.get_config()
  config.model.backbones = ('resnet50',)
  config.model.hidden_units = 8
  config.data.folder_dir = str(tmp_path / folder)
  config.data.tfds_dir = str(tmp_path / 'tfds')
  config.data.image_size = 32
  config.train.batch_size = 8
  config.train.epochs = epochs
  return config


def _same(a, b) -> bool:
  """Equal as metrics.json writes them: undefined metrics (NaN in memory, null in the
  file) compare equal to each other."""
  return (json.dumps(json_format.strict_json(a), sort_keys=True)
          == json.dumps(json_format.strict_json(b), sort_keys=True))


def _read(path):
  with open(path) as f:
    return json.load(f)


@pytest.mark.slow
@pytest.mark.subprocess
def test_trains_resumes_reports_and_evaluates_again_and_externally(tmp_path):
  data_trees.write_folder(str(tmp_path / 'images'), patients_per_stratum=10, cxr_sites=2)
  workdir = str(tmp_path / 'work')
  config = _config(tmp_path, epochs=1)
  config.train.head_only_epochs = 1
  config.eval.leave_one_source_out = True
  first = leave_one_source_out.train(config, workdir)
  assert first['selected_epoch'] == 1 and [entry['epoch'] for entry in first['history']] == [1]
  assert sorted(os.listdir(os.path.join(workdir, 'checkpoints'))) == ['1']
  # The head-only epoch changed the head alone: backbone weights and BatchNorm
  # statistics are still the initial ones.
  initial = train.initial_variables(config)
  mesh = train.create_mesh()
  model = models.create_classifier(config.model)
  template = train.abstract_train_state(model, optimizers.create_optimizer(config.train, 1),
                                        32, mesh)
  state, _ = checkpoints.RunCheckpoints(workdir).restore_latest(template)
  for name in ('params', 'batch_stats'):
    saved, fresh = getattr(state, name)['resnet50'], initial[name]['resnet50']
    jax.tree.map(np.testing.assert_array_equal, saved, fresh)
  assert not np.array_equal(state.params['logits']['kernel'], initial['params']['logits']['kernel'])

  config.train.epochs = 2
  config.eval.leave_one_source_out = False  # Its results stay in the report.
  resumed = experiment.train_and_evaluate(
      config, workdir, leave_one_source_out=leave_one_source_out.saved_results(workdir))
  # Epoch 1 came from the checkpoint; only epoch 2 was trained.
  assert sorted(os.listdir(os.path.join(workdir, 'checkpoints'))) == ['1', '2']
  assert _same(resumed['history'][:1], first['history']) and len(resumed['history']) == 2
  report_dir = os.path.join(workdir, writer.REPORT_DIR)
  assert {'metrics.json', 'report.md', 'predictions.csv', 'confusion_matrix.png', 'roc.png',
          'training_curves.png'} <= set(os.listdir(report_dir))
  saved = _read(os.path.join(report_dir, writer.METRICS_FILE))
  with open(os.path.join(report_dir, writer.METRICS_FILE)) as f:
    json.load(f, parse_constant=lambda constant: pytest.fail(f'{constant} in metrics.json'))
  assert saved['selected_epoch'] == resumed['selected_epoch'] in (1, 2)
  # One numbering everywhere: the report, metrics.json and the checkpoint's folder.
  assert [entry['epoch'] for entry in saved['history']] == [1, 2]
  assert os.listdir(os.path.join(workdir, 'best')) == [str(saved['selected_epoch'])]
  assert all(entry['validation_loss'] > 0 for entry in saved['history'])
  # Scaling was checked out of sample; its verdict decides the CSV's columns.
  scaling = saved['operating_point']['scaling']
  with open(os.path.join(report_dir, 'predictions.csv')) as f:
    header = next(csv.reader(f))
  assert ('calibrated_probability' in header) == scaling['used']
  assert ('test_ece_calibrated' in saved['operating_point']) == scaling['used']
  record = checkpoints.RunCheckpoints(workdir).best_record()
  assert record['feature_reference'] is None or len(record['feature_reference']['mean']) == 2048
  test = saved['test']
  assert set(test) >= {'overall', 'cxr', 'ct'}
  # 80 images, patients split 70/20/10: the test split holds 16 of them.
  assert sum(test['overall']['counts'].values()) == 16
  assert sum(test['cxr']['counts'].values()) + sum(test['ct']['counts'].values()) == 16
  assert len(_read(os.path.join(workdir, 'inputs.json'))) == 80

  # Leave one source out: a model per source, trained without it, tested on all of it.
  held_out = _read(os.path.join(workdir, leave_one_source_out.LEAVE_ONE_SOURCE_OUT_DIR,
                                leave_one_source_out.LEAVE_ONE_SOURCE_OUT_SUMMARY))
  assert sorted(held_out) == ['ct-site0', 'cxr-site0', 'cxr-site1']
  assert 'ct-site0 is the only ct source' in held_out['ct-site0']['skipped']
  split = _read(os.path.join(workdir, 'split.json'))['assignment']
  for source in ('cxr-site0', 'cxr-site1'):
    fold = os.path.join(workdir, held_out[source]['workdir'])
    fold_test = _read(os.path.join(fold, writer.REPORT_DIR, writer.METRICS_FILE))['test']
    assert set(fold_test) == {'overall', 'cxr', f'source:{source}'}
    assert sum(fold_test['overall']['counts'].values()) == 20
    # All of the held-out source, and the other sources less their test images.
    others_test = sum(split_name == 'test' and not key.startswith(f'{source}:')
                      for key, split_name in split.items())
    assert len(_read(os.path.join(fold, 'inputs.json'))) == 80 - others_test
    assert _same(saved['leave_one_source_out'][source]['test'], fold_test['overall'])
  markdown = open(os.path.join(report_dir, 'report.md')).read()
  assert '| cxr-site0, held out | 20 | 10 |' in markdown
  assert '- ct-site0: not run.' in markdown

  # The shortcut probe saw the validation and test images; Grad-CAM images were written.
  validation_images = list(split.values()).count('validation')
  assert saved['shortcut_probe']['images'] == 16 + validation_images
  assert saved['shortcut_probe']['source']['classes'] == 3
  assert '## Shortcut check' in markdown
  examples = saved['explanations']['examples']
  assert examples and all(os.path.isfile(os.path.join(report_dir, row['image']))
                          for row in examples)
  assert os.listdir(os.path.join(workdir, experiment.TENSORBOARD_DIR))

  # Evaluating again gives the same numbers from the selected checkpoint.
  again = evaluate.evaluate(_config(tmp_path, epochs=2), workdir,
                            leave_one_source_out.saved_results(workdir))
  assert again['test']['overall']['counts'] == test['overall']['counts']
  np.testing.assert_allclose(again['test']['overall']['auc'], test['overall']['auc'])

  # Another data set is evaluated whole, into its own report.
  data_trees.write_folder(str(tmp_path / 'other'), patients_per_stratum=2)
  external = evaluate.evaluate(_config(tmp_path, epochs=2, folder='other'), workdir,
                               leave_one_source_out.saved_results(workdir))
  assert sum(external['test']['overall']['counts'].values()) == 16
  [name] = os.listdir(os.path.join(workdir, evaluate.EXTERNAL_DIR))
  assert name.startswith('other-')
  external_report = os.path.join(workdir, evaluate.EXTERNAL_DIR, name, writer.REPORT_DIR)
  assert _same(_read(os.path.join(external_report, writer.METRICS_FILE))['test'],
               external['test'])
  assert 'leave_one_source_out' not in external  # About the run, not the external data.
  refused = _config(tmp_path, epochs=2)
  refused.data.held_out_source = 'cxr-site0'
  with pytest.raises(errors.UserError, match='held_out_source chooses what a model trains'):
    evaluate.evaluate(refused, workdir)
  # The run's own report is untouched.
  assert _same(_read(os.path.join(report_dir, writer.METRICS_FILE))['test'], test)

  # Every test metric has its patient-bootstrap interval; the operating point
  # is the one kept with the selected checkpoint, fitted on validation.
  for group in ('overall', 'cxr', 'ct'):
    for name in ('accuracy', 'auc'):
      low, high = test[group]['intervals'][name]
      assert low <= test[group][name] <= high or np.isnan(test[group][name])
  kept = checkpoints.RunCheckpoints(workdir).best_record()['operating_point']
  assert saved['operating_point']['threshold'] == kept['threshold']
  assert saved['operating_point']['temperature'] == kept['temperature'] > 0
  assert 'reliability.png' in os.listdir(report_dir)
  assert '## Operating point and calibration' in open(
      os.path.join(report_dir, 'report.md')).read()

  # Predict, without TensorFlow, on a folder of the run's images and on bad files.
  bad = tmp_path / 'bad'
  bad.mkdir()
  (bad / 'notes.txt').write_text('not an image')
  (bad / 'broken.png').write_bytes(b'\x89PNG\r\n\x1a\n' + bytes(20))
  program = os.path.join(ROOT, 'tests', 'programs', 'predict_without_tensorflow.py')
  done = subprocess.run([sys.executable, program, workdir, str(tmp_path / 'images' / 'cxr'),
                         str(bad), str(tmp_path / 'missing.png')],
                        cwd=ROOT, capture_output=True, text=True)
  assert done.returncode == 0, done.stderr
  predicted = _read(os.path.join(workdir, 'predict', 'predictions.json'))
  assert len(predicted['predictions']) == 40
  assert sorted(os.path.basename(p['path']) for p in predicted['unreadable']) == [
      'broken.png', 'missing.png', 'notes.txt']
  assert 'not a PNG, JPEG or DICOM file' in next(
      p['reason'] for p in predicted['unreadable'] if p['path'].endswith('notes.txt'))
  assert predicted['threshold'] == kept['threshold']
  for row in predicted['predictions']:
    assert os.path.isfile(os.path.join(workdir, 'predict', row['gradcam']))
    assert row['evidence_shares'] in ({'resnet50': 1.0}, {'resnet50': 0.0})
  # The same images score as in the run's evaluation (resizing differs by rounding only).
  with open(os.path.join(report_dir, 'predictions.csv')) as f:
    evaluated = {row['key'].split(':', 1)[1]: float(row['probability'])
                 for row in csv.DictReader(f) if row['modality'] == 'cxr'}
  compared = 0
  for row in predicted['predictions']:
    relpath = os.path.relpath(row['path'], tmp_path / 'images')
    if relpath in evaluated:
      assert abs(row['probability'] - evaluated[relpath]) < 0.01
      assert row['decision'] == ('COVID' if row['probability'] >= kept['threshold']
                                 else 'normal')
      compared += 1
  assert compared >= 4


@pytest.mark.slow
@pytest.mark.skipif(not os.path.isdir(data_trees.REALMINI),
                    reason='../shared/data/realmini (real CXR and CT images) is absent')
def test_a_short_run_on_real_images_completes_end_to_end_with_xlas_convolutions(tmp_path):
  config = _config(tmp_path, epochs=1)
  config.data.folder_dir = os.path.abspath(data_trees.REALMINI)
  config.train.batch_size = 32
  # What a GPU runs: XLA's convolutions, grouped depthwise convolutions and pooling.
  config.model.backbones = ('resnet50', 'efficientnetb0')
  config.model.conv_impl = 'xla'
  result = experiment.train_and_evaluate(config, str(tmp_path / 'work'))
  counts = result['test']['overall']['counts']
  # 1,000 images, 20% of the patients in test, one near duplicate dropped.
  assert 150 <= sum(counts.values()) <= 250
  assert sum(result['test']['cxr']['counts'].values()) > 0
  assert sum(result['test']['ct']['counts'].values()) > 0
  assert (tmp_path / 'work' / writer.REPORT_DIR / 'report.md').is_file()
  record = checkpoints.RunCheckpoints(str(tmp_path / 'work')).best_record()
  assert record['config']['model']['conv_impl'] == 'xla'
  assert 0.0 <= result['test']['overall']['auc'] <= 1.0
