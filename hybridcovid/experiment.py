"""Train, validate every epoch, checkpoint, and select on validation: the main job.

Every epoch is checkpointed; a run started on a work directory with
checkpoints resumes after the latest one. The checkpoint with the best
validation metric is then evaluated on the test split once, by `evaluate`,
which writes the report to `WORKDIR/report/`.
"""

import concurrent.futures
import dataclasses
import os

from absl import logging
import flax.linen as nn
import jax
import ml_collections
import numpy as np
import tqdm

from hybridcovid import classes, errors, evaluate, models, runs
from hybridcovid.data import input_pipeline, loading, sources
from hybridcovid.evaluation import (calibration, feature_distance, groups, metrics, multiclass,
                                    predictions)
from hybridcovid.evaluation import patients as patients_lib
from hybridcovid.report import writer
from hybridcovid.training import checkpoints, optimizers, parallel, train
from hybridcovid.training import summaries as summaries_lib

TENSORBOARD_DIR = 'tensorboard'
_COMPILE_TIME = ('a minute or more on a CPU the first time, read from the compilation cache '
                 'after that.')


class DivergedError(errors.UserError):
  """The loss became NaN or infinite."""


@dataclasses.dataclass
class TrainedRun:
  """A finished training: its checkpoints (`run`), the model they hold, the input
  pipeline and data-parallel layout it used, and the per-epoch history."""
  run: checkpoints.RunCheckpoints
  model: nn.Module
  stream: input_pipeline.InputPipeline
  data_parallel: parallel.DataParallel
  history: list[dict]


def check_splits(data: loading.LoadedData) -> None:
  """Training needs validation images to select on and test images to report."""
  for split in ('validation', 'test'):
    if not len(data.split_ids(split)):
      raise sources.DataSourceError(
          f'The {split} split is empty ({len(data.facts)} images in all): add data '
          'or change --config.data.split_fractions.')


def keep_trained_modalities(config: ml_collections.ConfigDict, data: loading.LoadedData
                            ) -> None:
  """Drops the modalities the data left out (`loading.leave_out_incomplete_modalities`) from
  the config, so that the run records, and evaluation keeps, the modalities it trained on."""
  left_out = data.report.get('modalities_left_out', {})
  config.data.modalities = tuple(modality for modality in config.data.modalities
                                 if modality not in left_out)


def check_selection_metric(config: ml_collections.ConfigDict) -> None:
  """Refuses a --config.train.selection_metric that validation does not compute."""
  choices = metrics.METRIC_NAMES + (
      multiclass.OVERALL_METRICS[1:] if len(classes.of_config(config.data)) > 2 else ())
  if config.train.selection_metric not in choices:
    raise errors.UserError(
        f'--config.train.selection_metric={config.train.selection_metric}: choose one of '
        f'{", ".join(choices)}.')


def validation_metrics(validation_predictions: list[dict], names: tuple[str, ...]) -> dict:
  """The overall validation metrics an epoch keeps: those of COVID against the rest and,
  with more than two classes, `classes` (`multiclass.class_metrics`), whose accuracy is
  that of the most probable class."""
  overall = groups.group_metrics(validation_predictions)['overall']
  if len(names) > 2:
    overall['classes'] = multiclass.group_class_metrics(validation_predictions,
                                                        names)['overall']
  return overall


def check_resumable(config: ml_collections.ConfigDict, run: checkpoints.RunCheckpoints,
                    workdir: str) -> None:
  """Refuses to resume checkpoints of another model: no epoch of theirs could be restored."""
  try:
    saved = ml_collections.ConfigDict(run.latest_record()['config'])
  except checkpoints.CheckpointError:  # None yet, or damaged: restoring deals with it.
    return
  differences = [
      f'--config.{field}={now} (the checkpoints have {then})'
      for field, then, now in (
          ('model.backbones', ','.join(saved.model.backbones), ','.join(config.model.backbones)),
          ('model.hidden_units', saved.model.hidden_units, config.model.hidden_units),
          ('data.classes', ','.join(classes.of_config(saved.data)),
           ','.join(classes.of_config(config.data))))
      if then != now]
  if differences:
    raise errors.UserError(
        f'{workdir} holds checkpoints of another model: {"; ".join(differences)}. Train it '
        'in a new --workdir, or set these back to resume.')


def _create_state(config, model, optimizer, abstract, mesh, run: checkpoints.RunCheckpoints):
  """The latest checkpoint's state and record, or a fresh state and None; both shaped like
  `abstract` (`train.abstract_train_state`), replicated over `mesh`."""
  restored = run.restore_latest(abstract)
  if restored is not None:
    run.recover_best(abstract)
    return restored
  fresh = train.create_train_state(model, optimizer, train.initial_variables(config))
  return train.replicate(fresh, mesh), None


def train_and_select(config: ml_collections.ConfigDict, workdir: str,
                     data: loading.LoadedData) -> TrainedRun:
  """Trains for `config.train.epochs`, resuming after the latest checkpoint; validates and
  checkpoints every epoch, keeping the best on validation apart."""
  data_parallel = parallel.DataParallel(config.parallel)
  stream = input_pipeline.InputPipeline(
      data, config.data, config.train.batch_size, jax.local_device_count(),
      jax.process_index(), jax.process_count(), config.seed)
  names = classes.of_config(config.data)
  model = models.create_classifier(config.model, len(names), axis_name=train.BATCH_AXIS)
  # The head-only epochs keep the backbones whole: weights and BatchNorm statistics.
  head_only_model = model.clone(freeze_backbone_batchnorm=True)
  optimizer = optimizers.create_optimizer(config.train, stream.steps_per_epoch)
  learning_rate = optimizers.learning_rate_schedule(config.train, stream.steps_per_epoch)
  run = checkpoints.RunCheckpoints(workdir)
  record = runs.run_record(config, workdir, runs.write_inputs(workdir, data))
  abstract = train.abstract_train_state(model, optimizer, config.data.image_size,
                                        data_parallel.mesh)
  check_resumable(config, run, workdir)
  train_fn = data_parallel.compile_train_step()
  rng = jax.random.key(config.seed + 1)
  first_epoch = run.latest_epoch() + 1
  # Across processes, pmap's lowering takes no shapes alone: it compiles at the first step.
  compile_ahead = first_epoch <= config.train.epochs and (
      data_parallel.mode == 'shard_map' or jax.process_count() == 1)
  with concurrent.futures.ThreadPoolExecutor(1) as background:
    compiling = None
    if compile_ahead:
      logging.info('Compiling the train step while the state is initialised or restored: %s',
                   _COMPILE_TIME)
      # Compiling needs only shapes, so it runs beside the initialisation (or
      # restoring), which compiles too; the first step finds it compiled.
      first_model = head_only_model if first_epoch <= config.train.head_only_epochs else model
      compiling = background.submit(
          lambda: train_fn.lower(
              data_parallel.abstract_device_state(abstract.replace(apply_fn=first_model.apply)),
              data_parallel.abstract_device_batch(train.abstract_batch(
                  config.train.batch_size, config.data.image_size)),
              rng).compile())
    state, previous = _create_state(config, model, optimizer, abstract, data_parallel.mesh, run)
    state = data_parallel.device_state(state)
    if compiling is not None:
      try:
        compiling.result()
      except Exception as error:  # pylint: disable=broad-except
        # Only time is lost: the first step compiles it, or says what is wrong.
        logging.warning('Compiling the train step ahead failed (%s); the first step '
                        'compiles it.', error)
  history = []
  if previous is not None:
    history = previous['history']
    if previous.get('config') != record['config']:
      logging.warning('The config differs from the one the checkpoint was written with; '
                      'resuming with the new one.')
    logging.info('Resuming after epoch %d from %s.', previous['epoch'], workdir)

  # The features too, as the final evaluation needs them: one program for both.
  eval_fn = data_parallel.compile_eval_step(train.eval_features_step)
  summaries = summaries_lib.Summaries(os.path.join(workdir, TENSORBOARD_DIR))
  # Not compiled ahead, or for another epoch (the newest checkpoint was damaged, and
  # training resumes before it).
  if len(history) < config.train.epochs and (not compile_ahead
                                             or len(history) + 1 != first_epoch):
    logging.info('Compiling the train step before the first one: %s', _COMPILE_TIME)
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
        unit='img', unit_scale=config.train.batch_size, disable=not runs.is_writer())

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
    validation_ids, validation_outputs = predictions.predict_split(
        train.inference_state(state), stream, 'validation', eval_fn, data_parallel)
    validation_predictions = predictions.prediction_rows(data, validation_ids,
                                                         validation_outputs)
    validation = validation_metrics(validation_predictions, names)
    labels, probabilities, patients = (
        [row[field] for row in validation_predictions]
        for field in ('label', 'probability', 'patient_id'))
    # Fitted on validation only, kept with the checkpoint, applied unchanged to test.
    operating_point = calibration.operating_point(labels, probabilities, patients,
                                                  config.eval.target_sensitivity)
    patient_operating_point = patients_lib.operating_point(
        validation_predictions, config.eval.patient_aggregation, config.eval.target_sensitivity)
    selection = multiclass.selection_value(validation, config.train.selection_metric)
    # Unweighted, unlike the training loss when classes are weighted.
    validation_loss = calibration.negative_log_likelihood(labels, probabilities)
    logging.info('Epoch %d: training loss %.4f, validation loss %.4f, %s %.4f, AUC %.4f.',
                 epoch, np.mean(losses), validation_loss, config.train.selection_metric,
                 selection, validation['auc'])
    summaries.scalars(last_step, {
        'validation/loss': validation_loss,
        **{f'validation/{name}': validation[name] for name in metrics.METRIC_NAMES},
        **{f'validation/classes/{name}': validation['classes'][name]
           for name in multiclass.OVERALL_METRICS if 'classes' in validation}})
    history.append({'epoch': epoch, 'train_loss': float(np.mean(losses)),
                    'validation_loss': validation_loss,
                    'train_accuracy': float(np.mean(accuracies)),
                    'learning_rate': float(learning_rate(last_step - 1)),
                    'validation': validation})
    # What prediction compares new images' features with, in folds holding every class.
    reference = feature_distance.fit_reference(
        validation_outputs['features'],
        [names.index(row['class']) if 'class' in row else row['label']
         for row in validation_predictions], patients)
    run.save(epoch, data_parallel.logical_state(state),
             {**record, 'validation': validation,
              'operating_point': operating_point,
              'patient_operating_point': patient_operating_point,
              'feature_reference': reference,
              'history': history},
             None if np.isnan(selection) else float(selection))
  summaries.close()
  run.wait()
  return TrainedRun(run, model, stream, data_parallel, history)


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str,
                       data: loading.LoadedData | None = None,
                       leave_one_source_out: dict | None = None) -> dict:
  """Trains, keeps the best validation checkpoint, evaluates it on test, writes the report.

  `data` are loaded unless given; `leave_one_source_out` (the results of
  `leave_one_source_out.train_folds` or `saved_results`) goes into the report.
  Returns the report's metrics: the selected epoch, its validation metrics, the
  test metrics per group and the per-epoch history.
  """
  if config.eval.leave_one_source_out and leave_one_source_out is None:
    raise ValueError('config.eval.leave_one_source_out is set: train with '
                     'leave_one_source_out.train, which trains the folds first.')
  patients_lib.check_aggregation(config.eval.patient_aggregation)
  check_selection_metric(config)
  workdir = os.path.abspath(workdir)
  if data is None:
    data = runs.load_data(config.data, workdir, config.seed)
  keep_trained_modalities(config, data)
  check_splits(data)
  trained = train_and_select(config, workdir, data)
  return evaluate.evaluate_and_report(
      config, workdir, trained.run, trained.model, trained.stream,
      trained.data_parallel, writer.REPORT_DIR, data, trained.history,
      evaluate.TRAINED_PROVENANCE, leave_one_source_out=leave_one_source_out)
