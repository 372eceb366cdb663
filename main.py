"""Entry point: `python main.py --config=configs/hybrid.py --workdir=DIR [--mode=...]`.

Any config field can be overridden, e.g. `--config.model.dtype=bfloat16`.
"""

from absl import app
from absl import flags
from absl import logging
from ml_collections import config_flags

from hybridcovid import errors, summary

_CONFIG = config_flags.DEFINE_config_file(
    'config', None, 'Experiment config file, e.g. configs/hybrid.py.',
    lock_config=True)
_WORKDIR = flags.DEFINE_string('workdir', None, 'Directory for all outputs.')
_MODE = flags.DEFINE_enum(
    'mode', 'train', ['train', 'summary', 'audit'],
    'train: train, select the checkpoint on validation, evaluate it on test '
    'and write metrics.json. summary: build the model, load its pretrained '
    'backbones and write model_summary.json. audit: prepare and check the '
    'data, split it by patient and write split.json and audit.json.')


def main(argv: list[str]) -> None:
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {" ".join(argv[1:])}')
  logging.info('Config:\n%s', _CONFIG.value)
  config, workdir = _CONFIG.value, _WORKDIR.value
  try:
    if _MODE.value == 'train':
      from hybridcovid import experiment  # Imports TensorFlow (the data pipeline).
      experiment.train_and_evaluate(config, workdir)
    elif _MODE.value == 'summary':
      summary.summarize(config, workdir)
    elif _MODE.value == 'audit':
      from hybridcovid.data import pipeline  # Imports TensorFlow.
      pipeline.load(config.data, workdir, config.seed)
  except errors.UserError as error:
    raise SystemExit(f'error: {error}') from error


if __name__ == '__main__':
  flags.mark_flags_as_required(['config', 'workdir'])
  app.run(main)
