"""Patient-level bootstrap confidence intervals of the diagnostic metrics.

Images of one patient are correlated, so each resample draws patients with
replacement and takes all of their images. A resample is then a vector of
image weights (how often its patient was drawn), and the metrics of all
resamples come at once from weighted sums: no loop over resamples.
"""

import numpy as np

from hybridcovid.evaluation import metrics

# Below these, a bootstrap interval is too rough to trust: it can collapse to
# a point (100.00-100.00) from a handful of images.
MIN_IMAGES = 30
MIN_IMAGES_PER_CLASS = 10


def too_few_images(counts: dict[str, int]) -> bool:
  """Whether a group's confusion `counts` (tp, fp, tn, fn) are too few for its intervals:
  fewer than MIN_IMAGES images, or fewer than MIN_IMAGES_PER_CLASS of a class."""
  covid, normal = counts['tp'] + counts['fn'], counts['tn'] + counts['fp']
  return covid + normal < MIN_IMAGES or min(covid, normal) < MIN_IMAGES_PER_CLASS


def patient_weights(patients: np.ndarray, resamples: int, seed: int) -> np.ndarray:
  """(resamples, images) weights: how often each image's patient was drawn."""
  _, patient_of_image = np.unique(np.asarray(patients), return_inverse=True)
  count = patient_of_image.max() + 1 if len(patient_of_image) else 0
  draws = np.random.default_rng(seed).integers(0, count, (resamples, count))
  flat = (draws + count * np.arange(resamples)[:, None]).ravel()
  drawn = np.bincount(flat, minlength=resamples * count).reshape(resamples, count)
  return drawn[:, patient_of_image].astype(np.float64)


def ratio(numerator: np.ndarray, denominator: np.ndarray) -> np.ndarray:
  """numerator / denominator elementwise, NaN where the denominator is 0."""
  with np.errstate(invalid='ignore', divide='ignore'):
    return np.where(denominator > 0, numerator / np.where(denominator > 0, denominator, 1),
                    np.nan)


def weighted_auc(labels: np.ndarray, scores: np.ndarray, weights: np.ndarray) -> np.ndarray:
  """ROC AUC of each row of `weights` (the Mann-Whitney statistic, ties one half)."""
  labels = np.asarray(labels, bool)
  scores = np.asarray(scores, np.float64)
  order = np.argsort(scores, kind='mergesort')
  sorted_scores = scores[order]
  starts = np.flatnonzero(np.r_[True, sorted_scores[1:] != sorted_scores[:-1]])
  positive = np.add.reduceat((weights * labels)[:, order], starts, axis=1)
  negative = np.add.reduceat((weights * ~labels)[:, order], starts, axis=1)
  negatives_below = np.cumsum(negative, axis=1) - negative
  wins = np.sum(positive * (negatives_below + 0.5 * negative), axis=1)
  return ratio(wins, positive.sum(axis=1) * negative.sum(axis=1))


def weighted_metrics(labels: np.ndarray, scores: np.ndarray, weights: np.ndarray,
                     threshold: float = 0.5) -> dict[str, np.ndarray]:
  """`metrics.binary_metrics` for each row of `weights`, as arrays over the rows."""
  labels = np.asarray(labels, bool)
  predicted = np.asarray(scores, np.float64) >= threshold
  tp, fp, fn, tn = (weights @ (labels & predicted), weights @ (~labels & predicted),
                    weights @ (labels & ~predicted), weights @ (~labels & ~predicted))
  return {'accuracy': ratio(tp + tn, tp + fp + fn + tn), 'recall': ratio(tp, tp + fn),
          'specificity': ratio(tn, tn + fp), 'precision': ratio(tp, tp + fp),
          'npv': ratio(tn, tn + fn), 'f1': ratio(2 * tp, 2 * tp + fp + fn),
          'auc': weighted_auc(labels, scores, weights)}


def confidence_intervals(labels: np.ndarray, scores: np.ndarray, patients: np.ndarray,
                         threshold: float = 0.5, resamples: int = 1000, seed: int = 0,
                         level: float = 0.95) -> dict[str, tuple[float, float]]:
  """Percentile bootstrap intervals of every metric of `metrics.METRIC_NAMES`.

  Resamples whose metric is undefined (no COVID case drawn, say) are left
  out of that metric's interval; a metric undefined in all is (nan, nan).
  """
  weights = patient_weights(patients, resamples, seed)
  values = weighted_metrics(labels, scores, weights, threshold)
  return {name: percentile_interval(values[name], level) for name in metrics.METRIC_NAMES}


def percentile_interval(values: np.ndarray, level: float) -> tuple[float, float]:
  """The percentile interval of the resampled `values` that are defined (not NaN);
  (nan, nan) where none is."""
  defined = values[~np.isnan(values)]
  if not len(defined):
    return float('nan'), float('nan')
  tail = 100 * (1 - level) / 2
  low, high = np.percentile(defined, [tail, 100 - tail])
  return float(low), float(high)
