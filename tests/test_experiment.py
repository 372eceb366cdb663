import csv
import json
import os
import subprocess
import sys
import types

import jax
import numpy as np
import pytest

from configs import default
from hybridcovid import errors, evaluate, experiment, leave_one_source_out, models, predict
from hybridcovid.evaluation import multiclass, patients
from hybridcovid.report import json_format, writer
from hybridcovid.training import checkpoints, optimizers, train
import data_trees

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# Every test here trains, or reads the run the module trains once.
pytestmark = pytest.mark.slow


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


@pytest.fixture(scope='module')
def trained(tmp_path_factory):
  """One run trained for an epoch (head only, with leave one source out), then resumed
  for a second: its folders, results and what its first epoch left."""
  root = tmp_path_factory.mktemp('experiment')
  data_trees.write_folder(str(root / 'images'), patients_per_stratum=10, cxr_sites=2)
  workdir = str(root / 'work')
  config = _config(root, epochs=1)
  config.train.head_only_epochs = 1
  config.eval.leave_one_source_out = True
  first = leave_one_source_out.train(config, workdir)
  checkpoints_after_first = sorted(os.listdir(os.path.join(workdir, 'checkpoints')))
  model = models.create_classifier(config.model, 2)
  template = train.abstract_train_state(model, optimizers.create_optimizer(config.train, 1),
                                        32, train.create_mesh())
  state_after_first, _ = checkpoints.RunCheckpoints(workdir).restore_latest(template)
  config.train.epochs = 2
  config.eval.leave_one_source_out = False  # Its results stay in the report.
  resumed = experiment.train_and_evaluate(
      config, workdir, leave_one_source_out=leave_one_source_out.saved_results(workdir))
  report_dir = os.path.join(workdir, writer.REPORT_DIR)
  return types.SimpleNamespace(
      root=root, workdir=workdir, config=config, first=first, resumed=resumed,
      checkpoints_after_first=checkpoints_after_first, state_after_first=state_after_first,
      report_dir=report_dir, saved=_read(os.path.join(report_dir, writer.METRICS_FILE)),
      split=_read(os.path.join(workdir, 'split.json'))['assignment'],
      kept=checkpoints.RunCheckpoints(workdir).best_record())


def test_a_head_only_epoch_trains_the_head_alone(trained):
  assert trained.first['selected_epoch'] == 1
  assert [entry['epoch'] for entry in trained.first['history']] == [1]
  assert trained.checkpoints_after_first == ['1']
  # Backbone weights and BatchNorm statistics are still the initial ones.
  initial = train.initial_variables(trained.config)
  state = trained.state_after_first
  for name in ('params', 'batch_stats'):
    jax.tree.map(np.testing.assert_array_equal, getattr(state, name)['resnet50'],
                 initial[name]['resnet50'])
  assert not np.array_equal(state.params['logits']['kernel'], initial['params']['logits']['kernel'])


def test_a_resumed_run_trains_only_the_epochs_left(trained):
  assert sorted(os.listdir(os.path.join(trained.workdir, 'checkpoints'))) == ['1', '2']
  assert _same(trained.resumed['history'][:1], trained.first['history'])
  assert len(trained.resumed['history']) == 2


def test_the_report_numbers_epochs_as_the_checkpoints_do_in_strict_json(trained):
  assert {'metrics.json', 'report.md', 'predictions.csv', 'confusion_matrix.png', 'roc.png',
          'training_curves.png', 'reliability.png'} <= set(os.listdir(trained.report_dir))
  with open(os.path.join(trained.report_dir, writer.METRICS_FILE)) as f:
    json.load(f, parse_constant=lambda constant: pytest.fail(f'{constant} in metrics.json'))
  saved = trained.saved
  assert saved['selected_epoch'] == trained.resumed['selected_epoch'] in (1, 2)
  assert [entry['epoch'] for entry in saved['history']] == [1, 2]
  assert os.listdir(os.path.join(trained.workdir, 'best')) == [str(saved['selected_epoch'])]
  assert all(entry['validation_loss'] > 0 for entry in saved['history'])


def test_the_scaling_verdict_decides_the_predictions_columns(trained):
  # Scaling was checked out of sample; its verdict decides the CSV's columns.
  scaling = trained.saved['operating_point']['scaling']
  with open(os.path.join(trained.report_dir, 'predictions.csv')) as f:
    header = next(csv.reader(f))
  assert ('calibrated_probability' in header) == scaling['used']
  assert ('test_ece_calibrated' in trained.saved['operating_point']) == scaling['used']
  reference = trained.kept['feature_reference']
  assert reference is None or len(reference['mean']) == 2048


def test_the_test_split_holds_a_fifth_of_the_patients_by_modality(trained):
  test = trained.saved['test']
  assert set(test) >= {'overall', 'cxr', 'ct'}
  # 80 images, patients split 70/20/10: the test split holds 16 of them.
  assert sum(test['overall']['counts'].values()) == 16
  assert sum(test['cxr']['counts'].values()) + sum(test['ct']['counts'].values()) == 16
  assert len(_read(os.path.join(trained.workdir, 'inputs.json'))) == 80


def test_each_source_left_out_is_tested_whole_by_a_model_trained_without_it(trained):
  held_out = _read(os.path.join(trained.workdir, leave_one_source_out.LEAVE_ONE_SOURCE_OUT_DIR,
                                leave_one_source_out.LEAVE_ONE_SOURCE_OUT_SUMMARY))
  assert sorted(held_out) == ['ct-site0', 'cxr-site0', 'cxr-site1']
  assert 'ct-site0 is the only ct source' in held_out['ct-site0']['skipped']
  for source in ('cxr-site0', 'cxr-site1'):
    fold = os.path.join(trained.workdir, held_out[source]['workdir'])
    fold_test = _read(os.path.join(fold, writer.REPORT_DIR, writer.METRICS_FILE))['test']
    assert set(fold_test) == {'overall', 'cxr', f'source:{source}'}
    assert sum(fold_test['overall']['counts'].values()) == 20
    # All of the held-out source, and the other sources less their test images.
    others_test = sum(split_name == 'test' and not key.startswith(f'{source}:')
                      for key, split_name in trained.split.items())
    assert len(_read(os.path.join(fold, 'inputs.json'))) == 80 - others_test
    assert _same(trained.saved['leave_one_source_out'][source]['test'], fold_test['overall'])
  markdown = open(os.path.join(trained.report_dir, 'report.md')).read()
  assert '| cxr-site0, held out | 20 | 10 |' in markdown
  assert '- ct-site0: not run.' in markdown


def test_the_report_has_the_shortcut_probe_grad_cam_and_tensorboard(trained):
  saved = trained.saved
  # The shortcut probe saw the validation and test images.
  validation_images = list(trained.split.values()).count('validation')
  assert saved['shortcut_probe']['images'] == 16 + validation_images
  assert saved['shortcut_probe']['source']['classes'] == 3
  assert '## Shortcut check' in open(os.path.join(trained.report_dir, 'report.md')).read()
  examples = saved['explanations']['examples']
  assert examples and all(os.path.isfile(os.path.join(trained.report_dir, row['image']))
                          for row in examples)
  assert os.listdir(os.path.join(trained.workdir, experiment.TENSORBOARD_DIR))


def test_every_metric_has_its_interval_and_the_operating_point_is_validations(trained):
  test = trained.saved['test']
  for group in ('overall', 'cxr', 'ct'):
    for name in ('accuracy', 'auc'):
      low, high = test[group]['intervals'][name]
      assert low <= test[group][name] <= high or np.isnan(test[group][name])
  kept = trained.kept['operating_point']
  assert trained.saved['operating_point']['threshold'] == kept['threshold']
  assert trained.saved['operating_point']['temperature'] == kept['temperature'] > 0
  assert '## Operating point and calibration' in open(
      os.path.join(trained.report_dir, 'report.md')).read()


def test_the_report_decides_per_patient_at_a_threshold_fitted_on_validation_patients(trained):
  saved = _read(os.path.join(trained.report_dir, writer.METRICS_FILE))['patient']
  assert saved['images'] == 2 * saved['patients']  # Two images per patient.
  kept = trained.kept['patient_operating_point']
  if saved['aggregation'] == kept['aggregation']:
    assert saved['operating_point']['threshold'] == kept['threshold']
  with open(os.path.join(trained.report_dir, 'predictions.csv')) as f:
    images = list(csv.DictReader(f))
  with open(os.path.join(trained.report_dir, 'patient_predictions.csv')) as f:
    rows = list(csv.DictReader(f))
  assert len(rows) == saved['patients'] == sum(saved['test']['overall']['counts'].values())
  for row in rows:
    own = [float(image['probability']) for image in images
           if (image['patient_id'], image['modality']) == (row['patient_id'], row['modality'])]
    assert len(own) == int(row['images']) == 2
    assert float(row['probability']) == pytest.approx(
        patients.aggregate(own, saved['aggregation']), abs=1e-9)
  markdown = open(os.path.join(trained.report_dir, 'report.md')).read()
  assert '## Per patient' in markdown and '| Data | Patients | COVID |' in markdown


def test_evaluating_again_gives_the_same_numbers(trained):
  config = _config(trained.root, epochs=2)
  config.eval.patient_aggregation = 'max'  # Fitted again on the validation patients.
  again = evaluate.evaluate(config, trained.workdir,
                            leave_one_source_out.saved_results(trained.workdir))
  test = trained.saved['test']
  assert again['test']['overall']['counts'] == test['overall']['counts']
  np.testing.assert_allclose(again['test']['overall']['auc'], test['overall']['auc'])
  assert trained.saved['patient']['operating_point']['aggregation'] == 'mean_logit'
  assert again['patient']['operating_point']['aggregation'] == 'max'
  config.eval.patient_aggregation = 'median'
  with pytest.raises(errors.UserError, match='patient_aggregation'):
    evaluate.evaluate(config, trained.workdir)


def test_another_data_set_is_evaluated_whole_into_its_own_report(trained):
  data_trees.write_folder(str(trained.root / 'other'), patients_per_stratum=2)
  external = evaluate.evaluate(_config(trained.root, epochs=2, folder='other'), trained.workdir,
                               leave_one_source_out.saved_results(trained.workdir))
  assert sum(external['test']['overall']['counts'].values()) == 16
  [name] = os.listdir(os.path.join(trained.workdir, evaluate.EXTERNAL_DIR))
  assert name.startswith('other-')
  external_report = os.path.join(trained.workdir, evaluate.EXTERNAL_DIR, name, writer.REPORT_DIR)
  assert _same(_read(os.path.join(external_report, writer.METRICS_FILE))['test'],
               external['test'])
  assert 'leave_one_source_out' not in external  # About the run, not the external data.
  # Without validation images, the patients' operating point is the one kept with the run.
  assert external['patient']['operating_point']['threshold'] == (
      trained.kept['patient_operating_point']['threshold'])
  refused = _config(trained.root, epochs=2)
  refused.data.held_out_source = 'cxr-site0'
  with pytest.raises(errors.UserError, match='held_out_source chooses what a model trains'):
    evaluate.evaluate(refused, trained.workdir)
  # The run's own report is untouched.
  assert _same(_read(os.path.join(trained.report_dir, writer.METRICS_FILE))['test'],
               trained.saved['test'])


@pytest.mark.subprocess
def test_prediction_without_tensorflow_scores_as_the_evaluation_did(trained):
  bad = trained.root / 'bad'
  bad.mkdir()
  (bad / 'notes.txt').write_text('not an image')
  (bad / 'broken.png').write_bytes(b'\x89PNG\r\n\x1a\n' + bytes(20))
  program = os.path.join(ROOT, 'tests', 'programs', 'predict_without_tensorflow.py')
  done = subprocess.run([sys.executable, program, trained.workdir,
                         str(trained.root / 'images' / 'cxr'), str(bad),
                         str(trained.root / 'missing.png')],
                        cwd=ROOT, capture_output=True, text=True)
  assert done.returncode == 0, done.stderr
  predicted = _read(os.path.join(trained.workdir, 'predict', 'predictions.json'))
  assert len(predicted['predictions']) == 40
  assert sorted(os.path.basename(p['path']) for p in predicted['unreadable']) == [
      'broken.png', 'missing.png', 'notes.txt']
  assert 'not a PNG, JPEG or DICOM file' in next(
      p['reason'] for p in predicted['unreadable'] if p['path'].endswith('notes.txt'))
  threshold = trained.kept['operating_point']['threshold']
  assert predicted['threshold'] == threshold
  for row in predicted['predictions']:
    assert os.path.isfile(os.path.join(trained.workdir, 'predict', row['gradcam']))
    assert row['evidence_shares'] in ({'resnet50': 1.0}, {'resnet50': 0.0})
  # The same images score as in the run's evaluation (resizing differs by rounding only).
  with open(os.path.join(trained.report_dir, 'predictions.csv')) as f:
    evaluated = {row['key'].split(':', 1)[1]: float(row['probability'])
                 for row in csv.DictReader(f) if row['modality'] == 'cxr'}
  compared = 0
  for row in predicted['predictions']:
    relpath = os.path.relpath(row['path'], trained.root / 'images')
    if relpath in evaluated:
      assert abs(row['probability'] - evaluated[relpath]) < 0.01
      assert row['decision'] == ('COVID' if row['probability'] >= threshold else 'normal')
      compared += 1
  assert compared >= 4


@pytest.mark.skipif(not os.path.isdir(data_trees.REALMINI),
                    reason='../shared/data/realmini (real CXR and CT images) is absent')
def test_a_short_run_on_real_images_completes_end_to_end_with_xlas_convolutions(tmp_path):
  config = _config(tmp_path, epochs=1)
  config.data.folder_dir = os.path.abspath(data_trees.REALMINI)
  config.train.batch_size = 32
  # What a GPU runs: XLA's convolutions, grouped depthwise convolutions and pooling.
  config.model.backbones = ('resnet50', 'efficientnetb0')
  config.model.conv_impl = 'xla'
  config.eval.bootstrap_resamples = 50
  config.eval.gradcam_per_outcome = 1
  result = experiment.train_and_evaluate(config, str(tmp_path / 'work'))
  counts = result['test']['overall']['counts']
  # 1,000 images, 20% of the patients in test, one near duplicate dropped.
  assert 150 <= sum(counts.values()) <= 250
  assert sum(result['test']['cxr']['counts'].values()) > 0
  assert sum(result['test']['ct']['counts'].values()) > 0
  assert (tmp_path / 'work' / writer.REPORT_DIR / 'report.md').is_file()
  # Realmini's CT slices come in groups of 2-4 per patient, its radiographs one each.
  by_patient, by_image = result['patient']['test'], result['test']
  assert sum(by_patient['ct']['counts'].values()) < sum(by_image['ct']['counts'].values())
  assert by_patient['cxr']['counts'] == by_image['cxr']['counts']
  record = checkpoints.RunCheckpoints(str(tmp_path / 'work')).best_record()
  assert record['config']['model']['conv_impl'] == 'xla'
  assert 0.0 <= result['test']['overall']['auc'] <= 1.0


def test_three_classes_train_report_explain_and_predict(tmp_path):
  data_trees.write_folder(str(tmp_path / 'images'), patients_per_stratum=6, images_per_patient=1)
  data_trees.add_cxr_pneumonia(str(tmp_path / 'images'), images_per_patient=1)
  config = _config(tmp_path, epochs=1)
  config.data.classes = 'normal,covid,pneumonia'
  config.data.split_fractions = (0.5, 0.25, 0.25)
  config.eval.bootstrap_resamples = 20
  config.eval.gradcam_per_outcome = 1
  workdir = str(tmp_path / 'work')
  result = experiment.train_and_evaluate(config, workdir)
  report_dir = os.path.join(workdir, writer.REPORT_DIR)
  assert {'class_confusion_matrix.png', 'class_roc.png'} <= set(os.listdir(report_dir))
  with open(os.path.join(report_dir, 'predictions.csv'), newline='') as f:
    rows = list(csv.DictReader(f))
  assert {row['modality'] for row in rows} == {'cxr'}  # The CT data have no pneumonia.
  # The run records the modality it trained on: external evaluation keeps to it.
  kept = checkpoints.RunCheckpoints(workdir).best_record()['config']['data']['modalities']
  assert kept == ['cxr']
  names = ('normal', 'covid', 'pneumonia')
  probabilities = np.array([[float(row[f'probability_{name}']) for name in names]
                            for row in rows])
  np.testing.assert_allclose(probabilities.sum(axis=1), 1, rtol=1e-5)
  assert [row['predicted_class'] for row in rows] == [names[i] for i in
                                                      probabilities.argmax(axis=1)]
  assert [float(row['probability']) for row in rows] == list(probabilities[:, 1])
  assert [int(row['label']) for row in rows] == [int(row['class'] == 'covid') for row in rows]
  overall = _read(os.path.join(report_dir, writer.METRICS_FILE))['test_classes']['overall']
  expected = multiclass.class_metrics([names.index(row['class']) for row in rows],
                                      probabilities, names)
  assert overall['confusion_matrix'] == expected['confusion_matrix']
  assert np.sum(overall['confusion_matrix']) == len(rows)
  assert overall['macro_auc'] == pytest.approx(expected['macro_auc'])
  assert result['validation']['classes']['accuracy'] == pytest.approx(
      multiclass.selection_value(result['validation'], 'accuracy'))
  markdown = open(os.path.join(report_dir, 'report.md')).read()
  assert '## Classes' in markdown and 'The CT images were left out' in markdown
  assert result['explanations']['examples']

  predicted = predict.predict(workdir, [str(tmp_path / 'images' / 'cxr')], with_gradcam=True)
  for row in predicted['predictions']:
    by_class = [row[f'probability_{name}'] for name in names]
    assert sum(by_class) == pytest.approx(1, rel=1e-5)
    assert row['probability'] == by_class[1]
    assert row['predicted_class'] == names[int(np.argmax(by_class))]
    assert row['decision'] == ('COVID' if row['probability'] >= predicted['threshold']
                               else 'not COVID')
    assert os.path.isfile(os.path.join(workdir, predict.PREDICT_DIR, row['gradcam']))
  with open(os.path.join(workdir, predict.PREDICT_DIR, predict.CSV_FILE), newline='') as f:
    header = next(csv.reader(f))
  assert header[header.index('decision') + 1:header.index('decision') + 5] == [
      'predicted_class', 'probability_normal', 'probability_covid', 'probability_pneumonia']

  # Evaluating again with the config's modalities, CT included, is not external validation:
  # the model scores only the CXR images it was trained on.
  assert config.data.modalities == ('cxr',)
  config.data.modalities = ('cxr', 'ct')
  again = evaluate.evaluate(config, workdir)
  assert not os.path.exists(os.path.join(workdir, evaluate.EXTERNAL_DIR))
  assert again['test_classes']['overall']['confusion_matrix'] == overall['confusion_matrix']


def test_a_selection_metric_validation_does_not_compute_is_refused_before_training():
  config = default.get_config()
  config.train.selection_metric = 'macro_auc'
  with pytest.raises(errors.UserError, match=r'^--config.train.selection_metric=macro_auc: '
                                             r'choose one of accuracy, recall, .*, auc\.$'):
    experiment.check_selection_metric(config)
  config.data.classes = 'normal,covid,pneumonia'
  experiment.check_selection_metric(config)
  assert multiclass.selection_value({'accuracy': 0.5, 'classes': {'accuracy': 0.8}},
                                    'accuracy') == 0.8
  assert multiclass.selection_value({'accuracy': 0.5, 'auc': 0.7,
                                     'classes': {'accuracy': 0.8}}, 'auc') == 0.7


def test_resuming_checkpoints_of_another_model_is_refused_before_restoring(trained):
  run = checkpoints.RunCheckpoints(trained.workdir)
  config = _config(trained.root, epochs=2)
  experiment.check_resumable(config, run, trained.workdir)
  config.data.classes = 'normal,covid,pneumonia'
  config.model.hidden_units = 16
  with pytest.raises(errors.UserError) as raised:
    experiment.check_resumable(config, run, trained.workdir)
  assert str(raised.value) == (
      f'{trained.workdir} holds checkpoints of another model: --config.model.hidden_units=16 '
      '(the checkpoints have 8); --config.data.classes=normal,covid,pneumonia (the checkpoints '
      'have normal,covid). Train it in a new --workdir, or set these back to resume.')
  assert sorted(os.listdir(os.path.join(trained.workdir, 'checkpoints'))) == ['1', '2']
