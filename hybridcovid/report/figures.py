"""The report's figures: confusion matrices, ROC curves, reliability diagram, training curves."""

from typing import Sequence

import matplotlib

matplotlib.use('Agg')
from matplotlib import pyplot as plt  # pylint: disable=g-import-not-at-top
import numpy as np

from hybridcovid import classes
from hybridcovid.evaluation import calibration, groups, metrics, multiclass
from hybridcovid.report.formatting import group_name


def threshold_label(threshold: float, fixed_on_validation: bool) -> str:
  """How a figure names its decision threshold."""
  return (f'decision threshold {threshold:.4f}, fixed on validation' if fixed_on_validation
          else f'decision threshold {threshold:g}')


def _plot_matrices(matrices: dict[str, np.ndarray], titles: Sequence[str], path: str,
                   title: str) -> None:
  """Confusion matrices (counts and row percentages), one per group, side by side."""
  figure, axes = plt.subplots(1, len(matrices), figsize=(1.2 * len(titles) + 1.2) * np.array(
      [len(matrices), 0.95]), squeeze=False)
  for axis, (group, matrix) in zip(axes[0], matrices.items()):
    axis.imshow(matrix, cmap='Blues', vmin=0)
    for (row, column), count in np.ndenumerate(matrix):
      share = count / max(matrix[row].sum(), 1)
      axis.text(column, row, f'{count}\n{100 * share:.1f}%', ha='center', va='center',
                color='white' if count > matrix.max() / 2 else 'black')
    ticks = list(range(len(titles)))
    axis.set(xticks=ticks, yticks=ticks, xticklabels=titles, yticklabels=titles,
             xlabel='Predicted', ylabel='True', title=group_name(group))
  figure.suptitle(title, fontsize='medium')
  figure.tight_layout()
  figure.savefig(path, dpi=120)
  plt.close(figure)


def plot_confusion_matrices(predictions: Sequence[dict], path: str, threshold: float,
                            label: str, negative: str = classes.NAMES[0]) -> None:
  """One 2x2 confusion matrix, COVID against `negative` (`classes.negative_name`), per
  group, at `threshold`, named in the title by `label` (`threshold_label`)."""
  labels = np.array([row['label'] for row in predictions])
  scores = np.array([row['probability'] for row in predictions])
  matrices = {}
  for group, mask in groups.group_masks(predictions, by_source=False).items():
    counts = metrics.confusion_counts(labels[mask], scores[mask] >= threshold)
    matrices[group] = np.array([[counts['tn'], counts['fp']], [counts['fn'], counts['tp']]])
  titles = (negative[0].upper() + negative[1:], classes.TITLES[classes.COVID])
  _plot_matrices(matrices, titles, path, f'Test confusion matrix, {label}')


def plot_class_confusion_matrices(by_group: dict, names: Sequence[str], path: str) -> None:
  """The confusion matrix of the classes (`multiclass.group_class_metrics`) per group but
  the sources, each image given its most probable class."""
  _plot_matrices({group: np.array(values['confusion_matrix'])
                  for group, values in by_group.items() if not group.startswith('source:')},
                 [classes.TITLES[classes.NAMES.index(name)] for name in names], path,
                 'Test confusion matrix, most probable class')


def plot_class_roc_curves(predictions: Sequence[dict], by_class: dict, names: Sequence[str],
                          path: str) -> None:
  """Each class's ROC curve against the rest, overall, AUC in the legend, the macro AUC
  (of `by_class`, the overall `multiclass.class_metrics`) in the title, and the point of
  the most-probable-class decision marked."""
  figure, axis = plt.subplots(figsize=(4.8, 4.6))
  for name in names:
    labels = np.array([row['class'] == name for row in predictions])
    if len(set(labels.tolist())) < 2:
      continue
    fpr, tpr, _ = metrics.roc_curve(labels, [row[f'probability_{name}'] for row in predictions])
    values = by_class['classes'][name]
    line, = axis.plot(fpr, tpr, label=f'{classes.TITLES[classes.NAMES.index(name)]} '
                      f"against the rest (AUC {values['auc']:.3f})")
    axis.plot(1 - values['specificity'], values['recall'], 'o', color=line.get_color(),
              markeredgecolor='black')
  axis.plot([], [], 'o', color='white', markeredgecolor='black', label='Most probable class')
  axis.plot([0, 1], [0, 1], ':', color='grey', label='Chance')
  axis.set(xlabel='1 - specificity', ylabel='Sensitivity (recall)', xlim=(0, 1),
           ylim=(0, 1.01), title=f"ROC per class (test, macro AUC {by_class['macro_auc']:.3f})")
  axis.legend(loc='lower right', fontsize='small')
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
  for group, mask in groups.group_masks(predictions, by_source=False).items():
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
  """Training and validation loss, training and validation accuracy (at threshold 0.5
  with two classes, of the most probable class with more) and AUC (macro with more than
  two classes), and learning rate per epoch."""
  epochs = [entry['epoch'] for entry in history]
  figure, axes = plt.subplots(1, 3, figsize=(12, 3.4))
  axes[0].plot(epochs, [entry['train_loss'] for entry in history], 'o-', label='Training')
  if history and 'validation_loss' in history[0]:  # Older runs did not keep it.
    axes[0].plot(epochs, [entry['validation_loss'] for entry in history], 's-',
                 label='Validation')
  axes[0].set(xlabel='Epoch', ylabel='Cross-entropy', title='Loss')
  axes[1].plot(epochs, [entry['train_accuracy'] for entry in history], 'o-', label='Training accuracy')
  several = bool(history) and 'classes' in history[0]['validation']
  axes[1].plot(epochs, [multiclass.selection_value(entry['validation'], 'accuracy')
                        for entry in history], 's-', label='Validation accuracy')
  axes[1].plot(epochs, [multiclass.selection_value(entry['validation'], 'macro_auc')
                        if several else entry['validation']['auc'] for entry in history],
               '^-', label=f'Validation {"macro " if several else ""}AUC')
  axes[1].axvline(selected_epoch, color='grey', linestyle=':', label='Selected')
  axes[1].set(xlabel='Epoch', ylim=(0, 1.02), title=(
      'Accuracy (most probable class) and AUC' if several
      else 'Accuracy (decision threshold 0.5) and AUC'))
  axes[2].plot(epochs, [entry['learning_rate'] for entry in history], 'o-')
  axes[2].set(xlabel='Epoch', title='Learning rate (head, end of epoch)')
  for axis in axes[:2]:
    axis.legend(loc='best', fontsize='small')
  figure.tight_layout()
  figure.savefig(path, dpi=120)
  plt.close(figure)
