"""Trains the demo config, scaled down to one backbone, on this process's devices; prints
the metrics as JSON.

  python tests/programs/parallel_run.py WORKDIR PARALLEL EPOCHS CACHE_DIR [KILL_AFTER_EPOCH]

With KILL_AFTER_EPOCH, the process kills itself (SIGKILL, as a crash or an
out-of-memory kill would) once that epoch's checkpoint is on disk.
"""

import json
import os
import signal
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

from configs import default  # pylint: disable=wrong-import-position
from hybridcovid import experiment, runs  # pylint: disable=wrong-import-position
from hybridcovid.training import checkpoints  # pylint: disable=wrong-import-position


def demo_config(workdir: str, parallel: str, epochs: int, cache_dir: str):
  config = default.experiment(('resnet50',), ('cxr', 'ct'), 'demo')
  config.data.tfds_dir = os.path.join(workdir, 'tfds')
  config.parallel = parallel
  config.compilation_cache_dir = cache_dir
  config.train.epochs = epochs
  config.train.batch_size = 16
  config.data.image_size = 32
  config.data.synthetic_patients_per_class = 16
  config.eval.bootstrap_resamples = 20
  config.eval.gradcam_per_outcome = 0
  return config


def die_after(epoch: int) -> None:
  save = checkpoints.RunCheckpoints.save

  def save_then_die(self, saved_epoch, *args, **kwargs):
    save(self, saved_epoch, *args, **kwargs)
    if saved_epoch == epoch:
      self.wait()
      os.kill(os.getpid(), signal.SIGKILL)

  checkpoints.RunCheckpoints.save = save_then_die


def main() -> None:
  workdir, parallel, epochs, cache_dir = sys.argv[1:5]
  if len(sys.argv) > 5:
    die_after(int(sys.argv[5]))
  config = demo_config(workdir, parallel, int(epochs), cache_dir)
  runs.setup_jax(config)
  result = experiment.train_and_evaluate(config, workdir)
  sys.stdout.write(json.dumps({'history': result['history'], 'test': result['test']['overall'],
                               'selected_epoch': result['selected_epoch']}) + '\n')


if __name__ == '__main__':
  main()
