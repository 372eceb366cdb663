"""Train, select on validation, evaluate once on test and report: the main job.

Every epoch is checkpointed; a run started on a work directory with
checkpoints resumes after the latest one. The checkpoint with the best
validation metric is evaluated on the test split once, at the end, and the
report is written to `WORKDIR/report/`. `evaluate` re-evaluates that
checkpoint, on the run's own test split or on another data set (external
validation: every image of it, nothing tuned).
"""

import hashlib
import json
import os
import platform
import re
from importlib import metadata
from typing import Any

from absl import logging
import jax
from jax.experimental import multihost_utils
import ml_collections
import numpy as np
import tensorflow as tf
import tqdm

from hybridcovid import errors
from hybridcovid.evaluation import bootstrap, calibration, explain, feature_distance
from hybridcovid.training import checkpoints
from hybridcovid import hashing, models, report
from hybridcovid.evaluation import metrics, probe
from hybridcovid.training import optimizers, parallel, train
from hybridcovid.data import input_pipeline, loading, resize, sources

PACKAGES = ('jax', 'jaxlib', 'flax', 'optax', 'orbax-checkpoint', 'tensorflow-cpu',
            'tensorflow-datasets', 'numpy')
INPUTS_FILE = 'inputs.json'
TENSORBOARD_DIR = 'tensorboard'
EXTERNAL_DIR = 'external'
LEAVE_ONE_SOURCE_OUT_DIR = 'leave_one_source_out'
LEAVE_ONE_SOURCE_OUT_SUMMARY = 'summary.json'
# Outcomes at the decision threshold: (name, true label, decision).
OUTCOMES = (('true positive', 1, 1), ('false positive', 0, 1),
            ('true negative', 0, 0), ('false negative', 1, 0))
# The data fields that name the images; any difference makes an evaluation external.
DATA_SOURCE_FIELDS = ('cxr_dir', 'cxr_layout', 'ct_dir', 'ct_layout', 'folder_dir',
                      'synthetic', 'synthetic_seed', 'synthetic_patients_per_class',
                      'synthetic_image_size', 'modalities')
# Fields the model was trained with; evaluation always uses the checkpoint's.
# Runs older than max_stored_side lack it: they stored whole images (0).
DATA_MODEL_FIELDS = ('image_size', 'resize', 'ct_window_level', 'ct_window_width',
                     'max_stored_side')


class DivergedError(errors.UserError):
  """The loss became NaN or infinite."""


def _versions() -> dict[str, str]:
  versions = {}
  for package in PACKAGES:
    try:
      versions[package] = metadata.version(package)
    except metadata.PackageNotFoundError:
      continue
  return versions


def _is_writer() -> bool:
  """Whether this process writes the files every process would write alike."""
  return jax.process_index() == 0


def load_data(data_config: ml_collections.ConfigDict, workdir: str, seed: int,
              all_test: bool = False) -> loading.LoadedData:
  """`loading.load`, by process 0 first: it alone prepares the data and writes files.

  The other processes then read what it prepared; if it fails, they stop too.
  """
  data, error = None, None
  if _is_writer():
    try:
      data = loading.load(data_config, workdir, seed, all_test=all_test)
    except errors.UserError as caught:
      error = caught
  failed = bool(multihost_utils.broadcast_one_to_all(np.array(error is not None)))
  if error is not None:
    raise error
  if failed:
    raise sources.DataSourceError('Process 0 could not prepare the data; its log says why.')
  return data or loading.load(data_config, workdir, seed, write_files=False,
                               all_test=all_test)


def _write_inputs(workdir: str, data: loading.LoadedData) -> str:
  """Writes every input file's sha256 once; returns the digest the checkpoints name."""
  text = json.dumps({fact.record.key: fact.sha256 for fact in data.facts}, indent=0)
  if _is_writer():
    with open(os.path.join(workdir, INPUTS_FILE), 'w') as f:
      f.write(text)
  return hashlib.sha256(text.encode()).hexdigest()


def _run_record(config: ml_collections.ConfigDict, workdir: str, inputs_digest: str) -> dict:
  split_path = config.data.split_file or os.path.join(workdir, loading.SPLIT_FILE)
  return {
      'config': json.loads(config.to_json_best_effort()),
      'split_file': os.path.abspath(split_path),
      'split_sha256': hashing.file_sha256(split_path),
      'inputs_file': os.path.join(os.path.abspath(workdir), INPUTS_FILE),
      'inputs_sha256': inputs_digest,
      'seed': config.seed,
      'versions': {**_versions(), 'python': platform.python_version()},
      'devices': [str(device) for device in jax.devices()],
  }


def predict_split(state: train.TrainState, stream: input_pipeline.InputPipeline, split: str,
                  eval_fn, data_parallel: parallel.DataParallel) -> tuple[np.ndarray, Any]:
  """(example ids, `eval_fn`'s outputs) of every example of `split`, once each.

  `state` is in `data_parallel`'s layout. The outputs keep `eval_fn`'s
  structure: an array, or a dict of arrays.
  """
  ids, outputs = [], []
  for batch, device_batch in parallel.prefetch_to_devices(
      stream.eval_batches(split), data_parallel, ('image',)):
    mask = np.asarray(multihost_utils.process_allgather(batch['mask'], tiled=True))
    batch_ids = np.asarray(multihost_utils.process_allgather(batch['example_id'], tiled=True))
    ids.append(batch_ids[mask])
    outputs.append(jax.tree.map(lambda x: x[mask], data_parallel.host_outputs(
        eval_fn(state, device_batch))))
  return np.concatenate(ids), jax.tree.map(lambda *parts: np.concatenate(parts), *outputs)


def prediction_rows(data: loading.LoadedData, ids: np.ndarray,
                    probabilities: np.ndarray) -> list[dict]:
  """One row per example: key, patient, modality, source, label, COVID probability."""
  records = [data.facts[i].record for i in ids]
  return [{'key': record.key, 'patient_id': record.patient_id,
           'modality': record.modality, 'source': record.source,
           'label': record.label, 'probability': float(probability)}
          for record, probability in zip(records, probabilities)]


def group_metrics(predictions: list[dict], threshold: float = 0.5,
                  eval_config: ml_collections.ConfigDict | None = None) -> dict:
  """Metrics of `predictions` overall, per modality and per source, at `threshold`.

  With `eval_config` (the config's `eval` section), each group's metrics also
  get bootstrap confidence `intervals`, resampling patients, and
  `too_few_images` for a group too small for them to be trusted.
  """
  labels = np.array([row['label'] for row in predictions])
  scores = np.array([row['probability'] for row in predictions])
  modalities = np.array([row['modality'] for row in predictions])
  sources = np.array([row['source'] for row in predictions])
  masks = {'overall': np.ones(len(predictions), bool),
           **{modality: modalities == modality for modality in sorted(set(modalities.tolist()))},
           **{f'source:{source}': sources == source for source in sorted(set(sources.tolist()))}}
  result = {group: metrics.binary_metrics(labels[mask], scores[mask], threshold)
            for group, mask in masks.items()}
  if eval_config is not None:
    patients = np.array([row['patient_id'] for row in predictions])
    for group, values in result.items():
      mask = masks[group]
      values['intervals'] = bootstrap.confidence_intervals(
          labels[mask], scores[mask], patients[mask], threshold,
          eval_config.bootstrap_resamples, eval_config.bootstrap_seed,
          eval_config.confidence_level)
      values['too_few_images'] = bootstrap.too_few_images(values['counts'])
  return result


def shortcut_probe(data: loading.LoadedData, ids: np.ndarray, features: np.ndarray,
                   seed: int) -> dict:
  """`probe.shortcut_probe` on the pooled `features` of the examples `ids`, with each
  patient's images in one fold."""
  records = [data.facts[i].record for i in ids]
  attributes = {'disease': np.array([record.label for record in records]),
                'source': np.array([record.source for record in records]),
                'modality': np.array([record.modality for record in records])}
  return probe.shortcut_probe(features, attributes,
                              np.array([record.patient_id for record in records]), seed)


def explanation_examples(predictions: list[dict], threshold: float, per_outcome: int
                         ) -> list[dict]:
  """Up to `per_outcome` rows of each outcome at `threshold`, the most confident first,
  one image per patient."""
  chosen = []
  for outcome, label, decision in OUTCOMES:
    rows = [row for row in predictions
            if row['label'] == label and (row['probability'] >= threshold) == decision]
    rows.sort(key=lambda row: (-abs(row['probability'] - threshold), row['key']))
    patients = set()
    for row in rows:
      if len(patients) < per_outcome and row['patient_id'] not in patients:
        patients.add(row['patient_id'])
        chosen.append({**row, 'outcome': outcome})
  return chosen


def _explain_examples(config, state, data, predictions, threshold, report_dir) -> list[dict]:
  """Grad-CAM PNGs of sample test images in `report_dir`/gradcam/; a row for each."""
  examples = explanation_examples(predictions, threshold, config.eval.gradcam_per_outcome)
  records = {fact.record.key: fact.record for fact in data.facts}
  images, _, problems = resize.read_resized([records[row['key']].path for row in examples],
                                             config.data)
  for problem in problems:
    logging.warning('No Grad-CAM for %s: %s', problem['path'], problem['reason'])
  unread = {problem['path'] for problem in problems}
  examples = [row for row in examples if records[row['key']].path not in unread]
  if not examples:
    return []
  os.makedirs(os.path.join(report_dir, explain.GRADCAM_DIR), exist_ok=True)
  names, counts = [], {}
  for row in examples:
    counts[row['outcome']] = counts.get(row['outcome'], 0) + 1
    names.append(f"{row['outcome'].replace(' ', '_')}_{counts[row['outcome']]}.png")
  shares = explain.explain_images(
      models.create_classifier(config.model), train.host_variables(state), images,
      [row['probability'] >= threshold for row in examples],
      [explain.decision_title(row['outcome'], row['probability'], threshold)
       for row in examples],
      [os.path.join(report_dir, explain.GRADCAM_DIR, name) for name in names])
  return [{'key': row['key'], 'patient_id': row['patient_id'], 'modality': row['modality'],
           'outcome': row['outcome'], 'probability': row['probability'],
           'image': f'{explain.GRADCAM_DIR}/{name}',
           'evidence_shares': image_shares}
          for row, name, image_shares in zip(examples, names, shares)]


TRAINED_PROVENANCE = ('The test split was used once, for the table below, and for '
                      'nothing else.')
EVALUATED_PROVENANCE = ('Evaluated again from the selected checkpoint (--mode=evaluate) on '
                        "the run's test split; nothing was chosen on it.")
EXTERNAL_PROVENANCE = ('External validation: every image of a data set the model never '
                       'saw, with nothing chosen or tuned on it.')


def _describe(config: ml_collections.ConfigDict, data: loading.LoadedData,
              title: str, provenance: str) -> dict:
  backbones = tuple(config.model.backbones)
  model = ' + '.join(backbones) + (' (hybrid)' if len(backbones) > 1 else '')
  pretrained = [name for name in backbones if config.model.pretrained[name]]
  model += (f', ImageNet-initialised {", ".join(pretrained)}' if pretrained
            else ', randomly initialised')
  counts = {split: len(data.split_ids(split)) for split in ('train', 'validation', 'test')}
  patients = {split: len({data.facts[i].record.patient_id for i in data.split_ids(split)})
              for split in counts}
  modalities = sorted({fact.record.modality for fact in data.facts})
  sources_seen = sorted({fact.record.source for fact in data.facts})
  notes = []
  if config.data.synthetic:
    notes.append('Synthetic images generated by hybridcovid.data.synthetic: these numbers '
                 'check the software, they say nothing about real patients.')
  if not pretrained:
    notes.append('No ImageNet weights were loaded (--config.model.pretrained.*), unlike '
                 'the paper.')
  if config.data.held_out_source:
    title += f': tested on {config.data.held_out_source}, trained without it'
    notes.append(f'Leave one source out: every image of {config.data.held_out_source} is '
                 'in the test split, and the model was trained and selected on the other '
                 "sources' training and validation images only.")
  return {
      'title': title,
      'model': model,
      'image_size': config.data.image_size,
      'data': f'{", ".join(m.upper() for m in modalities)} from {", ".join(sources_seen)}',
      'split': ', '.join(f'{split} {counts[split]} images of {patients[split]} patients'
                         for split in counts),
      'epochs': config.train.epochs,
      'provenance': provenance,
      'notes': notes,
  }


class _Summaries:
  """TensorBoard scalars, written by process 0 only."""

  def __init__(self, workdir: str):
    self._writer = (tf.summary.create_file_writer(os.path.join(workdir, TENSORBOARD_DIR))
                    if _is_writer() else None)

  def scalars(self, step: int, values: dict[str, float]) -> None:
    if self._writer is None:
      return
    with self._writer.as_default():
      for name, value in values.items():
        tf.summary.scalar(name, value, step=step)

  def close(self) -> None:
    if self._writer is not None:
      self._writer.close()


def _create_state(config, model, optimizer, abstract, mesh, run: checkpoints.RunCheckpoints):
  """The latest checkpoint's state and record, or a fresh state and None; both shaped like
  `abstract` (`train.abstract_train_state`), replicated over `mesh`."""
  restored = run.restore_latest(abstract)
  if restored is not None:
    run.recover_best(abstract)
    return restored
  fresh = train.create_train_state(model, optimizer, train.initial_variables(config))
  return train.replicate(fresh, mesh), None


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> dict:
  """Trains, keeps the best validation checkpoint, evaluates it on test, writes the report.

  Returns the report's metrics: the selected epoch, its validation metrics,
  the test metrics per group and the per-epoch history.
  """
  workdir = os.path.abspath(workdir)
  data = load_data(config.data, workdir, config.seed)
  for split in ('validation', 'test'):
    if not len(data.split_ids(split)):
      raise sources.DataSourceError(
          f'The {split} split is empty ({len(data.facts)} images in all): add data '
          'or change --config.data.split_fractions.')
  if config.eval.leave_one_source_out:
    train_leave_one_source_out(config, workdir, data)
  data_parallel = parallel.DataParallel(config.parallel)
  stream = input_pipeline.InputPipeline(
      data, config.data, config.train.batch_size, jax.local_device_count(),
      jax.process_index(), jax.process_count(), config.seed)
  model = models.create_classifier(config.model, axis_name=train.BATCH_AXIS)
  # The head-only epochs keep the backbones whole: weights and BatchNorm statistics.
  head_only_model = model.clone(freeze_backbone_batchnorm=True)
  optimizer = optimizers.create_optimizer(config.train, stream.steps_per_epoch)
  learning_rate = optimizers.learning_rate_schedule(config.train, stream.steps_per_epoch)
  run = checkpoints.RunCheckpoints(workdir)
  record = _run_record(config, workdir, _write_inputs(workdir, data))
  abstract = train.abstract_train_state(model, optimizer, config.data.image_size,
                                        data_parallel.mesh)
  state, previous = _create_state(config, model, optimizer, abstract, data_parallel.mesh, run)
  state = data_parallel.device_state(state)
  history = []
  if previous is not None:
    history = previous['history']
    if previous.get('config') != record['config']:
      logging.warning('The config differs from the one the checkpoint was written with; '
                      'resuming with the new one.')
    logging.info('Resuming after epoch %d from %s.', previous['epoch'], workdir)

  train_fn = data_parallel.compile_train_step()
  # The features too, as the final evaluation needs them: one program for both.
  eval_fn = data_parallel.compile_eval_step(train.eval_features_step)
  rng = jax.random.key(config.seed + 1)
  summaries = _Summaries(workdir)
  if len(history) < config.train.epochs:
    logging.info('Compiling the train step before the first one: a minute or more on a CPU '
                 'the first time, read from the compilation cache after that.')
  # Epochs count from 1 here as in every log, checkpoint and report.
  for epoch in range(len(history) + 1, config.train.epochs + 1):
    state = state.replace(apply_fn=(
        head_only_model if epoch <= config.train.head_only_epochs else model).apply)
    first_step = int(data_parallel.host_scalars({'step': state.step})['step'])
    losses, accuracies = [], []
    # Counted in images, so that the rate reads in images/s.
    progress = tqdm.tqdm(
        parallel.prefetch_to_devices(stream.train_epoch(epoch - 1), data_parallel,
                                     train.BATCH_FIELDS),
        total=stream.steps_per_epoch, desc=f'epoch {epoch}/{config.train.epochs}',
        unit='img', unit_scale=config.train.batch_size, disable=not _is_writer())

    def record_step(step: int, step_metrics: dict) -> None:
      values = data_parallel.host_scalars(step_metrics)
      if not np.isfinite(values['loss']):
        run.wait()
        raise DivergedError(
            f'The loss became {values["loss"]} in epoch {epoch}; the last good '
            f'checkpoint is kept in {workdir}. Lower --config.train.learning_rate or set '
            '--config.train.gradient_clip_norm.')
      losses.append(values['loss'])
      accuracies.append(values['accuracy'])
      progress.set_postfix(loss=f'{values["loss"]:.4f}')
      summaries.scalars(step, {'train/loss': values['loss'],
                               'train/accuracy': values['accuracy'],
                               'train/learning_rate': float(learning_rate(step - 1))})

    pending = None
    for index, (_, batch) in enumerate(progress):
      state, step_metrics = train_fn(state, batch, rng)
      # The previous step's metrics are read while this one is queued behind
      # it: the devices never wait for the host between steps.
      if pending is not None:
        record_step(*pending)
      pending = (first_step + index + 1, step_metrics)
    record_step(*pending)
    last_step = pending[0]
    validation_ids, validation_outputs = predict_split(state, stream, 'validation', eval_fn,
                                                       data_parallel)
    validation_predictions = prediction_rows(data, validation_ids,
                                             validation_outputs['probability'])
    validation = group_metrics(validation_predictions)
    labels, probabilities, patients = (
        [row[field] for row in validation_predictions]
        for field in ('label', 'probability', 'patient_id'))
    # Fitted on validation only, kept with the checkpoint, applied unchanged to test.
    operating_point = calibration.operating_point(labels, probabilities, patients,
                                                  config.eval.target_sensitivity)
    selection = validation['overall'][config.train.selection_metric]
    # Unweighted, unlike the training loss when classes are weighted.
    validation_loss = calibration.negative_log_likelihood(labels, probabilities)
    logging.info('Epoch %d: training loss %.4f, validation loss %.4f, %s %.4f, AUC %.4f.',
                 epoch, np.mean(losses), validation_loss, config.train.selection_metric,
                 selection, validation['overall']['auc'])
    summaries.scalars(last_step, {
        'validation/loss': validation_loss,
        **{f'validation/{name}': validation['overall'][name] for name in metrics.METRIC_NAMES}})
    history.append({'epoch': epoch, 'train_loss': float(np.mean(losses)),
                    'validation_loss': validation_loss,
                    'train_accuracy': float(np.mean(accuracies)),
                    'learning_rate': float(learning_rate(last_step - 1)),
                    'validation': validation['overall']})
    # What prediction compares new images' features with.
    reference = feature_distance.fit_reference(validation_outputs['features'], labels,
                                               patients)
    run.save(epoch, data_parallel.logical_state(state),
             {**record, 'validation': validation['overall'],
              'operating_point': operating_point, 'feature_reference': reference,
              'history': history},
             None if np.isnan(selection) else float(selection))
  summaries.close()
  run.wait()
  del state  # Its device buffers, before the best checkpoint is restored beside it.
  return _evaluate_and_report(config, workdir, run, abstract, stream, data_parallel,
                              report.REPORT_DIR, data, history, TRAINED_PROVENANCE)


def _folder_name(source: str) -> str:
  """A folder name for `source`: the name itself where it is safe, else a safe form
  and a digest, so that no two sources share a folder."""
  safe = re.sub(r'[^A-Za-z0-9._-]+', '_', source)
  if safe == source:
    return source
  return f'{safe}-{hashlib.sha256(source.encode()).hexdigest()[:8]}'


def _finished(report_dir: str, epochs: int) -> bool:
  """Whether `report_dir` holds the report of a run trained for all `epochs`."""
  path = os.path.join(report_dir, report.METRICS_FILE)
  if not os.path.isfile(path):
    return False
  with open(path) as f:
    return len(json.load(f)['history']) >= epochs


def train_leave_one_source_out(config: ml_collections.ConfigDict, workdir: str,
                               data: loading.LoadedData) -> dict:
  """For each source: trains on the others, tests on it, in its own work directory.

  The run's patient split is kept: the other sources' training and validation
  images train and select the model, and every image of the left-out source
  tests it. A source without which training is impossible (a class or the
  validation split would be empty, or it is the only source of its modality)
  is skipped with the reason. A source whose run has finished is not run again;
  an unfinished one resumes. Returns and writes
  WORKDIR/leave_one_source_out/summary.json: {source: {'workdir'} or {'skipped'}}.
  """
  names = sorted({fact.record.source for fact in data.facts})
  if len(names) < 2:
    raise sources.DataSourceError(
        f'--config.eval.leave_one_source_out=True needs images from two sources or more; '
        f'these data have one ({names[0]}). Add a source, or give images their source '
        'in a manifest.csv column.')
  root = os.path.join(workdir, LEAVE_ONE_SOURCE_OUT_DIR)
  outcomes = {}
  for source in names:
    fold = ml_collections.ConfigDict(config.to_dict())
    fold.eval.leave_one_source_out = False
    fold.data.held_out_source = source
    fold.data.split_file = config.data.split_file or os.path.join(workdir, loading.SPLIT_FILE)
    if config.data.synthetic and not config.data.synthetic_dir:
      fold.data.synthetic_dir = os.path.join(workdir, loading.SYNTHETIC_DIR)
    fold.data.tfds_dir = loading.prepared_dir(config.data, workdir)  # Prepared once.
    fold_dir = os.path.join(root, _folder_name(source))
    outcome = {'workdir': os.path.relpath(fold_dir, workdir)}
    if _finished(os.path.join(fold_dir, report.REPORT_DIR), fold.train.epochs):
      logging.info('Leave one source out: %s is done already, in %s.', source, fold_dir)
      outcomes[source] = outcome
      continue
    logging.info('Leave one source out: training without %s, testing on it, in %s.',
                 source, fold_dir)
    try:
      train_and_evaluate(fold, fold_dir)
    # Any error a user can act on; every process raises one when process 0 does.
    except errors.UserError as error:
      logging.warning('Leave one source out: %s skipped: %s', source, error)
      outcome = {'skipped': str(error)}
    outcomes[source] = outcome
  if _is_writer():
    with open(os.path.join(root, LEAVE_ONE_SOURCE_OUT_SUMMARY), 'w') as f:
      json.dump(outcomes, f, indent=1)
  return outcomes


def leave_one_source_out_results(workdir: str) -> dict:
  """{source: test metrics of the model trained without it, or {'skipped': reason}},
  from a leave-one-source-out run in `workdir`; {} if there was none."""
  path = os.path.join(workdir, LEAVE_ONE_SOURCE_OUT_DIR, LEAVE_ONE_SOURCE_OUT_SUMMARY)
  if not os.path.isfile(path):
    return {}
  with open(path) as f:
    outcomes = json.load(f)
  results = {}
  for source, outcome in outcomes.items():
    metrics_path = os.path.join(workdir, outcome.get('workdir', ''), report.REPORT_DIR,
                                report.METRICS_FILE)
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


def _evaluate_and_report(config, workdir, run, template, stream, data_parallel,
                         report_dir, data, history, provenance,
                         title='hybridcovid report') -> dict:
  """Evaluates the best checkpoint on the test split; process 0 writes the report."""
  best, best_record = run.restore_best(template)
  # One pass per split gives the probabilities and the shortcut probe's features,
  # of the images the weights never trained on.
  eval_fn = data_parallel.compile_eval_step(train.eval_features_step)
  device_best = data_parallel.device_state(best)
  outputs = {split: predict_split(device_best, stream, split, eval_fn, data_parallel)
             for split in ('validation', 'test') if len(data.split_ids(split))}
  test_ids, test_outputs = outputs['test']
  predictions = prediction_rows(data, test_ids, test_outputs['probability'])
  result = {'selected_epoch': best_record['epoch'],
            'selection_metric': best_record['config']['train']['selection_metric'],
            'validation': best_record['validation'],
            'test': group_metrics(predictions, 0.5, config.eval),
            'intervals': {'level': config.eval.confidence_level,
                          'resamples': config.eval.bootstrap_resamples, 'unit': 'patient'}}
  operating_point = best_record.get('operating_point')
  if operating_point:  # Runs trained before operating points were kept have none.
    labels = [row['label'] for row in predictions]
    result['operating_point'] = {
        **operating_point,
        'test': group_metrics(predictions, operating_point['threshold'], config.eval),
        'test_ece': calibration.expected_calibration_error(
            labels, [row['probability'] for row in predictions])}
    if calibration.scaling_used(operating_point):
      for row in predictions:
        row['calibrated_probability'] = float(calibration.apply_temperature(
            row['probability'], operating_point['temperature']))
      result['operating_point']['test_ece_calibrated'] = calibration.expected_calibration_error(
          labels, [row['calibrated_probability'] for row in predictions])
    result['operating_point']['warnings'] = report.sensitivity_warnings(
        result['operating_point'])
    for warning in result['operating_point']['warnings']:
      logging.warning('Sensitivity: %s', warning)
  # Every process fits the probe alike; process 0 alone explains and writes.
  result['shortcut_probe'] = shortcut_probe(
      data, np.concatenate([ids for ids, _ in outputs.values()]),
      np.concatenate([split_outputs['features'] for _, split_outputs in outputs.values()]),
      config.seed)
  if result['shortcut_probe']['warning']:
    logging.warning('Shortcut probe: %s', result['shortcut_probe']['warning'])
  if report_dir == report.REPORT_DIR:  # The run's own report, not an external one.
    held_out = leave_one_source_out_results(workdir)
    if held_out:
      result['leave_one_source_out'] = held_out
  if _is_writer():
    threshold = operating_point['threshold'] if operating_point else 0.5
    result['explanations'] = {
        'threshold': threshold,
        'feature_map_size': explain.feature_map_size(config.data.image_size),
        'examples': _explain_examples(config, best, data, predictions, threshold,
                                      os.path.join(workdir, report_dir))}
    report.write_report(os.path.join(workdir, report_dir), result, predictions, history,
                        _describe(config, data, title, provenance))
    logging.info('Report written to %s.', os.path.join(workdir, report_dir, 'report.md'))
  run.close()
  return {**result, 'history': history}


def _external_name(data_config: ml_collections.ConfigDict) -> str:
  """A folder name for an external data set: its folders' names and a short digest."""
  fields = {name: data_config[name] for name in DATA_SOURCE_FIELDS}
  folders = [os.path.basename(os.path.normpath(data_config[name]))
             for name in ('cxr_dir', 'ct_dir', 'folder_dir') if data_config[name]]
  stem = '-'.join(folders) or ('synthetic' if data_config.synthetic else 'data')
  digest = hashlib.sha256(json.dumps(fields, sort_keys=True, default=list).encode())
  return f'{stem}-{digest.hexdigest()[:8]}'


def evaluate(config: ml_collections.ConfigDict, workdir: str) -> dict:
  """Re-evaluates the run's selected checkpoint and rewrites its report.

  Without data flags, or with the data the run was trained on, the run's own
  test split is evaluated into `WORKDIR/report/`. With any other data
  (`--config.data.*`), every image of that data set is evaluated as it is,
  nothing tuned on it, into `WORKDIR/external/<name>/report/`. The model and
  its input size always come from the checkpoint.
  """
  workdir = os.path.abspath(workdir)
  run = checkpoints.open_trained_run(workdir)
  trained = ml_collections.ConfigDict(run.best_record()['config'])
  if config.data.held_out_source and (config.data.held_out_source
                                      != trained.data.get('held_out_source', '')):
    raise errors.UserError(
        '--config.data.held_out_source chooses what a model trains without; it cannot '
        'change for evaluation. Train with it, or with '
        '--config.eval.leave_one_source_out=True.')
  names_data = any(config.data[name] for name in ('cxr_dir', 'ct_dir', 'folder_dir', 'synthetic'))
  external = names_data and any(_normalised(config.data[name]) != _normalised(trained.data[name])
                                for name in DATA_SOURCE_FIELDS)
  if external:
    data_config = ml_collections.ConfigDict(config.data.to_dict())
    for name in DATA_MODEL_FIELDS:
      data_config[name] = trained.data.get(name, 0)
    data_dir = os.path.join(workdir, EXTERNAL_DIR, _external_name(data_config))
    data = load_data(data_config, data_dir, config.seed, all_test=True)
    report_dir = os.path.relpath(os.path.join(data_dir, report.REPORT_DIR), workdir)
    title, provenance = 'hybridcovid external validation report', EXTERNAL_PROVENANCE
    logging.info('External validation on all %d images of %s.', len(data.facts), data_dir)
  else:
    data_config = trained.data  # The run's own split, duplicates and all.
    data = load_data(data_config, workdir, trained.seed)
    report_dir, title, provenance = report.REPORT_DIR, 'hybridcovid report', EVALUATED_PROVENANCE
  data_parallel = parallel.DataParallel(config.parallel)
  stream = input_pipeline.InputPipeline(
      data, data_config, trained.train.batch_size, jax.local_device_count(),
      jax.process_index(), jax.process_count(), trained.seed)
  model = models.create_classifier(trained.model, axis_name=train.BATCH_AXIS)
  template = train.abstract_train_state(
      model, optimizers.create_optimizer(trained.train, 1), trained.data.image_size,
      data_parallel.mesh)
  described = ml_collections.ConfigDict(trained.to_dict())
  described.data = data_config  # The report describes the data it evaluated.
  described.eval = config.eval  # How to evaluate is this command's choice.
  return _evaluate_and_report(described, workdir, run, template, stream, data_parallel,
                              report_dir, data,
                              run.latest_record()['history'], provenance, title)


def _normalised(value):
  """A config value in a form that compares equal however it was written."""
  if isinstance(value, (list, tuple)):
    return list(value)
  if isinstance(value, str) and value:
    return os.path.abspath(os.path.expanduser(value))
  return value
