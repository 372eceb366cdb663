import numpy as np

from hybridcovid.evaluation import metrics
from hybridcovid.report import markdown


def test_undefined_metrics_read_n_a():
  by_group = {'ct': metrics.binary_metrics(np.zeros(4, int), np.full(4, 0.2))}
  table = markdown.metrics_table(by_group)
  # No COVID case: recall and F1 are undefined; specificity is 100%.
  assert table.splitlines()[2] == '| CT | 4 | 0 | 100.00 | 100.00 | n/a | n/a | n/a | 100.00 | n/a |'


def test_intervals_from_too_few_images_are_marked(tmp_path):
  by_group = {
      'few': {**metrics.binary_metrics(np.array([0, 1] * 20), np.full(40, 0.6)),
              'intervals': {name: (0.5, 0.6) for name in metrics.METRIC_NAMES},
              'too_few_images': True},
      'many': {**metrics.binary_metrics(np.array([0, 1] * 20), np.full(40, 0.6)),
               'intervals': {name: (0.5, 0.6) for name in metrics.METRIC_NAMES},
               'too_few_images': False}}
  lines = markdown.metrics_table(by_group).splitlines()
  assert lines[2].split('|')[4].strip() == '50.00 (50.00-60.00)†'
  assert lines[3].split('|')[4].strip() == '50.00 (50.00-60.00)'
  assert lines[-1] == ('† Fewer than 30 images, or fewer than 10 of a class: the interval is '
                       'too rough to trust (it can shrink to a point from a handful of images).')
  assert '†' not in markdown.metrics_table({'many': by_group['many']})
