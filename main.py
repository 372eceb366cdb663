"""Entry point: `python main.py --config=configs/hybrid.py --workdir=DIR [--mode=...]`.

Any config field can be overridden, e.g. `--config.model.dtype=bfloat16`; a
variant follows the file after a colon, e.g. `configs/hybrid.py:demo`.
"""

import contextlib
import logging as python_logging
import os
import re
import sys

from absl import app
from absl import flags
from absl import logging
import jax
from ml_collections import config_flags

from configs import default
from hybridcovid import errors, runs, summary

_CONFIG = config_flags.DEFINE_config_file(
    'config', None, 'Experiment config file, e.g. configs/hybrid.py or configs/hybrid.py:demo.',
    lock_config=True)
_WORKDIR = flags.DEFINE_string('workdir', None, 'Directory for all outputs.')
_INPUT = flags.DEFINE_multi_string(
    'input', [], '--mode=predict: an image file, a folder of them, or a CSV file with a path '
    'column and optionally a patient_id column (repeat for more).')
_STUDIES = flags.DEFINE_enum(
    'studies', 'tagged', ['tagged', 'folder'],
    '--mode=predict: how images group into studies, each given one decision '
    '(WORKDIR/predict/studies.csv). tagged: by the patient_id column of a CSV --input, else '
    "by a DICOM file's StudyInstanceUID, else each image alone. folder: the same, but the "
    'untagged images of one folder make one study.')
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


# Libraries whose messages would bury this program's own, and the lowest level
# of theirs that is shown (TFDS warns that every prepared data set is custom).
QUIET_LIBRARIES = {f'{os.sep}jax{os.sep}': python_logging.WARNING,
                   f'{os.sep}optax{os.sep}': python_logging.WARNING,
                   f'{os.sep}orbax{os.sep}': python_logging.WARNING,
                   f'{os.sep}tensorflow_datasets{os.sep}': python_logging.ERROR}


class _QuietLibraries(python_logging.Filter):
  """Drops messages of QUIET_LIBRARIES below their level; keeps everything else."""

  def filter(self, record: python_logging.LogRecord) -> bool:
    return all(record.levelno >= level for part, level in QUIET_LIBRARIES.items()
               if part in record.pathname)


def parse_flags(argv: list[str]) -> list[str]:
  """absl's flag parsing, each error in one line: an unknown `--config.` field comes with
  the nearest known one, a config file that fails with its own message."""
  try:
    return flags.FLAGS(argv)
  except (AttributeError, KeyError) as error:  # ml_collections' unknown field.
    raise SystemExit(f'error: {_unknown_field(argv, str(error))}') from None
  except flags.Error as error:
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    if len(lines) > 1:  # A config file that raised: the last line says why.
      lines = [f'{lines[0].split(": ")[0]}: {lines[-1].split(": ", 1)[-1]}']
    raise SystemExit(f'error: {lines[0]} See --helpfull for every flag.') from None


def _unknown_field(argv: list[str], message: str) -> str:
  """One line naming the `--config.` flag whose field does not exist, and the likely one."""
  given = re.search(r"(\w+)", message).group(1)  # The message starts with the field.
  meant = re.search(r'Did you mean "([^"]+)"', message)
  for flag in (arg.split('=')[0] for arg in argv if arg.startswith('--config.')):
    parts = flag.split('.')
    if given in parts:
      if not meant:
        return f'{flag}: no such config field; configs/default.py lists them all.'
      parts[parts.index(given)] = meant.group(1)
      return f'{flag}: no such config field. Did you mean {".".join(parts)}?'
  return f'no config field {given!r}; configs/default.py lists them all.'


def write_config(config, workdir: str) -> None:
  """The resolved config as WORKDIR/config.json (config_<mode>.json for other modes than
  train, so that the training's stays), named in one log line."""
  name = 'config.json' if _MODE.value == 'train' else f'config_{_MODE.value}.json'
  path = os.path.join(os.path.abspath(workdir), name)
  if jax.process_index() == 0:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, 'w') as f:
      f.write(config.to_json_best_effort(indent=1) + '\n')
  logging.info('Config: %s', path)


def import_tensorflow_quietly() -> None:
  """Imports TensorFlow and TFDS with native stderr closed: TensorFlow's C++ start-up
  notices (oneDNN, CPU features), which TF_CPP_MIN_LOG_LEVEL no longer silences, would
  otherwise open every run. Python errors of the import still show."""
  saved = os.dup(2)
  try:
    with open(os.devnull, 'w') as devnull, contextlib.redirect_stderr(devnull):
      os.dup2(devnull.fileno(), 2)
      try:
        import tensorflow  # pylint: disable=g-import-not-at-top,unused-import
        import tensorflow_datasets  # pylint: disable=g-import-not-at-top,unused-import
      finally:
        os.dup2(saved, 2)
  finally:
    os.close(saved)


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
  runs.setup_jax(config)
  if _CONFIG.value is not None:
    write_config(config, workdir)
  if _MODE.value in ('train', 'evaluate', 'audit'):  # Their data pipelines use TensorFlow.
    import_tensorflow_quietly()
  try:
    if _MODE.value == 'train':
      from hybridcovid import experiment, leave_one_source_out  # Import TensorFlow.
      if config.eval.leave_one_source_out:
        leave_one_source_out.train(config, workdir)
      else:  # The report keeps the results of an earlier leave-one-source-out training.
        experiment.train_and_evaluate(
            config, workdir, leave_one_source_out=leave_one_source_out.saved_results(workdir))
    elif _MODE.value == 'evaluate':
      from hybridcovid import evaluate, leave_one_source_out  # Import TensorFlow.
      evaluate.evaluate(config, workdir, leave_one_source_out.saved_results(workdir))
    elif _MODE.value == 'predict':
      from hybridcovid import predict
      predict.predict(workdir, _INPUT.value, _EXPLAIN.value, _STUDIES.value == 'folder')
    elif _MODE.value == 'summary':
      summary.summarize(config, workdir)
    elif _MODE.value == 'benchmark':
      from hybridcovid.benchmark import step_speed
      step_speed.run(config, workdir)
    elif _MODE.value == 'audit':
      from hybridcovid.data import audit  # pylint: disable=g-import-not-at-top
      data = runs.load_data(config.data, workdir, config.seed)
      logging.info('Data audit:\n%s', audit.format_table(data.report))
  except errors.UserError as error:
    from hybridcovid.training import checkpoints  # pylint: disable=g-import-not-at-top
    if isinstance(error, checkpoints.CheckpointError):
      # Orbax leaves the reads of a damaged checkpoint pending, and while the
      # interpreter shuts down they print 'Event loop is closed' tracebacks
      # after this line, past every hook. Nothing is being written: end here.
      logging.flush()
      sys.stderr.write(f'error: {error}\n')
      sys.stderr.flush()
      os._exit(1)  # pylint: disable=protected-access
    raise SystemExit(f'error: {error}') from error


if __name__ == '__main__':
  flags.mark_flags_as_required(['workdir'])
  app.run(main, flags_parser=parse_flags)
