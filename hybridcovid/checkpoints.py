"""Training checkpoints: the latest few for resuming, the best one kept apart.

`WORKDIR/checkpoints/` holds the latest `keep` epochs; `WORKDIR/best/` holds
the epoch with the best validation metric. The two are separate Orbax
managers, so choosing the best never deletes the newest checkpoint a resume
needs. Each checkpoint stores the training state and a JSON record (the
config, the split, input checksums, the seed, versions, devices, metrics).
Saves are asynchronous; call `wait` before the process exits.
"""

import os
from typing import Any

from absl import logging
import jax
import orbax.checkpoint as ocp

from hybridcovid import errors

LATEST_DIR = 'checkpoints'
BEST_DIR = 'best'


class CheckpointError(errors.UserError):
  """No usable checkpoint where one was expected."""


def open_trained_run(workdir: str) -> 'RunCheckpoints':
  """The checkpoints of a trained run; where there is none, a clear error and nothing created."""
  workdir = os.path.abspath(workdir)
  if not os.path.isdir(os.path.join(workdir, BEST_DIR)):
    raise CheckpointError(
        f'{workdir} holds no trained run ({BEST_DIR}/ is missing): check --workdir, '
        'or train first (python main.py --config=... --workdir=...).')
  return RunCheckpoints(workdir)


class RunCheckpoints:
  """Saves an epoch's state and record; restores the latest or the best."""

  def __init__(self, workdir: str, keep: int = 3):
    workdir = os.path.abspath(workdir)
    self._latest = ocp.CheckpointManager(
        os.path.join(workdir, LATEST_DIR),
        options=ocp.CheckpointManagerOptions(max_to_keep=keep, create=True))
    self._best = ocp.CheckpointManager(
        os.path.join(workdir, BEST_DIR),
        options=ocp.CheckpointManagerOptions(max_to_keep=1, create=True))
    self.best_metric = self._best_metric_so_far()

  def _best_metric_so_far(self) -> float | None:
    if self._best.latest_step() is None:
      return None
    return self.best_record()['validation_metric']

  def best_record(self) -> dict:
    """The JSON record of the best checkpoint, without restoring its state."""
    return self._record(self._best, self._newest_step(self._best))

  def latest_record(self) -> dict:
    """The JSON record of the newest checkpoint, without restoring its state."""
    return self._record(self._latest, self._newest_step(self._latest))

  def _newest_step(self, manager: ocp.CheckpointManager) -> int:
    step = manager.latest_step()
    if step is None:
      raise CheckpointError(f'{manager.directory} holds no checkpoint: train first '
                            '(python main.py --config=... --workdir=...).')
    return step

  def _record(self, manager: ocp.CheckpointManager, step: int) -> dict:
    return manager.restore(step, args=ocp.args.Composite(record=ocp.args.JsonRestore())).record

  def save(self, epoch: int, state: Any, record: dict,
           validation_metric: float | None = None) -> bool:
    """Saves `epoch`; also as the best if `validation_metric` beats every earlier one.

    Returns whether it became the best.
    """
    record = {**record, 'epoch': epoch, 'validation_metric': validation_metric}
    args = ocp.args.Composite(state=ocp.args.StandardSave(state),
                              record=ocp.args.JsonSave(record))
    self._latest.save(epoch, args=args)
    improved = validation_metric is not None and (
        self.best_metric is None or validation_metric > self.best_metric)
    if improved:
      self._best.save(epoch, args=args)
      self.best_metric = validation_metric
    return improved

  def recover_best(self, target: Any) -> None:
    """Saves again as the best an epoch whose best-checkpoint save a crash cut short.

    The latest checkpoints' records carry their validation metrics; one that
    beats the best on record was the best when its process died.
    """
    for step in sorted(self._latest.all_steps()):
      try:
        metric = self._record(self._latest, step)['validation_metric']
        if metric is None or (self.best_metric is not None and metric <= self.best_metric):
          continue
        state, record = self._restore(self._latest, step, target)
      except Exception:  # A damaged checkpoint; restore_latest reports it.
        continue
      logging.warning('Epoch %d is the best so far, but its copy in %s was not saved; '
                      'saving it now.', step + 1, self._best.directory)
      self._best.save(step, args=ocp.args.Composite(state=ocp.args.StandardSave(state),
                                                    record=ocp.args.JsonSave(record)))
      self.best_metric = metric
    self._best.wait_until_finished()

  def _restore(self, manager: ocp.CheckpointManager, step: int, target: Any
               ) -> tuple[Any, dict]:
    abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, target)
    restored = manager.restore(step, args=ocp.args.Composite(
        state=ocp.args.StandardRestore(abstract), record=ocp.args.JsonRestore()))
    return restored.state, restored.record

  def restore_latest(self, target: Any) -> tuple[Any, dict] | None:
    """The newest restorable checkpoint shaped like `target`, or None if there is none.

    A damaged newest checkpoint is reported and the one before it is used, so
    a crash during a save loses at most that epoch.
    """
    steps = sorted(self._latest.all_steps(), reverse=True)
    for step in steps:
      try:
        return self._restore(self._latest, step, target)
      except Exception as error:  # Orbax raises many types for damaged files.
        logging.warning('Checkpoint of epoch %d in %s cannot be restored (%s: %s); '
                        'deleting it and trying the one before.', step + 1,
                        self._latest.directory, type(error).__name__, error)
        # Orbax saves no step at or below its latest: the epoch could not be saved again.
        self._latest.delete(step)
    if steps:
      raise CheckpointError(
          f'No checkpoint in {self._latest.directory} could be restored; the unreadable '
          f'ones (epochs {[step + 1 for step in steps]}) were deleted. Start again to '
          'train from the beginning, or use a new --workdir.')
    return None

  def restore_best(self, target: Any) -> tuple[Any, dict]:
    """The best checkpoint by the validation metric, shaped like `target`."""
    return self._restore(self._best, self._newest_step(self._best), target)

  def wait(self) -> None:
    """Blocks until every asynchronous save is on disk."""
    self._latest.wait_until_finished()
    self._best.wait_until_finished()

  def close(self) -> None:
    self._latest.close()
    self._best.close()
