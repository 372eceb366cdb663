import json
import types

import numpy as np
from PIL import Image
import pytest

from hybridcovid.evaluation import bootstrap, calibration, groups, metrics, multiclass, patients
from hybridcovid.report import formatting, writer
from hybridcovid.report import figures as report_figures
from hybridcovid.report import markdown as report_markdown


def _predictions():
  rng = np.random.default_rng(0)
  rows = []
  for index in range(40):
    modality = 'cxr' if index < 24 else 'ct'
    label = index % 2
    probability = float(np.clip(label * 0.5 + rng.normal(0.25, 0.2), 0, 1))
    rows.append({'key': f'src:{index}.png', 'patient_id': f'p{index // 2}',
                 'modality': modality, 'source': f'source-{modality}', 'label': label,
                 'probability': probability})
  return rows


def _by_modality(predictions, threshold=0.5):
  """`groups.group_metrics`, overall and per modality."""
  return {group: values for group, values in groups.group_metrics(predictions, threshold).items()
          if not group.startswith('source:')}


def _result(predictions):
  test = _by_modality(predictions)
  return {'selected_epoch': 1, 'selection_metric': 'accuracy',
          'validation': test['overall'], 'test': test}


HISTORY = [{'epoch': epoch, 'train_loss': 0.7 - 0.1 * epoch, 'train_accuracy': 0.5 + 0.1 * epoch,
            'learning_rate': 1e-3, 'validation': {'accuracy': 0.6 + 0.1 * epoch, 'auc': 0.7}}
           for epoch in range(1, 4)]
DESCRIPTION = {'title': 'Test report', 'model': 'resnet50', 'image_size': 32,
               'data': 'CXR, CT', 'split': 'train 1, validation 1, test 40', 'epochs': 3,
               'provenance': 'Used once.', 'notes': ['A note.']}


def test_report_holds_every_file_and_the_table_states_the_metrics(tmp_path):
  predictions = _predictions()
  result = _result(predictions)
  writer.write_report(str(tmp_path), result, predictions, HISTORY, DESCRIPTION)
  for name in ('confusion_matrix.png', 'roc.png', 'training_curves.png'):
    with Image.open(tmp_path / name) as image:
      assert image.format == 'PNG' and min(image.size) > 200
  saved = json.loads((tmp_path / 'metrics.json').read_text())
  assert saved['test']['overall']['counts'] == result['test']['overall']['counts']
  assert saved['history'] == HISTORY
  markdown = (tmp_path / 'report.md').read_text()
  overall = result['test']['overall']
  row = next(line for line in markdown.splitlines() if line.startswith('| All |'))
  cells = [cell.strip() for cell in row.strip('|').split('|')]
  assert cells[1:3] == ['40', '20']
  assert cells[3:7] == [f'{100 * overall[name]:.2f}'
                        for name in ('accuracy', 'specificity', 'recall', 'f1')]
  assert any(line.startswith('| CT | 16 |') for line in markdown.splitlines())
  assert 'epoch 1 of 3' in markdown and 'Used once.' in markdown and '- A note.' in markdown
  rows = (tmp_path / 'predictions.csv').read_text().splitlines()
  assert len(rows) == 41 and rows[0] == 'key,patient_id,modality,source,label,probability'


def test_the_table_gives_each_metric_its_confidence_interval(tmp_path):
  predictions = _predictions()
  result = _result(predictions)
  overall = result['test']['overall']
  overall['intervals'] = bootstrap.confidence_intervals(
      np.array([row['label'] for row in predictions]),
      np.array([row['probability'] for row in predictions]),
      np.array([row['patient_id'] for row in predictions]))
  result['intervals'] = {'level': 0.95, 'resamples': 1000, 'unit': 'patient'}
  writer.write_report(str(tmp_path), result, predictions, HISTORY, DESCRIPTION)
  markdown = (tmp_path / 'report.md').read_text()
  row = next(line for line in markdown.splitlines() if line.startswith('| All |'))
  low, high = overall['intervals']['accuracy']
  assert low < overall['accuracy'] < high
  assert row.split('|')[4].strip() == (
      f"{100 * overall['accuracy']:.2f} ({100 * low:.2f}-{100 * high:.2f})")
  # Groups without intervals keep plain numbers.
  ct_row = next(line for line in markdown.splitlines() if line.startswith('| CT |'))
  assert '(' not in ct_row
  assert ('In brackets: 95% bootstrap confidence intervals (1000 resamples of patients, all '
          'images of a patient together).') in markdown


def _with_operating_point(predictions, scaled):
  """A result whose operating point was fitted on the test predictions themselves, scaling
  the probabilities or not as `scaled` says."""
  labels = np.array([row['label'] for row in predictions])
  scores = np.array([row['probability'] for row in predictions])
  point = calibration.operating_point(
      labels, scores, np.array([row['patient_id'] for row in predictions]), 0.95)
  point['scaling'].update(used=scaled, reason='Reason given.')
  point['temperature'] = point['scaling']['fitted_temperature'] if scaled else 1.0
  result = _result(predictions)
  result['operating_point'] = {
      **point, 'test': _by_modality(predictions, point['threshold']),
      'test_ece': 0.125}
  if scaled:
    for row in predictions:
      row['calibrated_probability'] = float(
          calibration.apply_temperature(row['probability'], point['temperature']))
    result['operating_point']['test_ece_calibrated'] = 0.0625
  return result


def test_the_operating_point_and_calibration_are_reported(tmp_path):
  predictions = _predictions()
  result = _with_operating_point(predictions, scaled=True)
  point = result['operating_point']
  writer.write_report(str(tmp_path), result, predictions, HISTORY, DESCRIPTION)
  markdown = (tmp_path / 'report.md').read_text()
  assert f"Decision threshold {point['threshold']:.4f}" in markdown
  assert 'sensitivity reaches 95.00% (it reached 95.00%)' in markdown
  assert 'Calibration: Reason given. Temperature' in markdown
  assert '12.50% raw, 6.25% temperature-scaled' in markdown
  at = point['test']['overall']
  assert (f"- At the decision threshold fixed on validation ({point['threshold']:.4f}), "
          f"sensitivity {100 * at['recall']:.2f}% and specificity "
          f"{100 * at['specificity']:.2f}%.") in markdown.split('## In short')[1]
  assert '- Calibration error on test: 12.50% raw, 6.25% after temperature scaling.' in markdown
  recall_at_threshold = next(
      line for line in markdown.split('## Operating point')[1].splitlines()
      if line.startswith('| All |')).split('|')[6].strip()
  assert recall_at_threshold == '95.00'  # The same images: validation is test here.
  with Image.open(tmp_path / 'reliability.png') as image:
    assert image.format == 'PNG'
  header = (tmp_path / 'predictions.csv').read_text().splitlines()[0]
  assert header.endswith(',probability,calibrated_probability')


def test_without_scaling_the_report_keeps_raw_probabilities_and_says_why(tmp_path):
  predictions = _predictions()
  result = _with_operating_point(predictions, scaled=False)
  writer.write_report(str(tmp_path), result, predictions, HISTORY, DESCRIPTION)
  markdown = (tmp_path / 'report.md').read_text()
  assert ('Calibration: Reason given. Expected calibration error on test (10 bins): 12.50%. '
          'predictions.csv and prediction give the raw probability only.') in markdown
  assert ('- Calibration error on test: 12.50%, raw probabilities: temperature scaling did '
          'not help validation images it was not fitted on') in markdown
  assert 'temperature-scaled' not in markdown
  header = (tmp_path / 'predictions.csv').read_text().splitlines()[0]
  assert header.endswith(',label,probability')


def test_a_test_sensitivity_short_of_the_target_beyond_its_interval_is_warned(tmp_path):
  predictions = _predictions()
  result = _with_operating_point(predictions, scaled=False)
  point = result['operating_point']
  for group, values in point['test'].items():
    values['intervals'] = {name: (0.7, 0.9) if group == 'ct' else (0.9, 0.99)
                           for name in metrics.METRIC_NAMES}
  values = point['test']['ct']
  point['warnings'] = report_markdown.sensitivity_warnings(point)
  # The CT interval ends below 95%; the others reach it.
  assert point['warnings'] == [
      f"CT: test sensitivity at the decision threshold is {100 * values['recall']:.2f}% "
      '(CI 70.00-90.00%), short of the 95.00% the threshold was chosen to reach on '
      'validation, beyond its confidence interval. The threshold does not carry over from '
      'the validation images to the test images; a larger validation split gives a '
      'steadier one.']
  writer.write_report(str(tmp_path), result, predictions, HISTORY, DESCRIPTION)
  markdown = (tmp_path / 'report.md').read_text()
  assert f"- **Sensitivity warning**: {point['warnings'][0]}" in markdown.split('## In short')[1]
  assert f"**Warning.** {point['warnings'][0]}" in markdown.split('## Operating point')[1]


def test_patients_with_several_images_get_a_patient_table_beside_the_image_table(tmp_path):
  predictions = _predictions()
  for index, row in enumerate(predictions):  # 20 patients of two images of one class.
    row['patient_id'] = f'p{index // 4 * 2 + index % 2}'
  rows = patients.patient_rows(predictions, 'mean_logit')
  point = patients.operating_point(predictions, 'mean_logit', 0.95)
  result = _result(predictions)
  result['patient'] = {
      'aggregation': 'mean_logit', 'patients': 20, 'images': 40, 'mixed_labels': 0,
      'test': _by_modality(rows),
      'operating_point': {**point, 'test': _by_modality(rows, point['threshold']),
                          'test_ece': 0.25, 'warnings': []}}
  writer.write_report(str(tmp_path), result, predictions, HISTORY, DESCRIPTION, rows)
  markdown = (tmp_path / 'report.md').read_text()
  images_part, patients_part = markdown.split('## Per patient')
  image_row = next(line for line in images_part.splitlines() if line.startswith('| All |'))
  assert image_row.split('|')[2:4] == [' 40 ', ' 20 ']
  assert '| Data | Patients | COVID |' in patients_part
  patient_row = next(line for line in patients_part.splitlines() if line.startswith('| All |'))
  overall = result['patient']['test']['overall']
  assert [cell.strip() for cell in patient_row.strip('|').split('|')][1:5] == [
      '20', '10', f"{100 * overall['accuracy']:.2f}", f"{100 * overall['specificity']:.2f}"]
  assert 'the logistic of the mean logit (log-odds)' in patients_part
  assert '### Operating point and calibration per patient' in patients_part
  assert f"Decision threshold {point['threshold']:.4f}" in patients_part
  assert 'patient_predictions.csv and prediction give the raw probability only.' in patients_part
  assert ('- Per patient (20 patients, one decision each): accuracy '
          f"{100 * overall['accuracy']:.2f}%") in markdown.split('## In short')[1]
  csv_rows = (tmp_path / 'patient_predictions.csv').read_text().splitlines()
  assert csv_rows[0] == 'patient_id,modality,source,label,images,mixed_labels,probability'
  assert len(csv_rows) == 21 and csv_rows[1].startswith('p0,cxr,source-cxr,0,2,False,')
  for name in ('confusion_matrix', 'roc', 'reliability'):
    with Image.open(tmp_path / f'patient_{name}.png') as image:
      assert image.format == 'PNG'


def test_patients_of_one_image_each_are_said_to_match_the_images(tmp_path):
  predictions = [{**row, 'patient_id': row['key']} for row in _predictions()]
  rows = patients.patient_rows(predictions, 'max')
  result = _result(predictions)
  result['patient'] = {'aggregation': 'max', 'patients': 40, 'images': 40, 'mixed_labels': 0,
                       'test': _by_modality(rows)}
  writer.write_report(str(tmp_path), result, predictions, HISTORY, DESCRIPTION, rows)
  patients_part = (tmp_path / 'report.md').read_text().split('## Per patient')[1]
  assert 'every per-patient number is the per-image one' in patients_part
  assert not list(tmp_path.glob('patient_*'))
  assert '| All |' not in patients_part.split('##')[0]


def test_metrics_json_is_strict_json_with_null_for_undefined_metrics(tmp_path):
  predictions = [{**row, 'label': 0} for row in _predictions()]  # No COVID: recall undefined.
  result = _result(predictions)
  assert np.isnan(result['test']['overall']['recall'])
  writer.write_report(str(tmp_path), result, predictions, HISTORY, DESCRIPTION)

  def refuse(constant):
    raise ValueError(f'not strict JSON: {constant}')

  saved = json.loads((tmp_path / 'metrics.json').read_text(), parse_constant=refuse)
  assert saved['test']['overall']['recall'] is None
  assert saved['test']['overall']['specificity'] == result['test']['overall']['specificity']
  assert formatting.percent(saved['test']['overall']['recall']) == 'n/a'


@pytest.fixture
def figures(monkeypatch):
  """The figures the report closes, kept open for inspection until the test ends."""
  close, kept = report_figures.plt.close, []
  monkeypatch.setattr(report_figures.plt, 'close', kept.append)
  yield kept
  for figure in kept:
    close(figure)


def _texts(figure) -> str:
  """Every title, label, legend entry and text of `figure`, one per line."""
  texts = [figure._suptitle.get_text()] if figure._suptitle else []
  for axis in figure.axes:
    texts += [axis.get_title(), axis.get_xlabel(), axis.get_ylabel()]
    texts += [text.get_text() for text in axis.texts]
    legend = axis.get_legend()
    if legend:
      texts += [text.get_text() for text in legend.get_texts()]
  return '\n'.join(texts)


def test_every_figure_names_its_decision_threshold(tmp_path, figures):
  predictions = _predictions()
  result = _with_operating_point(predictions, scaled=True)
  threshold = result['operating_point']['threshold']
  writer.write_report(str(tmp_path), result, predictions, HISTORY, DESCRIPTION)
  confusion, roc, reliability, curves = figures
  named = f'decision threshold {threshold:.4f}, fixed on validation'
  assert f'Test confusion matrix, {named}' == confusion._suptitle.get_text()
  # The confusion matrix counts at the threshold, not at 0.5.
  at = result['operating_point']['test']['overall']['counts']
  drawn = [text.get_text().split('\n')[0] for text in confusion.axes[0].texts]
  assert drawn == [str(at[name]) for name in ('tn', 'fp', 'fn', 'tp')]
  assert named.capitalize() in _texts(roc) and named.capitalize() in _texts(reliability)
  assert 'Accuracy (decision threshold 0.5) and AUC' in _texts(curves)


def test_training_curves_show_the_validation_loss(tmp_path, figures):
  history = [{**entry, 'validation_loss': 0.8 - 0.2 * entry['epoch']} for entry in HISTORY]
  report_figures.plot_training_curves(history, str(tmp_path / 'curves.png'), selected_epoch=2)
  loss = figures[0].axes[0]
  lines = {line.get_label(): line for line in loss.get_lines()}
  assert sorted(lines) == ['Training', 'Validation']
  np.testing.assert_allclose(lines['Validation'].get_ydata(), [0.6, 0.4, 0.2])
  np.testing.assert_array_equal(lines['Validation'].get_xdata(), [1, 2, 3])


def test_the_shortcut_check_states_accuracies_beside_chance_and_warns(tmp_path):
  predictions = _predictions()
  result = _result(predictions)
  result['shortcut_probe'] = {
      'images': 120, 'single_class_sources': {'source-ct': 1},
      'disease': {'accuracy': 0.8, 'chance': 0.5, 'above_chance': 0.6, 'classes': 2,
                  'folds': 5},
      'source': {'accuracy': 0.9875, 'chance': 0.6, 'above_chance': 0.96875, 'classes': 2,
                 'folds': 3},
      'warning': 'The data source is at least as easy to read.'}
  writer.write_report(str(tmp_path), result, predictions, HISTORY, DESCRIPTION)
  markdown = (tmp_path / 'report.md').read_text()
  section = markdown.split('## Shortcut check')[1].split('\n## ')[0]
  assert 'pooled features of the 120 validation and test images' in section
  assert '| Disease (COVID or normal) | 2 | 5 | 80.00% | 50.00% | 60.00% |' in section
  assert '| Data source | 2 | 3 | 98.75% | 60.00% | 96.88% |' in section
  assert 'Modality' not in section
  assert '**Warning.** The data source is at least as easy to read.' in section
  assert '**Warning.** Every image of source-ct is COVID' in section
  assert '- **Shortcut warning**' in markdown.split('## In short')[1].split('\n## ')[0]


def test_held_out_sources_sit_beside_the_same_source_seen_in_training(tmp_path):
  predictions = _predictions()
  result = _result(predictions)
  result['test']['source:source-cxr'] = result['test']['cxr']
  held_out = metrics.binary_metrics(np.array([0, 1, 1, 0]), np.array([0.1, 0.2, 0.9, 0.7]))
  result['leave_one_source_out'] = {
      'source-ct': {'skipped': 'The validation split is empty.'},
      'source-cxr': {'workdir': 'leave_one_source_out/source-cxr', 'test': held_out}}
  writer.write_report(str(tmp_path), result, predictions, HISTORY, DESCRIPTION)
  lines = (tmp_path / 'report.md').read_text().split('## Leave one source out')[1].splitlines()
  assert '| source-cxr, held out | 4 | 2 | 50.00 | 50.00 | 50.00 | 50.00 | 50.00 | 50.00 | 75.00 |' in lines
  seen = next(line for line in lines if line.startswith('| source-cxr, seen |'))
  assert seen.split('|')[2].strip() == '24'
  assert '- source-ct: not run. The validation split is empty.' in lines
  assert '- On sources left out of training, accuracy: source-cxr 50.00%.' in (
      tmp_path / 'report.md').read_text()


def test_explanations_are_listed_with_their_images_and_branch_shares(tmp_path):
  predictions = _predictions()
  result = _result(predictions)
  result['explanations'] = {'threshold': 0.4, 'feature_map_size': 2, 'examples': [
      {'key': 'src:1.png', 'modality': 'cxr', 'outcome': 'true positive', 'probability': 0.9,
       'image': 'gradcam/true_positive_1.png',
       'evidence_shares': {'resnet50': 0.75, 'efficientnetb0': 0.25}},
      {'key': 'src:2.png', 'modality': 'ct', 'outcome': 'false negative', 'probability': 0.1,
       'image': 'gradcam/false_negative_1.png',
       'evidence_shares': {'resnet50': 0.25, 'efficientnetb0': 0.75}}]}
  writer.write_report(str(tmp_path), result, predictions, HISTORY, DESCRIPTION)
  section = (tmp_path / 'report.md').read_text().split('## Explanations (Grad-CAM)')[1]
  assert 'decision threshold 0.4000' in section
  assert 'feature map, 2x2 cells here' in section
  assert 'Mean share of the evidence over these images: resnet50 50%, efficientnetb0 50%.' in section
  assert 'False negative, CT, COVID probability 0.100: `src:2.png`' in section
  assert '![Grad-CAM, false negative](gradcam/false_negative_1.png)' in section


def test_attributes_too_thin_to_probe_are_named(tmp_path):
  predictions = _predictions()
  result = _result(predictions)
  result['shortcut_probe'] = {
      'images': 12, 'single_class_sources': {}, 'not_probed': ['source', 'modality'],
      'disease': {'accuracy': 0.75, 'chance': 0.5, 'above_chance': 0.5, 'classes': 2,
                  'folds': 2},
      'warning': None}
  writer.write_report(str(tmp_path), result, predictions, HISTORY, DESCRIPTION)
  section = (tmp_path / 'report.md').read_text().split('## Shortcut check')[1]
  assert ('Not probed, as one of its values has the images of a single patient: source, '
          'modality.') in section


def test_sources_that_are_modalities_are_said_to_be_unprobed(tmp_path):
  predictions = _predictions()
  result = _result(predictions)
  result['shortcut_probe'] = {
      'images': 40, 'single_class_sources': {}, 'source_is_modality': True,
      'disease': {'accuracy': 0.75, 'chance': 0.5, 'above_chance': 0.5, 'classes': 2,
                  'folds': 5},
      'modality': {'accuracy': 1.0, 'chance': 0.6, 'above_chance': 1.0, 'classes': 2,
                   'folds': 5},
      'warning': None}
  writer.write_report(str(tmp_path), result, predictions, HISTORY, DESCRIPTION)
  markdown = (tmp_path / 'report.md').read_text()
  section = markdown.split('## Shortcut check')[1].split('\n## ')[0]
  assert 'Each source holds one modality' in section
  assert 'further above chance' not in section and 'one source' not in section
  assert ('- Shortcut check: each source holds one modality, so whether the model recognises '
          'a hospital cannot be probed.') in markdown.split('## In short')[1]


def _three_class_predictions():
  rng = np.random.default_rng(1)
  names = ('normal', 'covid', 'pneumonia')
  rows = []
  for index in range(60):
    label = index % 3
    logits = rng.normal(size=3) + 2.0 * np.eye(3)[label]
    probabilities = np.exp(logits) / np.exp(logits).sum()
    rows.append({'key': f'src:{index}.png', 'patient_id': f'p{index // 3}', 'modality': 'cxr',
                 'source': 'source-cxr', 'label': int(label == 1),
                 'probability': float(probabilities[1]), 'class': names[label],
                 'predicted_class': names[int(np.argmax(probabilities))],
                 **{f'probability_{name}': float(p) for name, p in zip(names, probabilities)}})
  return names, rows


def test_three_classes_get_per_class_tables_a_confusion_matrix_and_figures(tmp_path, figures):
  names, predictions = _three_class_predictions()
  config = types.SimpleNamespace(bootstrap_resamples=50, bootstrap_seed=0,
                                 confidence_level=0.95)
  result = {**_result(predictions), 'classes': list(names),
            'test_classes': multiclass.group_class_metrics(predictions, names, config)}
  writer.write_report(str(tmp_path), result, predictions, HISTORY, DESCRIPTION)
  assert (tmp_path / 'class_confusion_matrix.png').is_file()
  assert (tmp_path / 'class_roc.png').is_file()
  markdown = (tmp_path / 'report.md').read_text()
  lines = markdown.splitlines()
  overall = result['test_classes']['overall']
  for name, title in zip(names, ('Normal', 'COVID', 'Pneumonia')):
    values = overall['classes'][name]
    row = next(line for line in lines if line.startswith(f'| All | {title} |'))
    cells = [cell.strip() for cell in row.strip('|').split('|')]
    low, high = values['intervals']['auc']
    assert cells[2] == str(values['images'])
    assert cells[3].startswith(f"{100 * values['recall']:.2f} (")
    assert cells[6] == f"{100 * values['auc']:.2f} ({100 * low:.2f}-{100 * high:.2f})"
  header = lines.index('| True | Normal | COVID | Pneumonia |')
  assert [line.split(' | ')[1:] for line in lines[header + 2:header + 5]] == [
      [str(count) for count in row[:-1]] + [f'{row[-1]} |'] for row in overall['confusion_matrix']]
  assert f"macro AUC (the mean of the classes' AUCs) {100 * overall['macro_auc']:.2f}%" in markdown
  assert 'COVID is the positive class, against the others together' in markdown
  texts = {figure._suptitle.get_text() if figure._suptitle else figure.axes[0].get_title():
           figure for figure in figures}
  matrix = texts['Test confusion matrix, most probable class']
  assert [text.get_text().split('\n')[0] for text in matrix.axes[0].texts] == [
      str(count) for row in overall['confusion_matrix'] for count in row]
  binary = texts['Test confusion matrix, decision threshold 0.5']
  assert [label.get_text() for label in binary.axes[0].get_xticklabels()] == ['Not COVID',
                                                                               'COVID']
  roc = next(figure for title, figure in texts.items() if title.startswith('ROC per class'))
  assert f"macro AUC {overall['macro_auc']:.3f}" in roc.axes[0].get_title()
  header = (tmp_path / 'predictions.csv').read_text().splitlines()[0]
  assert header.endswith('label,probability,class,predicted_class,probability_normal,'
                         'probability_covid,probability_pneumonia')
