"""Entry point: `python main.py --config=configs/hybrid.py --workdir=DIR [--mode=...]`.

Any config field can be overridden, e.g. `--config.model.dtype=bfloat16`; a
variant follows the file after a colon, e.g. `configs/hybrid.py:demo`.
"""

import logging as python_logging
import os

from absl import app
from absl import flags
from absl import logging
import jax
from ml_collections import config_flags

from configs import default
from hybridcovid import errors, summary

_CONFIG = config_flags.DEFINE_config_file(
    'config', None, 'Experiment config file, e.g. configs/hybrid.py or configs/hybrid.py:demo.',
    lock_config=True)
_WORKDIR = flags.DEFINE_string('workdir', None, 'Directory for all outputs.')
_INPUT = flags.DEFINE_multi_string(
    'input', [], '--mode=predict: an image file or a folder of them (repeat for more).')
_EXPLAIN = flags.DEFINE_boolean(
    'explain', False, '--mode=predict: also write a Grad-CAM PNG of each decision, one '
    'heat map per backbone, to WORKDIR/predict/gradcam/.')
_MODE = flags.DEFINE_enum(
    'mode', 'train', ['train', 'evaluate', 'predict', 'audit', 'summary', 'benchmark'],
    'train: train, select the checkpoint on validation, evaluate it once on test '
    'and write WORKDIR/report/. evaluate: re-evaluate the selected checkpoint on '
    'the test split, or with other --config.data.* on all of another data set '
    '(external validation). audit: prepare and check the data, split it by '
    'patient and write split.json and audit.json. summary: build the model, load '
    'its pretrained backbones and write model_summary.json. predict: score '
    '--input files or folders with the run in --workdir (no --config needed) and '
    'write WORKDIR/predict/predictions.csv and .json. benchmark: time the '
    'train step and inference on synthetic inputs (and the peers with '
    '--config.benchmark.peers) and write benchmark.json and benchmark.md.')


# Libraries whose informational messages would bury this program's own.
QUIET_LIBRARIES = (f'{os.sep}orbax{os.sep}', f'{os.sep}tensorflow_datasets{os.sep}')


class _QuietLibraries(python_logging.Filter):
  """Keeps warnings and errors of QUIET_LIBRARIES, and everything of everything else."""

  def filter(self, record: python_logging.LogRecord) -> bool:
    return (record.levelno >= python_logging.WARNING
            or not any(part in record.pathname for part in QUIET_LIBRARIES))


def setup_jax(config) -> None:
  """Compilation cache, deterministic kernels and multi-process start, before any device use."""
  if config.deterministic:
    os.environ['XLA_FLAGS'] = (os.environ.get('XLA_FLAGS', '') +
                               ' --xla_gpu_deterministic_ops=true')
  if config.compilation_cache_dir:
    jax.config.update('jax_compilation_cache_dir',
                      os.path.expanduser(config.compilation_cache_dir))
  distributed = config.distributed
  address = distributed.coordinator_address or os.environ.get('JAX_COORDINATOR_ADDRESS')
  if address:
    jax.distributed.initialize(
        coordinator_address=address,
        num_processes=distributed.num_processes or None,
        process_id=None if distributed.process_id < 0 else distributed.process_id)
    logging.info('Process %d of %d.', jax.process_index(), jax.process_count())


def main(argv: list[str]) -> None:
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {" ".join(argv[1:])}')
  logging.get_absl_handler().addFilter(_QuietLibraries())
  config, workdir = _CONFIG.value, _WORKDIR.value
  if config is None:
    if _MODE.value != 'predict':
      raise app.UsageError(f'--mode={_MODE.value} needs --config, e.g. --config=configs/hybrid.py.')
    # The run's own config comes from its checkpoint, and predict logs it.
    config = default.get_config()
  else:
    logging.info('Config:\n%s', config)
  setup_jax(config)
  try:
    if _MODE.value in ('train', 'evaluate'):
      from hybridcovid import experiment  # Imports TensorFlow (the data pipeline).
      run = experiment.train_and_evaluate if _MODE.value == 'train' else experiment.evaluate
      run(config, workdir)
    elif _MODE.value == 'predict':
      from hybridcovid import predict
      predict.predict(workdir, _INPUT.value, _EXPLAIN.value)
    elif _MODE.value == 'summary':
      summary.summarize(config, workdir)
    elif _MODE.value == 'benchmark':
      from hybridcovid import benchmark
      benchmark.run(config, workdir)
    elif _MODE.value == 'audit':
      from hybridcovid.data import pipeline  # Imports TensorFlow.
      pipeline.load(config.data, workdir, config.seed)
  except errors.UserError as error:
    raise SystemExit(f'error: {error}') from error


if __name__ == '__main__':
  flags.mark_flags_as_required(['workdir'])
  app.run(main)
