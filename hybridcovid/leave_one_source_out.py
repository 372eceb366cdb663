"""Leave one source out: a model trained without each source, tested on all of its images.

`train` runs one experiment per source, each in its own work directory, and
then the run itself, whose report sets each source's held-out results beside
the run's own on that source.
"""

import hashlib
import json
import os
import re

from absl import logging
import ml_collections

from hybridcovid import errors, experiment, runs
from hybridcovid.data import loading, sources
from hybridcovid.report import writer

LEAVE_ONE_SOURCE_OUT_DIR = 'leave_one_source_out'
LEAVE_ONE_SOURCE_OUT_SUMMARY = 'summary.json'


def _folder_name(source: str) -> str:
  """A folder name for `source`: the name itself where it is safe, else a safe form
  and a digest, so that no two sources share a folder."""
  safe = re.sub(r'[^A-Za-z0-9._-]+', '_', source)
  if safe == source:
    return source
  return f'{safe}-{hashlib.sha256(source.encode()).hexdigest()[:8]}'


def _finished_test_metrics(report_dir: str, epochs: int) -> dict | None:
  """The overall test metrics in `report_dir` if it holds the report of a run trained for
  all `epochs`, else None."""
  path = os.path.join(report_dir, writer.METRICS_FILE)
  if not os.path.isfile(path):
    return None
  with open(path) as f:
    result = json.load(f)
  return result['test']['overall'] if len(result['history']) >= epochs else None


def train_folds(config: ml_collections.ConfigDict, workdir: str,
                data: loading.LoadedData) -> dict:
  """For each source: trains on the others, tests on it, in its own work directory.

  The run's patient split is kept: the other sources' training and validation
  images train and select the model, and every image of the left-out source
  tests it. A source without which training is impossible (a class or the
  validation split would be empty, or it is the only source of its modality)
  is skipped with the reason. A source whose run has finished is not run again;
  an unfinished one resumes. Writes WORKDIR/leave_one_source_out/summary.json
  ({source: {'workdir'} or {'skipped'}}) and returns {source: {'workdir',
  'test': overall test metrics} or {'skipped': reason}}.
  """
  names = sorted({fact.record.source for fact in data.facts})
  if len(names) < 2:
    raise sources.DataSourceError(
        f'--config.eval.leave_one_source_out=True needs images from two sources or more; '
        f'these data have one ({names[0]}). Add a source, or give images their source '
        'in a manifest.csv column.')
  root = os.path.join(workdir, LEAVE_ONE_SOURCE_OUT_DIR)
  outcomes, results = {}, {}
  for source in names:
    fold = ml_collections.ConfigDict(config.to_dict())
    fold.eval.leave_one_source_out = False
    fold.data.held_out_source = source
    fold.data.split_file = config.data.split_file or os.path.join(workdir, loading.SPLIT_FILE)
    if config.data.synthetic and not config.data.synthetic_dir:
      fold.data.synthetic_dir = os.path.join(workdir, loading.SYNTHETIC_DIR)
    fold.data.tfds_dir = loading.prepared_dir(config.data, workdir)  # Prepared once.
    fold_dir = os.path.join(root, _folder_name(source))
    outcomes[source] = {'workdir': os.path.relpath(fold_dir, workdir)}
    test = _finished_test_metrics(os.path.join(fold_dir, writer.REPORT_DIR),
                                  fold.train.epochs)
    if test is not None:
      logging.info('Leave one source out: %s is done already, in %s.', source, fold_dir)
    else:
      logging.info('Leave one source out: training without %s, testing on it, in %s.',
                   source, fold_dir)
      try:
        test = experiment.train_and_evaluate(fold, fold_dir)['test']['overall']
      # Any error a user can act on; every process raises one when process 0 does.
      except errors.UserError as error:
        logging.warning('Leave one source out: %s skipped: %s', source, error)
        outcomes[source] = {'skipped': str(error)}
    results[source] = outcomes[source] if 'skipped' in outcomes[source] else {
        **outcomes[source], 'test': test}
  if runs.is_writer():
    with open(os.path.join(root, LEAVE_ONE_SOURCE_OUT_SUMMARY), 'w') as f:
      json.dump(outcomes, f, indent=1)
  return results


def train(config: ml_collections.ConfigDict, workdir: str) -> dict:
  """`train_folds`, then the run itself, whose report holds the folds' results."""
  workdir = os.path.abspath(workdir)
  experiment.check_selection_metric(config)
  data = runs.load_data(config.data, workdir, config.seed)
  experiment.check_splits(data)
  held_out = train_folds(config, workdir, data)
  return experiment.train_and_evaluate(config, workdir, data, held_out)


def saved_results(workdir: str) -> dict:
  """{source: test metrics of the model trained without it, or {'skipped': reason}},
  as a leave-one-source-out training in `workdir` left them; {} if there was none."""
  workdir = os.path.abspath(workdir)
  path = os.path.join(workdir, LEAVE_ONE_SOURCE_OUT_DIR, LEAVE_ONE_SOURCE_OUT_SUMMARY)
  if not os.path.isfile(path):
    return {}
  with open(path) as f:
    outcomes = json.load(f)
  results = {}
  for source, outcome in outcomes.items():
    metrics_path = os.path.join(workdir, outcome.get('workdir', ''), writer.REPORT_DIR,
                                writer.METRICS_FILE)
    if 'skipped' in outcome:
      results[source] = outcome
    elif not os.path.isfile(metrics_path):
      results[source] = {'skipped': f'{metrics_path} is missing: train with '
                                    '--config.eval.leave_one_source_out=True again.'}
    else:
      with open(metrics_path) as f:
        results[source] = {'workdir': outcome['workdir'],
                           'test': json.load(f)['test']['overall']}
  return results
