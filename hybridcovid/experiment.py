"""Train, select on validation, evaluate once on test: the main job.

Every epoch is checkpointed; a run started on a work directory with
checkpoints resumes after the latest one. The checkpoint with the best
validation metric is evaluated on the test split once, at the end.
"""

import json
import os
import platform
from importlib import metadata

from absl import logging
import jax
from jax.experimental import multihost_utils
import ml_collections
import numpy as np
import tqdm

from hybridcovid import checkpoints, errors, hashing, metrics, models
from hybridcovid import optimizers, train
from hybridcovid.data import pipeline, sources

PACKAGES = ('jax', 'jaxlib', 'flax', 'optax', 'orbax-checkpoint', 'tensorflow-cpu',
            'tensorflow-datasets', 'numpy')
METRICS_FILE = 'metrics.json'
INPUTS_FILE = 'inputs.json'


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


def _write_inputs(workdir: str, data: pipeline.LoadedData) -> str:
  """Writes every input file's sha256 once; returns the digest the checkpoints name."""
  path = os.path.join(workdir, INPUTS_FILE)
  with open(path, 'w') as f:
    json.dump({fact.record.key: fact.sha256 for fact in data.facts}, f, indent=0)
  return hashing.file_sha256(path)


def _run_record(config: ml_collections.ConfigDict, workdir: str, inputs_digest: str) -> dict:
  split_path = config.data.split_file or os.path.join(workdir, pipeline.SPLIT_FILE)
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


def _global_batch(batch: dict, sharding: jax.sharding.NamedSharding) -> dict:
  return {name: jax.make_array_from_process_local_data(sharding, value)
          for name, value in batch.items()}


def predict_split(state: train.TrainState, stream: pipeline.InputPipeline, split: str,
                  eval_fn, sharding) -> tuple[np.ndarray, np.ndarray]:
  """(example ids, COVID probabilities) of every example of `split`, once each."""
  ids, probabilities = [], []
  for batch in stream.eval_batches(split):
    device_batch = _global_batch({'image': batch['image']}, sharding)
    output = np.asarray(multihost_utils.process_allgather(
        eval_fn(state, device_batch), tiled=True))
    mask = np.asarray(multihost_utils.process_allgather(
        batch['mask'], tiled=True))
    batch_ids = np.asarray(multihost_utils.process_allgather(
        batch['example_id'], tiled=True))
    ids.append(batch_ids[mask])
    probabilities.append(output[mask])
  return np.concatenate(ids), np.concatenate(probabilities)


def evaluate_split(state, stream, split, eval_fn, sharding) -> dict:
  """Metrics overall and per modality and source on `split`."""
  ids, probabilities = predict_split(state, stream, split, eval_fn, sharding)
  records = [stream.data.facts[i].record for i in ids]
  labels = np.array([record.label for record in records])
  result = dict(metrics.metrics_by_group(
      labels, probabilities, np.array([record.modality for record in records])))
  for source, values in metrics.metrics_by_group(
      labels, probabilities, np.array([record.source for record in records])).items():
    if source != 'overall':
      result[f'source:{source}'] = values
  return result


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> dict:
  """Trains, keeps the best validation checkpoint, evaluates it on test; returns the test metrics."""
  workdir = os.path.abspath(workdir)
  data = pipeline.load(config.data, workdir, config.seed)
  for split in ('validation', 'test'):
    if not len(data.split_ids(split)):
      raise sources.DataSourceError(
          f'The {split} split is empty ({len(data.facts)} images in all): add data '
          'or change --config.data.split_fractions.')
  mesh = train.create_mesh()
  sharding = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec(train.BATCH_AXIS))
  stream = pipeline.InputPipeline(
      data, config.data, config.train.batch_size, jax.local_device_count(),
      jax.process_index(), jax.process_count(), config.seed)
  model = models.create_classifier(config.model, axis_name=train.BATCH_AXIS)
  optimizer = optimizers.create_optimizer(config.train, stream.steps_per_epoch)
  state = train.create_train_state(model, optimizer, train.initial_variables(config))

  run = checkpoints.RunCheckpoints(workdir)
  start_epoch = 0
  restored = run.restore_latest(state)
  record = _run_record(config, workdir, _write_inputs(workdir, data))
  if restored is not None:
    state, previous = restored
    start_epoch = previous['epoch'] + 1
    if previous.get('config') != record['config']:
      logging.warning('The config differs from the one the checkpoint was written with; '
                      'resuming with the new one.')
    logging.info('Resuming after epoch %d from %s.', previous['epoch'], workdir)

  train_fn = train.compile_train_step(mesh, config.parallel)
  eval_fn = train.compile_eval_step(mesh)
  rng = jax.random.key(config.seed + 1)
  for epoch in range(start_epoch, config.train.epochs):
    progress = tqdm.tqdm(stream.train_epoch(epoch), total=stream.steps_per_epoch,
                         desc=f'epoch {epoch + 1}/{config.train.epochs}',
                         disable=jax.process_index() != 0)
    for batch in progress:
      state, step_metrics = train_fn(state, _global_batch(batch, sharding), rng)
      loss = float(step_metrics['loss'])
      if not np.isfinite(loss):
        run.wait()
        raise DivergedError(
            f'The loss became {loss} in epoch {epoch + 1}; the last good checkpoint '
            f'is kept in {workdir}. Lower --config.train.learning_rate or set '
            '--config.train.gradient_clip_norm.')
      progress.set_postfix(loss=f'{loss:.4f}')
    validation = evaluate_split(state, stream, 'validation', eval_fn, sharding)
    selection = validation['overall'][config.train.selection_metric]
    logging.info('Epoch %d: validation %s %.4f.', epoch + 1,
                 config.train.selection_metric, selection)
    run.save(epoch, state, {**record, 'validation': validation['overall']},
             None if np.isnan(selection) else float(selection))
  run.wait()

  best, best_record = run.restore_best(state)
  test = evaluate_split(best, stream, 'test', eval_fn, sharding)
  result = {'selected_epoch': best_record['epoch'],
            'selection_metric': config.train.selection_metric,
            'validation': best_record['validation'], 'test': test}
  with open(os.path.join(workdir, METRICS_FILE), 'w') as f:
    json.dump(result, f, indent=1, default=float)
  run.close()
  return result
