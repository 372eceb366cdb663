"""report.md: the paper's table layout, and a section for each further result."""

import numpy as np

from hybridcovid import classes
from hybridcovid.evaluation import bootstrap, multiclass
from hybridcovid.report.formatting import group_name, percent, undefined

# The paper's column names (Tables 2-4) first, then the further metrics.
TABLE_COLUMNS = (('accuracy', 'Az'), ('specificity', 'Sp'), ('recall', 'Re'),
                 ('f1', 'F-M'), ('precision', 'PPV'), ('npv', 'NPV'), ('auc', 'AUC'))
PROBE_TARGETS = {'disease': 'Disease ({})', 'source': 'Data source',
                 'modality': 'Modality (CXR or CT)'}
# One class against the rest, with more than two classes.
CLASS_COLUMNS = (('recall', 'Sensitivity'), ('specificity', 'Specificity'), ('precision', 'PPV'),
                 ('auc', 'AUC'))

# Marks an interval from too few images (`bootstrap.too_few_images`).
FEW_IMAGES_MARK = '†'


def _cell(values: dict, name: str) -> str:
  """A metric in percent, with its confidence interval where there is one, marked
  when the group has too few images for it."""
  if 'intervals' not in values or undefined(values[name]):
    return percent(values[name])
  low, high = values['intervals'][name]
  mark = FEW_IMAGES_MARK if values.get('too_few_images') else ''
  return f'{percent(values[name])} ({percent(low)}-{percent(high)}){mark}'


def _few_images_note(by_group: dict, unit: str) -> list[str]:
  """The footnote for a table with marked intervals, or nothing."""
  if not any(values.get('too_few_images') for values in by_group.values()):
    return []
  return ['', f'{FEW_IMAGES_MARK} Fewer than {bootstrap.MIN_IMAGES} {unit}, or fewer than '
          f'{bootstrap.MIN_IMAGES_PER_CLASS} of a class: the interval is too rough to trust '
          f'(it can shrink to a point from a handful of {unit}).']


def metrics_table(by_group: dict, label: str = 'Data', unit: str = 'images') -> str:
  """A Markdown table: one row per group, the paper's metrics in percent,
  each with its confidence interval (low-high) where the group has them;
  `unit` names what the rows count (images or patients)."""
  header = [label, unit.capitalize(), 'COVID', *(short for _, short in TABLE_COLUMNS)]
  rows = ['| ' + ' | '.join(header) + ' |', '|' + '---|' * len(header)]
  for group, values in by_group.items():
    counts = values['counts']
    cells = [group_name(group), str(sum(counts.values())), str(counts['tp'] + counts['fn']),
             *(_cell(values, name) for name, _ in TABLE_COLUMNS)]
    rows.append('| ' + ' | '.join(cells) + ' |')
  return '\n'.join(rows + _few_images_note(by_group, unit))


def _interval_note(result: dict) -> str:
  if 'intervals' not in result:
    return ''
  settings = result['intervals']
  return (f" In brackets: {100 * settings['level']:g}% bootstrap confidence intervals "
          f"({settings['resamples']} resamples of {settings['unit']}s, all images of a "
          f"{settings['unit']} together).")


def sensitivity_warnings(operating_point: dict) -> list[str]:
  """A warning for each group (overall, per modality) whose test sensitivity at the
  threshold misses the validation target beyond its confidence interval."""
  found = []
  target = operating_point['target_sensitivity']
  for group, values in operating_point['test'].items():
    if group.startswith('source:') or 'intervals' not in values:
      continue
    low, high = values['intervals']['recall']
    if not undefined(high) and high < target:
      found.append(
          f"{group_name(group)}: test sensitivity at the decision threshold is "
          f"{percent(values['recall'])}% (CI {percent(low)}-{percent(high)}%), short of the "
          f"{percent(target)}% the threshold was chosen to reach on validation, beyond its "
          'confidence interval. The threshold does not carry over from the validation '
          'images to the test images; a larger validation split gives a steadier one.')
  return found


def _calibration_text(operating_point: dict, unit: str = 'image') -> str:
  """What was done about calibration, why, and the test calibration error, for the
  probabilities of each `unit` (image or patient)."""
  csv_file = 'predictions.csv' if unit == 'image' else f'{unit}_predictions.csv'
  scaling = operating_point.get('scaling')
  ece = percent(operating_point['test_ece'])
  if 'test_ece_calibrated' in operating_point:
    return (f"{scaling['reason'] + ' ' if scaling else ''}Temperature "
            f"{operating_point['temperature']:.3f}, fitted on validation (above 1 means the "
            'raw probabilities were overconfident). Expected calibration error on test (10 '
            f"bins): {ece}% raw, {percent(operating_point['test_ece_calibrated'])}% "
            f'temperature-scaled; the calibrated COVID probability of each {unit} is in '
            f'{csv_file}.')
  return (f"{scaling['reason']} Expected calibration error on test (10 bins): {ece}%. "
          f'{csv_file} and prediction give the raw probability only.')


def _operating_point_section(operating_point: dict | None,
                             heading: str = '## Operating point and calibration',
                             unit: str = 'image') -> list[str]:
  if not operating_point:
    return []
  threshold = operating_point['threshold']
  reached = operating_point['validation_sensitivity']
  lines = [
      '',
      heading,
      '',
      f"Both were fixed on the validation {unit}s, with the checkpoint, before the test split "
      f"was seen. Decision threshold {threshold:.4f}: the highest whose validation "
      f"sensitivity reaches {percent(operating_point['target_sensitivity'])}%"
      + (f' (it reached {percent(reached)}%).' if reached is not None else '.')
      + ' Test results at this threshold:',
      '',
      metrics_table({group: values for group, values in operating_point['test'].items()
                     if not group.startswith('source:')}, unit=f'{unit}s'),
  ]
  for warning in operating_point.get('warnings', []):
    lines += ['', f'**Warning.** {warning}']
  return lines + ['', f'Calibration: {_calibration_text(operating_point, unit)}']


AGGREGATION_TEXT = {'mean_logit': "the logistic of the mean logit (log-odds) of its images'",
                    'max': "the largest of its images'",
                    'mean_probability': "the mean of its images'"}


def _patient_section(patient: dict | None, names: tuple[str, ...]) -> list[str]:
  """The test results with one decision per patient, beside the per-image ones."""
  if not patient:
    return []
  lines = ['', '## Per patient', '',
           "Clinicians decide per patient: each test patient's images of one modality make one "
           f"study, whose COVID probability is {AGGREGATION_TEXT[patient['aggregation']]} "
           f"(--config.eval.patient_aggregation). {patient['patients']} patients hold the "
           f"{patient['images']} test images."]
  if patient['patients'] == patient['images']:
    return lines + ['', 'Each test patient has one image, so every per-patient number is the '
                    'per-image one.']
  if patient['mixed_labels']:
    lines += ['', f"{patient['mixed_labels']} patients have both COVID and "
              f"{classes.negative_name(names)} images; each counts as COVID."]
  lines += ['', 'Test results at 0.5:', '',
            metrics_table({group: values for group, values in patient['test'].items()
                           if not group.startswith('source:')}, unit='patients')]
  sources = {group: values for group, values in patient['test'].items()
             if group.startswith('source:')}
  if len(sources) > 1:
    lines += ['', metrics_table(sources, label='Source', unit='patients')]
  lines += _operating_point_section(patient.get('operating_point'),
                                    '### Operating point and calibration per patient', 'patient')
  return lines + ['', '![Confusion matrices per patient](patient_confusion_matrix.png)', '',
                  '![ROC curves per patient](patient_roc.png)', '',
                  '![Reliability diagram per patient](patient_reliability.png)']


def _titles(names) -> list[str]:
  return [classes.TITLES[classes.NAMES.index(name)] for name in names]


def _listed(words: list[str], conjunction: str = 'or') -> str:
  """'a, b or c'."""
  return f' {conjunction} '.join([', '.join(words[:-1]), words[-1]] if len(words) > 1
                                 else words)


def _shortcut_section(shortcut: dict | None, names: tuple[str, ...]) -> list[str]:
  if not shortcut:
    return []
  lines = ['', '## Shortcut check', '',
           'Can a linear model read where an image came from off the features this model '
           'computes? A logistic regression on the pooled features of the '
           f"{shortcut['images']} validation and test images, cross-validated with each "
           "patient's images in one fold, predicts each of these. Chance is always guessing "
           "the commonest value (for the source, the commonest source of the image's "
           'modality); "above chance" is the share of the way from chance to perfect accuracy '
           'that the probe goes.', '',
           '| Predicted | Classes | Folds | Probe accuracy | Chance | Above chance |',
           '|---|---|---|---|---|---|']
  for name, title in PROBE_TARGETS.items():
    if name in shortcut:
      values = shortcut[name]
      title = title.format(_listed(['COVID', *(name for name in reversed(names)
                                               if name != 'covid')]))
      lines.append(f"| {title} | {values['classes']} | {values['folds']} | "
                   f"{percent(values['accuracy'])}% | {percent(values['chance'])}% | "
                   f"{percent(values['above_chance'])}% |")
  if shortcut.get('not_probed'):
    lines += ['', 'Not probed, as one of its values has the images of a single patient: '
              f"{', '.join(shortcut['not_probed'])}."]
  if shortcut.get('source_is_modality'):
    lines += ['', 'Each source holds one modality, so the source cannot be told apart from '
              'the modality here, and whether the model recognises a hospital cannot be '
              'probed: that needs two sources of one modality.']
  if shortcut['warning']:
    lines += ['', f"**Warning.** {shortcut['warning']}"]
  elif 'source' in shortcut and 'disease' in shortcut:
    lines += ['', 'The disease is further above chance than the data source.']
  if 'source' not in shortcut and not shortcut.get('source_is_modality') and (
      'source' not in shortcut.get('not_probed', [])):
    lines += ['', 'The images come from one source: there is no source to confuse with '
              'the disease.']
  for source, label in shortcut.get('single_class_sources', {}).items():
    lines += ['', f'**Warning.** Every image of {source} is {classes.TITLES[label]}: a model '
              'can tell its class by recognising the source, and its results measure one '
              'class only.']
  return lines


def _leave_one_source_out_section(held_out: dict | None, test: dict) -> list[str]:
  if not held_out:
    return []
  groups, skipped = {}, []
  for source, outcome in held_out.items():
    if 'skipped' in outcome:
      skipped.append(f"- {source}: not run. {outcome['skipped']}")
      continue
    groups[f'{source}, held out'] = outcome['test']
    if f'source:{source}' in test:
      groups[f'{source}, seen'] = test[f'source:{source}']
  return ['', '## Leave one source out', '',
          'Each "held out" row is a model trained and selected without that source, tested '
          'on all of its images; each "seen" row is this run\'s model on the same source\'s '
          'test images, with the source among its training data. A large drop means the '
          'results do not carry over to a hospital the model has not seen. Reports: '
          'leave_one_source_out/<source>/report/.', '',
          metrics_table(groups, label='Source'), *([''] + skipped if skipped else [])]


def _explanations_section(explanations: dict | None) -> list[str]:
  if not explanations or not explanations['examples']:
    return []
  examples = explanations['examples']
  backbones = list(examples[0]['evidence_shares'])
  lines = ['', '## Explanations (Grad-CAM)', '',
           'Where in the image each backbone found the evidence for the decision, for the '
           'most confident test images of each outcome at the decision threshold '
           f"{explanations['threshold']:.4f}. Red is the strongest evidence in the image; "
           "each title gives the backbone's share of the evidence, which for a hybrid says "
           'which branch drove the decision. Heat maps have the resolution of the last '
           f"feature map, {explanations['feature_map_size']}x{explanations['feature_map_size']} "
           'cells here (1/32 of the input side; 7x7 at 224x224), and show where, not why.']
  if len(backbones) > 1:
    mean_shares = ', '.join(
        f"{name} {100 * np.mean([row['evidence_shares'][name] for row in examples]):.0f}%"
        for name in backbones)
    lines += ['', f'Mean share of the evidence over these images: {mean_shares}.']
  for row in examples:
    lines += ['', f"{row['outcome'].capitalize()}, {row['modality'].upper()}, COVID "
              f"probability {row['probability']:.3f}: `{row['key']}`", '',
              f"![Grad-CAM, {row['outcome']}]({row['image']})"]
  return lines


def _absent_note(absent: list[str]) -> str:
  if not absent:
    return ''
  titles = _listed(_titles(absent), 'and')
  return (f' {titles} {"has" if len(absent) == 1 else "have"} no test images: the macro AUC '
          'is over the other classes, and the metrics of a class without images are '
          'undefined.')


def _classes_section(result: dict) -> list[str]:
  """The decisions among more than two classes: per class against the rest, the confusion
  matrix and the figures."""
  by_group = result.get('test_classes')
  if not by_group:
    return []
  names = result['classes']
  titles = _titles(names)
  overall = by_group['overall']
  lines = ['', '## Classes', '',
           f'Each test image is given its most probable class of {_listed(titles)}: '
           f"accuracy {_with_interval(overall, 'accuracy')}, macro AUC (the mean of the "
           f"classes' AUCs) {_with_interval(overall, 'macro_auc')}. Per class, that class is "
           'positive and the others negative.' + _absent_note(overall['absent_classes'])
           + _interval_note(result), '',
           '| Data | Class | Images | ' + ' | '.join(title for _, title in CLASS_COLUMNS) + ' |',
           '|' + '---|' * (3 + len(CLASS_COLUMNS))]
  for group, values in by_group.items():
    if group.startswith('source:'):
      continue
    for name, title in zip(names, titles):
      by_class = {**values['classes'][name], 'too_few_images': values.get('too_few_images')}
      lines.append(f'| {group_name(group)} | {title} | {by_class["images"]} | '
                   + ' | '.join(_cell(by_class, metric) for metric, _ in CLASS_COLUMNS) + ' |')
  lines += _few_images_note(by_group, 'images')
  lines += ['', 'Confusion matrix (test images; rows: true class, columns: most probable '
            'class):', '', '| True | ' + ' | '.join(titles) + ' |',
            '|' + '---|' * (1 + len(titles))]
  for title, row in zip(titles, overall['confusion_matrix']):
    lines.append(f'| {title} | ' + ' | '.join(str(count) for count in row) + ' |')
  return lines + ['', f'The COVID results elsewhere in this report take COVID against '
                  f'{_listed(titles[:1] + titles[2:], "and")} together, '
                  'from the COVID probability.', '',
                  '![Confusion matrices of the classes](class_confusion_matrix.png)', '',
                  '![ROC curves per class](class_roc.png)']


def _with_interval(values: dict, name: str) -> str:
  """'93.01% (95% CI 89.42-96.18%)', or the bare percentage without an interval."""
  if 'intervals' not in values or undefined(values[name]):
    return f'{percent(values[name])}%'
  low, high = values['intervals'][name]
  return f'{percent(values[name])}% (CI {percent(low)}-{percent(high)}%)'


def _patient_summary(patient: dict | None) -> list[str]:
  """The per-patient line of the summary, where patients have several images."""
  if not patient or patient['patients'] == patient['images']:
    return []
  overall = patient['test']['overall']
  line = (f"- Per patient ({patient['patients']} patients, one decision each): accuracy "
          f"{_with_interval(overall, 'accuracy')}, AUC {_with_interval(overall, 'auc')}")
  point = patient.get('operating_point')
  if point:
    at = point['test']['overall']
    line += (f"; at the threshold fixed on validation patients ({point['threshold']:.4f}), "
             f"sensitivity {_with_interval(at, 'recall')} and specificity "
             f"{_with_interval(at, 'specificity')}")
  lines = [line + '.']
  for warning in (point or {}).get('warnings', []):
    lines.append(f'- **Sensitivity warning per patient**: {warning}')
  return lines


def _summary_section(result: dict) -> list[str]:
  """The findings a reader needs first, each pointing to its section."""
  overall = result['test']['overall']
  counts = overall['counts']
  point = result.get('operating_point')
  if point:
    at = point['test']['overall']
    decision = (f"At the decision threshold fixed on validation ({point['threshold']:.4f}), "
                f"sensitivity {_with_interval(at, 'recall')} and specificity "
                f"{_with_interval(at, 'specificity')}.")
  else:
    decision = (f"At threshold 0.5, sensitivity {_with_interval(overall, 'recall')} and "
                f"specificity {_with_interval(overall, 'specificity')}.")
  lines = ['', '## In short', '',
           f'- {sum(counts.values())} test images ({counts["tp"] + counts["fn"]} COVID): '
           f"accuracy {_with_interval(overall, 'accuracy')}, AUC "
           f"{_with_interval(overall, 'auc')}.",
           f'- {decision}']
  for warning in (point or {}).get('warnings', []):
    lines.append(f'- **Sensitivity warning**: {warning}')
  lines += _patient_summary(result.get('patient'))
  if result.get('test_classes'):
    overall = result['test_classes']['overall']
    lines.append(f"- Each image given its most probable class of "
                 f"{_listed(_titles(result['classes']))}: accuracy "
                 f"{_with_interval(overall, 'accuracy')}, macro AUC "
                 f"{_with_interval(overall, 'macro_auc')}.")
  if point and 'test_ece_calibrated' in point:
    lines.append(f"- Calibration error on test: {percent(point['test_ece'])}% raw, "
                 f"{percent(point['test_ece_calibrated'])}% after temperature scaling.")
  elif point:
    lines.append(f"- Calibration error on test: {percent(point['test_ece'])}%, raw "
                 'probabilities: temperature scaling did not help validation images it was '
                 'not fitted on (see below).')
  shortcut = result.get('shortcut_probe')
  if shortcut and (shortcut['warning'] or shortcut.get('single_class_sources')):
    lines.append('- **Shortcut warning**: the data source may stand in for the disease; see '
                 'the shortcut check below.')
  elif shortcut and 'source' in shortcut and 'disease' in shortcut:
    lines.append('- Shortcut check: the features tell the disease more readily than the '
                 'data source.')
  elif shortcut and shortcut.get('source_is_modality'):
    lines.append('- Shortcut check: each source holds one modality, so whether the model '
                 'recognises a hospital cannot be probed.')
  held_out = {source: outcome['test'] for source, outcome in
              result.get('leave_one_source_out', {}).items() if 'test' in outcome}
  if held_out:
    accuracies = ', '.join(f"{source} {percent(values['accuracy'])}%"
                           for source, values in held_out.items())
    lines.append(f'- On sources left out of training, accuracy: {accuracies}.')
  return lines


def markdown(result: dict, description: dict) -> str:
  """report.md of `result` (as `writer.write_report` takes it), described by `description`."""
  selection = result['selection_metric']
  lines = [
      f"# {description['title']}",
      '',
      f"Model: {description['model']}. Input {description['image_size']}x"
      f"{description['image_size']}. Data: {description['data']}.",
      f"Split by patient: {description['split']}.",
      f"Checkpoint: epoch {result['selected_epoch']} of {description['epochs']}, "
      f"chosen by validation {selection} "
      f"({percent(multiclass.selection_value(result['validation'], selection))}%). "
      + description['provenance'],
      *_summary_section(result),
      '',
      '## Test results',
      '',
      'Percentages; COVID is the positive class'
      + (', against the others together' if len(result.get('classes', ())) > 2 else '')
      + ', decision threshold '
      f"{result['test']['overall']['threshold']}. Az: accuracy, Sp: specificity, "
      'Re: recall (sensitivity), F-M: F1, PPV and NPV: positive and negative '
      'predictive values, AUC: area under the ROC curve.' + _interval_note(result),
      '',
      metrics_table({group: values for group, values in result['test'].items()
                     if not group.startswith('source:')}),
  ]
  sources = {group: values for group, values in result['test'].items()
             if group.startswith('source:')}
  if len(sources) > 1:
    lines += ['', '### By data source', '', metrics_table(sources, label='Source')]
  lines += _operating_point_section(result.get('operating_point'))
  lines += _patient_section(result.get('patient'), tuple(result.get('classes', classes.BINARY)))
  lines += _classes_section(result)
  lines += _shortcut_section(result.get('shortcut_probe'),
                             tuple(result.get('classes', classes.BINARY)))
  lines += _leave_one_source_out_section(result.get('leave_one_source_out'), result['test'])
  lines += [
      '',
      '## Figures',
      '',
      'At the decision threshold '
      + (f"{result['operating_point']['threshold']:.4f}, fixed on validation"
         if result.get('operating_point') else f"{result['test']['overall']['threshold']:g}")
      + ' (the confusion matrices; the dots on the ROC curves; the dashed line on the '
      'reliability diagram). Accuracy in the training curves is '
      + ('that of the most probable class.' if result.get('test_classes') else 'at 0.5.'),
      '',
      '![Confusion matrices](confusion_matrix.png)',
      '',
      '![ROC curves](roc.png)',
      '',
      '![Reliability diagram](reliability.png)',
      '',
      '![Training curves](training_curves.png)',
  ]
  lines += _explanations_section(result.get('explanations'))
  if description.get('notes'):
    lines += ['', '## Notes', '', *(f'- {note}' for note in description['notes'])]
  return '\n'.join(lines) + '\n'
