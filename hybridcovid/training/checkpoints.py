"""Training checkpoints: the latest few for resuming, the best one kept apart.

`WORKDIR/checkpoints/` holds the latest `keep` epochs; `WORKDIR/best/` holds
the epoch with the best validation metric. The two are separate Orbax
managers, so choosing the best never deletes the newest checkpoint a resume
needs. Each checkpoint stores a JSON record (the config, the split, input
checksums, the seed, versions, devices, metrics) and the training state; the
best one only the part inference reads, parameters and BatchNorm statistics.
Saves are asynchronous; call `wait` before the process exits.
"""

import logging as python_logging
import os
import re
import sys
import threading
from typing import Any

from absl import logging
import flax.linen as nn
import jax
import orbax.checkpoint as ocp

from hybridcovid import errors
from hybridcovid.training import train

LATEST_DIR = 'checkpoints'
BEST_DIR = 'best'


class CheckpointError(errors.UserError):
  """No usable checkpoint where one was expected."""


# TensorStore appends the JSON specs of what it read to its messages.
_TENSORSTORE_SPECS = re.compile(r'\s*\[\w[\w ]*(\[\d+\])?=.*', re.DOTALL)


def _cause(error: Exception, limit: int = 240) -> str:
  """The end of an Orbax error's message, where TensorStore names the file and the cause."""
  text = ' '.join(_TENSORSTORE_SPECS.sub('', str(error)).split()) or type(error).__name__
  parts = text.split(': ')
  cause = parts.pop()
  while parts and len(parts[-1]) + len(cause) + 2 <= limit:
    cause = f'{parts.pop()}: {cause}'
  return f'...{cause}' if parts else cause


def _is_closed_loop_error(error: BaseException | None) -> bool:
  return isinstance(error, RuntimeError) and str(error) == 'Event loop is closed'


class _ClosedLoopLogFilter(python_logging.Filter):
  """Drops asyncio's 'Task exception was never retrieved' for a closed loop."""

  def filter(self, record: python_logging.LogRecord) -> bool:
    return not (record.exc_info and _is_closed_loop_error(record.exc_info[1]))


def _quiet_pending_reads() -> None:
  """Drops the errors of the reads a failed Orbax restore leaves pending.

  When one read fails, Orbax closes its event loop with the others still
  running; each then reports 'Event loop is closed', with a traceback, after
  the restore has raised: hundreds of lines that bury the one error that
  matters. They come through `sys.unraisablehook` (coroutines never awaited),
  asyncio's logger (tasks whose exception nobody read) or
  `threading.excepthook` (the loop's threads), depending on timing; each route
  keeps every other error.
  """
  previous_unraisable, previous_thread = sys.unraisablehook, threading.excepthook
  if getattr(previous_unraisable, 'quiets_pending_reads', False):
    return

  def unraisable_hook(unraisable: Any) -> None:
    if not _is_closed_loop_error(unraisable.exc_value):
      previous_unraisable(unraisable)

  def thread_hook(failure: Any) -> None:
    if not _is_closed_loop_error(failure.exc_value):
      previous_thread(failure)

  unraisable_hook.quiets_pending_reads = True
  sys.unraisablehook = unraisable_hook
  threading.excepthook = thread_hook
  python_logging.getLogger('asyncio').addFilter(_ClosedLoopLogFilter())


class _MainThreadOnly:
  """A stream that keeps what the main thread writes and drops what other threads write."""

  def __init__(self, stream: Any):
    self._stream = stream

  def write(self, text: str) -> int:
    if threading.current_thread() is threading.main_thread():
      return self._stream.write(text)
    return len(text)

  def __getattr__(self, name: str) -> Any:
    return getattr(self._stream, name)


def _save_args(state: Any, record: dict) -> ocp.args.Composite:
  return ocp.args.Composite(state=ocp.args.StandardSave(state), record=ocp.args.JsonSave(record))


def _best_args(state: Any, record: dict) -> ocp.args.Composite:
  """What the best checkpoint holds: the record and what inference restores of `state`
  (parameters and BatchNorm statistics), not the optimiser's state, a third the size."""
  return _save_args({'params': state.params, 'batch_stats': state.batch_stats}, record)


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
    step = self._newest_step(self._best)
    try:
      return self._record(self._best, step)
    except Exception as error:  # Orbax raises many types for damaged files.
      raise self._damaged_best(step, error) from error

  def latest_epoch(self) -> int:
    """The epoch of the newest checkpoint, 0 if there is none; it may yet prove unreadable."""
    return self._latest.latest_step() or 0

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
    try:
      return manager.restore(step, args=ocp.args.Composite(
          record=ocp.args.JsonRestore())).record
    except Exception:
      _quiet_pending_reads()
      raise

  def save(self, epoch: int, state: Any, record: dict,
           validation_metric: float | None = None) -> None:
    """Saves `epoch` (counted from 1, as everywhere: `checkpoints/N` is after epoch N);
    also as the best if `validation_metric` beats every earlier one (`best_metric`)."""
    record = {**record, 'epoch': epoch, 'validation_metric': validation_metric}
    self._latest.save(epoch, args=_save_args(state, record))
    improved = validation_metric is not None and (
        self.best_metric is None or validation_metric > self.best_metric)
    if improved:
      self._best.save(epoch, args=_best_args(state, record))
      self.best_metric = validation_metric

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
                      'saving it now.', step, self._best.directory)
      self._best.save(step, args=_best_args(state, record))
      self.best_metric = metric
    self._best.wait_until_finished()

  def _restore(self, manager: ocp.CheckpointManager, step: int, target: Any
               ) -> tuple[Any, dict]:
    abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, target)
    try:
      restored = manager.restore(step, args=ocp.args.Composite(
          state=ocp.args.StandardRestore(abstract), record=ocp.args.JsonRestore()))
    except Exception:
      _quiet_pending_reads()
      raise
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
        logging.warning('Checkpoint of epoch %d in %s cannot be restored (Orbax says: %s); '
                        'deleting it and trying the one before.', step,
                        self._latest.directory, _cause(error))
        # Orbax saves no step at or below its latest: the epoch could not be saved again.
        self._latest.delete(step)
    if steps:
      raise CheckpointError(
          f'No checkpoint in {self._latest.directory} could be restored; the unreadable '
          f'ones (epochs {steps}) were deleted. Start again to '
          'train from the beginning, or use a new --workdir.')
    return None

  def restore_best(self, target: Any) -> tuple[Any, dict]:
    """The arrays of the best checkpoint (by the validation metric) that `target` names,
    shaped like it, and its record; `target` is part of the saved state, e.g.
    `train.abstract_variables` for inference, which needs no optimiser state.

    A damaged one raises CheckpointError naming it, the latest checkpoints
    beside it and how to use one of them instead.
    """
    step = self._newest_step(self._best)
    abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, target)
    reader = None
    # TensorStore's threads print the tracebacks of reads a failure leaves
    # pending straight to sys.stderr, past every hook, as soon as it happens:
    # while reading, only the main thread may write there, and after a failure
    # (the process stops on it) for good.
    stderr, sys.stderr = sys.stderr, _MainThreadOnly(sys.stderr)
    try:
      # A manager that has saved keeps the handler of its saves, which restores
      # whole states only; a fresh one reads a part.
      reader = ocp.CheckpointManager(self._best.directory)
      restored = reader.restore(step, args=ocp.args.Composite(
          state=ocp.args.PyTreeRestore(
              item=abstract, restore_args=ocp.checkpoint_utils.construct_restore_args(abstract),
              partial_restore=True),
          record=ocp.args.JsonRestore()))
    except Exception as error:  # Orbax raises many types for damaged files.
      _quiet_pending_reads()
      raise self._damaged_best(step, error) from error
    finally:
      if reader is not None:
        reader.close()
    sys.stderr = stderr
    return restored.state, restored.record

  def restore_best_for_inference(self, model: nn.Module, image_size: int,
                                 mesh: jax.sharding.Mesh) -> tuple[train.InferenceState, dict]:
    """The best checkpoint's parameters and BatchNorm statistics for `model` (on
    `image_size` inputs, replicated over `mesh`), and its record."""
    variables, record = self.restore_best(train.abstract_variables(model, image_size, mesh))
    return train.InferenceState(apply_fn=model.apply, **variables), record

  def _damaged_best(self, step: int, error: Exception) -> CheckpointError:
    """What to do when the best checkpoint, epoch `step`, cannot be restored."""
    best = os.path.join(self._best.directory, str(step))
    latest = str(self._latest.directory)
    steps = sorted(self._latest.all_steps())
    epochs = ('epochs ' if len(steps) > 1 else 'epoch ') + ', '.join(
        str(other) for other in steps)
    message = (f'The selected checkpoint {best} (epoch {step}) cannot be restored '
               f'(Orbax says: {_cause(error)}).')
    retrain = 'train again with a new --workdir'
    if step in steps:
      fix = (f'{latest} holds {epochs}, the selected one among them: replace the '
             f'damaged copy with it (rm -r {best} && cp -r {os.path.join(latest, str(step))} '
             f'{best}), or {retrain}.')
    elif steps:
      newest = os.path.join(self._best.directory, str(steps[-1]))
      fix = (f'{latest} holds {epochs}, not the selected one: put one in its place, '
             f'e.g. the newest (rm -r {best} && cp -r {os.path.join(latest, str(steps[-1]))} '
             f'{newest}), knowing that validation did not select it and the report is not '
             f'about it, or {retrain}.')
    else:
      fix = f'{latest} holds no other checkpoint: {retrain}.'
    return CheckpointError(f'{message} {fix}')

  def wait(self) -> None:
    """Blocks until every asynchronous save is on disk."""
    self._latest.wait_until_finished()
    self._best.wait_until_finished()

  def close(self) -> None:
    self._latest.close()
    self._best.close()
