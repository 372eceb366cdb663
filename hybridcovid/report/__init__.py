"""The run's report: metrics.json, report.md in the paper's table layout, and figures.

`WORKDIR/report/` holds `metrics.json`, `report.md`, `predictions.csv` (one
row per test image), `confusion_matrix.png`, `roc.png`, `reliability.png`,
`training_curves.png` and Grad-CAM explanations in `gradcam/`. Every number
is computed from the predictions given; the test split is the one the selected
checkpoint was evaluated on once.
"""

import csv
import json
import math
import os
from typing import Sequence, TextIO

import matplotlib

matplotlib.use('Agg')
from matplotlib import pyplot as plt  # pylint: disable=g-import-not-at-top
import numpy as np

from hybridcovid.evaluation import bootstrap, calibration, metrics

REPORT_DIR = 'report'
METRICS_FILE = 'metrics.json'
# The paper's column names (Tables 2-4) first, then the further metrics.
TABLE_COLUMNS = (('accuracy', 'Az'), ('specificity', 'Sp'), ('recall', 'Re'),
                 ('f1', 'F-M'), ('precision', 'PPV'), ('npv', 'NPV'), ('auc', 'AUC'))
GROUP_NAMES = {'overall': 'All', 'cxr': 'CXR', 'ct': 'CT'}
CLASS_NAMES = ('Normal', 'COVID')
PROBE_TARGETS = {'disease': 'Disease (COVID or normal)', 'source': 'Data source',
                 'modality': 'Modality (CXR or CT)'}


# Marks an interval from too few images (`bootstrap.too_few_images`).
FEW_IMAGES_MARK = '†'


def undefined(value: float | None) -> bool:
  """Whether a metric is undefined: NaN in memory, null in metrics.json."""
  return value is None or math.isnan(value)


def percent(value: float | None) -> str:
  """A metric as a percentage with two decimals, or 'n/a' when undefined."""
  return 'n/a' if undefined(value) else f'{100 * value:.2f}'


def strict_json(value):
  """`value` with every NaN or infinite float as None, so that json.dump writes strict
  JSON (null), which every JSON reader accepts."""
  if isinstance(value, dict):
    return {key: strict_json(item) for key, item in value.items()}
  if isinstance(value, (list, tuple)):
    return [strict_json(item) for item in value]
  if isinstance(value, (float, np.floating)):
    return float(value) if math.isfinite(value) else None
  if isinstance(value, np.integer):
    return int(value)
  if isinstance(value, np.bool_):
    return bool(value)
  if isinstance(value, np.ndarray):
    return strict_json(value.tolist())
  return value


def dump_json(value, f: TextIO) -> None:
  """`value` as strict, indented JSON into the open file `f`."""
  json.dump(strict_json(value), f, indent=1, allow_nan=False)


def write_json(path: str, value) -> None:
  """`value` as strict, indented JSON in `path`."""
  with open(path, 'w') as f:
    dump_json(value, f)


def group_name(group: str) -> str:
  return GROUP_NAMES.get(group, group.removeprefix('source:'))


def _cell(values: dict, name: str) -> str:
  """A metric in percent, with its confidence interval where there is one, marked
  when the group has too few images for it."""
  if 'intervals' not in values or undefined(values[name]):
    return percent(values[name])
  low, high = values['intervals'][name]
  mark = FEW_IMAGES_MARK if values.get('too_few_images') else ''
  return f'{percent(values[name])} ({percent(low)}-{percent(high)}){mark}'


def _few_images_note(by_group: dict) -> list[str]:
  """The footnote for a table with marked intervals, or nothing."""
  if not any(values.get('too_few_images') for values in by_group.values()):
    return []
  return ['', f'{FEW_IMAGES_MARK} Fewer than {bootstrap.MIN_IMAGES} images, or fewer than '
          f'{bootstrap.MIN_IMAGES_PER_CLASS} of a class: the interval is too rough to trust '
          '(it can shrink to a point from a handful of images).']


def metrics_table(by_group: dict, label: str = 'Data') -> str:
  """A Markdown table: one row per group, the paper's metrics in percent,
  each with its confidence interval (low-high) where the group has them."""
  header = [label, 'Images', 'COVID', *(short for _, short in TABLE_COLUMNS)]
  rows = ['| ' + ' | '.join(header) + ' |', '|' + '---|' * len(header)]
  for group, values in by_group.items():
    counts = values['counts']
    cells = [group_name(group), str(sum(counts.values())), str(counts['tp'] + counts['fn']),
             *(_cell(values, name) for name, _ in TABLE_COLUMNS)]
    rows.append('| ' + ' | '.join(cells) + ' |')
  return '\n'.join(rows + _few_images_note(by_group))


def _groups(predictions: Sequence[dict]) -> dict[str, np.ndarray]:
  """Masks of the overall set and of each modality present."""
  modalities = np.array([row['modality'] for row in predictions])
  groups = {'overall': np.ones(len(predictions), bool)}
  for modality in sorted(set(modalities.tolist())):
    groups[modality] = modalities == modality
  return groups


def threshold_label(threshold: float, fixed_on_validation: bool) -> str:
  """How a figure names its decision threshold."""
  return (f'decision threshold {threshold:.4f}, fixed on validation' if fixed_on_validation
          else f'decision threshold {threshold:g}')


def plot_confusion_matrices(predictions: Sequence[dict], path: str, threshold: float,
                            label: str) -> None:
  """One 2x2 confusion matrix (counts and row percentages) per group, at `threshold`,
  named in the title by `label` (`threshold_label`)."""
  labels = np.array([row['label'] for row in predictions])
  scores = np.array([row['probability'] for row in predictions])
  groups = _groups(predictions)
  figure, axes = plt.subplots(1, len(groups), figsize=(3.6 * len(groups), 3.4), squeeze=False)
  for axis, (group, mask) in zip(axes[0], groups.items()):
    counts = metrics.confusion_counts(labels[mask], scores[mask] >= threshold)
    matrix = np.array([[counts['tn'], counts['fp']], [counts['fn'], counts['tp']]])
    axis.imshow(matrix, cmap='Blues', vmin=0)
    for (row, column), count in np.ndenumerate(matrix):
      share = count / max(matrix[row].sum(), 1)
      axis.text(column, row, f'{count}\n{100 * share:.1f}%', ha='center', va='center',
                color='white' if count > matrix.max() / 2 else 'black')
    axis.set(xticks=[0, 1], yticks=[0, 1], xticklabels=CLASS_NAMES, yticklabels=CLASS_NAMES,
             xlabel='Predicted', ylabel='True', title=group_name(group))
  figure.suptitle(f'Test confusion matrix, {label}', fontsize='medium')
  figure.tight_layout()
  figure.savefig(path, dpi=120)
  plt.close(figure)


def plot_roc_curves(predictions: Sequence[dict], path: str, threshold: float,
                    label: str) -> None:
  """ROC curves of every group with both classes, AUC in the legend, each with its
  point at `threshold` marked (`label` names it)."""
  labels = np.array([row['label'] for row in predictions])
  scores = np.array([row['probability'] for row in predictions])
  figure, axis = plt.subplots(figsize=(4.8, 4.6))
  for group, mask in _groups(predictions).items():
    if len(set(labels[mask].tolist())) < 2:
      continue
    fpr, tpr, _ = metrics.roc_curve(labels[mask], scores[mask])
    auc = metrics.roc_auc(labels[mask], scores[mask])
    line, = axis.plot(fpr, tpr, label=f'{group_name(group)} (AUC {auc:.3f})')
    at = metrics.binary_metrics(labels[mask], scores[mask], threshold)
    axis.plot(1 - at['specificity'], at['recall'], 'o', color=line.get_color(),
              markeredgecolor='black')
  axis.plot([], [], 'o', color='white', markeredgecolor='black', label=label.capitalize())
  axis.plot([0, 1], [0, 1], ':', color='grey', label='Chance')
  axis.set(xlabel='1 - specificity', ylabel='Sensitivity (recall)', xlim=(0, 1),
           ylim=(0, 1.01), title='ROC (test)')
  axis.legend(loc='lower right', fontsize='small')
  figure.tight_layout()
  figure.savefig(path, dpi=120)
  plt.close(figure)


def plot_reliability(predictions: Sequence[dict], path: str, threshold: float,
                     label: str) -> None:
  """Reliability diagram: COVID fraction against mean predicted probability per bin,
  for the raw probabilities and, where present, the temperature-scaled ones; the
  decision threshold (`label` names it) as a vertical line."""
  labels = np.array([row['label'] for row in predictions])
  figure, axis = plt.subplots(figsize=(4.8, 4.6))
  axis.plot([0, 1], [0, 1], ':', color='grey', label='Perfect calibration')
  axis.axvline(threshold, color='black', linestyle='--', linewidth=0.8,
               label=label.capitalize())
  for field, name in (('probability', 'Raw'), ('calibrated_probability', 'Temperature-scaled')):
    if predictions and field in predictions[0]:
      scores = np.array([row[field] for row in predictions])
      table = calibration.reliability(labels, scores)
      ece = calibration.expected_calibration_error(labels, scores)
      axis.plot(table['mean_probability'], table['covid_fraction'], 'o-',
                label=f'{name} (ECE {100 * ece:.2f}%)')
  axis.set(xlabel='Mean predicted COVID probability', ylabel='Fraction COVID',
           xlim=(0, 1), ylim=(0, 1.01), title='Reliability (test, 10 bins)')
  axis.legend(loc='upper left', fontsize='small')
  figure.tight_layout()
  figure.savefig(path, dpi=120)
  plt.close(figure)


def plot_training_curves(history: Sequence[dict], path: str, selected_epoch: int) -> None:
  """Training and validation loss, training and validation accuracy (at threshold 0.5)
  and AUC, and learning rate per epoch."""
  epochs = [entry['epoch'] for entry in history]
  figure, axes = plt.subplots(1, 3, figsize=(12, 3.4))
  axes[0].plot(epochs, [entry['train_loss'] for entry in history], 'o-', label='Training')
  if history and 'validation_loss' in history[0]:  # Older runs did not keep it.
    axes[0].plot(epochs, [entry['validation_loss'] for entry in history], 's-',
                 label='Validation')
  axes[0].set(xlabel='Epoch', ylabel='Cross-entropy', title='Loss')
  axes[1].plot(epochs, [entry['train_accuracy'] for entry in history], 'o-', label='Training accuracy')
  axes[1].plot(epochs, [entry['validation']['accuracy'] for entry in history], 's-',
               label='Validation accuracy')
  axes[1].plot(epochs, [entry['validation']['auc'] for entry in history], '^-',
               label='Validation AUC')
  axes[1].axvline(selected_epoch, color='grey', linestyle=':', label='Selected')
  axes[1].set(xlabel='Epoch', title='Accuracy (decision threshold 0.5) and AUC',
              ylim=(0, 1.02))
  axes[2].plot(epochs, [entry['learning_rate'] for entry in history], 'o-')
  axes[2].set(xlabel='Epoch', title='Learning rate (head, end of epoch)')
  for axis in axes[:2]:
    axis.legend(loc='best', fontsize='small')
  figure.tight_layout()
  figure.savefig(path, dpi=120)
  plt.close(figure)


def write_predictions(predictions: Sequence[dict], path: str) -> None:
  fields = ('key', 'patient_id', 'modality', 'source', 'label', 'probability')
  if predictions and 'calibrated_probability' in predictions[0]:
    fields += ('calibrated_probability',)
  with open(path, 'w', newline='') as f:
    writer = csv.DictWriter(f, fields, extrasaction='ignore')
    writer.writeheader()
    writer.writerows(predictions)


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


def _calibration_text(operating_point: dict) -> str:
  """What was done about calibration, why, and the test calibration error."""
  scaling = operating_point.get('scaling')
  ece = percent(operating_point['test_ece'])
  if 'test_ece_calibrated' in operating_point:
    return (f"{scaling['reason'] + ' ' if scaling else ''}Temperature "
            f"{operating_point['temperature']:.3f}, fitted on validation (above 1 means the "
            'raw probabilities were overconfident). Expected calibration error on test (10 '
            f"bins): {ece}% raw, {percent(operating_point['test_ece_calibrated'])}% "
            'temperature-scaled; the calibrated COVID probability of each image is in '
            'predictions.csv.')
  return (f"{scaling['reason']} Expected calibration error on test (10 bins): {ece}%. "
          'predictions.csv and prediction give the raw probability only.')


def _operating_point_section(operating_point: dict | None) -> list[str]:
  if not operating_point:
    return []
  threshold = operating_point['threshold']
  reached = operating_point['validation_sensitivity']
  lines = [
      '',
      '## Operating point and calibration',
      '',
      f"Both were fixed on the validation split, with the checkpoint, before the test split "
      f"was seen. Decision threshold {threshold:.4f}: the highest whose validation "
      f"sensitivity reaches {percent(operating_point['target_sensitivity'])}%"
      + (f' (it reached {percent(reached)}%).' if reached is not None else '.')
      + ' Test results at this threshold:',
      '',
      metrics_table({group: values for group, values in operating_point['test'].items()
                     if not group.startswith('source:')}),
  ]
  for warning in operating_point.get('warnings', []):
    lines += ['', f'**Warning.** {warning}']
  return lines + ['', f'Calibration: {_calibration_text(operating_point)}']


def _shortcut_section(shortcut: dict | None) -> list[str]:
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
    lines += ['', f'**Warning.** Every image of {source} is {CLASS_NAMES[label]}: a model '
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


def _with_interval(values: dict, name: str) -> str:
  """'93.01% (95% CI 89.42-96.18%)', or the bare percentage without an interval."""
  if 'intervals' not in values or undefined(values[name]):
    return f'{percent(values[name])}%'
  low, high = values['intervals'][name]
  return f'{percent(values[name])}% (CI {percent(low)}-{percent(high)}%)'


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


def _markdown(result: dict, description: dict) -> str:
  selection = result['selection_metric']
  lines = [
      f"# {description['title']}",
      '',
      f"Model: {description['model']}. Input {description['image_size']}x"
      f"{description['image_size']}. Data: {description['data']}.",
      f"Split by patient: {description['split']}.",
      f"Checkpoint: epoch {result['selected_epoch']} of {description['epochs']}, "
      f"chosen by validation {selection} ({percent(result['validation'][selection])}%). "
      + description['provenance'],
      *_summary_section(result),
      '',
      '## Test results',
      '',
      'Percentages; COVID is the positive class, decision threshold '
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
  lines += _shortcut_section(result.get('shortcut_probe'))
  lines += _leave_one_source_out_section(result.get('leave_one_source_out'), result['test'])
  lines += [
      '',
      '## Figures',
      '',
      'At the decision threshold '
      + (f"{result['operating_point']['threshold']:.4f}, fixed on validation"
         if result.get('operating_point') else f"{result['test']['overall']['threshold']:g}")
      + ' (the confusion matrices; the dots on the ROC curves; the dashed line on the '
      'reliability diagram). Accuracy in the training curves is at 0.5.',
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


def write_report(report_dir: str, result: dict, predictions: Sequence[dict],
                 history: Sequence[dict], description: dict) -> None:
  """Writes every report file into `report_dir`.

  Args:
    report_dir: the folder to write, created if needed.
    result: `selected_epoch`, `selection_metric`, `validation` (overall
      metrics of the selected epoch) and `test` (metrics per group, each
      optionally with confidence `intervals`); optionally `intervals` (their
      level, resamples and unit) and `operating_point` (from
      `calibration.operating_point`, plus `test` metrics per group at its
      threshold, `warnings` (`sensitivity_warnings`), the test ECE raw and,
      where scaling is used, calibrated), `shortcut_probe` (from
      `probe.shortcut_probe`), `leave_one_source_out` ({source: overall test
      metrics of the model trained without it, or 'skipped'}) and
      `explanations` (the threshold and one row per Grad-CAM image written
      under `report_dir`).
    predictions: one dict per test image: key, patient_id, modality, source,
      label (1 for COVID), probability (of COVID) and optionally
      calibrated_probability.
    history: one dict per epoch: epoch (from 1), train_loss, validation_loss,
      train_accuracy, learning_rate and validation (overall metrics).
    description: title, model, image_size, data, split, epochs and provenance
      (how the evaluated images were used) as text, and optional notes, for
      report.md.
  """
  os.makedirs(report_dir, exist_ok=True)
  write_json(os.path.join(report_dir, METRICS_FILE), {**result, 'history': list(history)})
  write_predictions(predictions, os.path.join(report_dir, 'predictions.csv'))
  # The figures show the decision a deployment would make: at the threshold
  # fixed on validation where there is one.
  point = result.get('operating_point')
  threshold = point['threshold'] if point else result['test']['overall']['threshold']
  label = threshold_label(threshold, bool(point))
  plot_confusion_matrices(predictions, os.path.join(report_dir, 'confusion_matrix.png'),
                          threshold, label)
  plot_roc_curves(predictions, os.path.join(report_dir, 'roc.png'), threshold, label)
  plot_reliability(predictions, os.path.join(report_dir, 'reliability.png'), threshold, label)
  plot_training_curves(history, os.path.join(report_dir, 'training_curves.png'),
                       result['selected_epoch'])
  with open(os.path.join(report_dir, 'report.md'), 'w') as f:
    f.write(_markdown(result, description))
