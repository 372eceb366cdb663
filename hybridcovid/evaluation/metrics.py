"""Binary diagnostic metrics from the confusion matrix, and ROC AUC.

COVID (label 1) is the positive class. A metric whose denominator is zero
(recall with no COVID cases, say) is NaN, reported as undefined rather than
as 0 or 1.
"""

import numpy as np

METRIC_NAMES = ('accuracy', 'recall', 'specificity', 'precision', 'npv', 'f1', 'auc')


def _ratio(numerator: float, denominator: float) -> float:
  return float(numerator / denominator) if denominator else float('nan')


def confusion_counts(labels: np.ndarray, predictions: np.ndarray) -> dict[str, int]:
  """True/false positives and negatives of 0/1 `predictions` against 0/1 `labels`."""
  labels, predictions = np.asarray(labels, bool), np.asarray(predictions, bool)
  return {'tp': int(np.sum(labels & predictions)), 'fp': int(np.sum(~labels & predictions)),
          'fn': int(np.sum(labels & ~predictions)), 'tn': int(np.sum(~labels & ~predictions))}


def roc_auc(labels: np.ndarray, scores: np.ndarray) -> float:
  """Area under the ROC curve: the probability that a random positive outscores a
  random negative, ties counting one half (the Mann-Whitney statistic)."""
  labels, scores = np.asarray(labels, bool), np.asarray(scores, np.float64)
  positives, negatives = int(labels.sum()), int((~labels).sum())
  if not positives or not negatives:
    return float('nan')
  order = np.argsort(scores, kind='mergesort')
  sorted_scores = scores[order]
  ranks = np.empty(len(scores))
  # Average ranks over ties: each run of equal scores shares the mean of its ranks.
  starts = np.flatnonzero(np.r_[True, sorted_scores[1:] != sorted_scores[:-1]])
  ends = np.r_[starts[1:], len(scores)]
  for start, end in zip(starts, ends):
    ranks[order[start:end]] = (start + end + 1) / 2
  rank_sum = ranks[labels].sum()
  return float((rank_sum - positives * (positives + 1) / 2) / (positives * negatives))


def roc_curve(labels: np.ndarray, scores: np.ndarray
              ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """(false positive rates, true positive rates, thresholds) of the ROC curve.

  One point per distinct score, from the highest threshold down, starting
  at (0, 0) with an infinite threshold; rates are NaN without positives or
  negatives.
  """
  labels, scores = np.asarray(labels, bool), np.asarray(scores, np.float64)
  order = np.argsort(-scores, kind='mergesort')
  sorted_scores, sorted_labels = scores[order], labels[order]
  last_of_each_score = np.r_[sorted_scores[1:] != sorted_scores[:-1], True]
  true_positives = np.cumsum(sorted_labels)[last_of_each_score]
  false_positives = np.cumsum(~sorted_labels)[last_of_each_score]
  with np.errstate(invalid='ignore', divide='ignore'):
    tpr = np.r_[0, true_positives] / labels.sum()
    fpr = np.r_[0, false_positives] / (~labels).sum()
  return fpr, tpr, np.r_[np.inf, sorted_scores[last_of_each_score]]


def binary_metrics(labels: np.ndarray, scores: np.ndarray, threshold: float = 0.5) -> dict:
  """Accuracy (Az), recall (Re), specificity (Sp), precision (PPV), NPV, F1 (F-M) and AUC.

  `scores` are COVID probabilities; a score >= `threshold` predicts COVID.
  F1 is 2TP / (2TP + FP + FN).
  """
  scores = np.asarray(scores, np.float64)
  counts = confusion_counts(labels, scores >= threshold)
  tp, fp, fn, tn = counts['tp'], counts['fp'], counts['fn'], counts['tn']
  return {
      'accuracy': _ratio(tp + tn, tp + fp + fn + tn),
      'recall': _ratio(tp, tp + fn),
      'specificity': _ratio(tn, tn + fp),
      'precision': _ratio(tp, tp + fp),
      'npv': _ratio(tn, tn + fn),
      'f1': _ratio(2 * tp, 2 * tp + fp + fn),
      'auc': roc_auc(labels, scores),
      'counts': counts,
      'threshold': threshold,
  }

