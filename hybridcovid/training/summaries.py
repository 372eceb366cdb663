"""TensorBoard scalars, written with the `tensorboard` package alone (no TensorFlow)."""

import time

import jax
from tensorboard.compat.proto import event_pb2, summary_pb2
from tensorboard.summary.writer import event_file_writer


class Summaries:
  """Scalars in a TensorBoard event file in `logdir`, written by process 0 only."""

  def __init__(self, logdir: str):
    self._writer = (event_file_writer.EventFileWriter(logdir)
                    if jax.process_index() == 0 else None)

  def scalars(self, step: int, values: dict[str, float]) -> None:
    """Writes each of `values` under its name at `step`."""
    if self._writer is None:
      return
    summary = summary_pb2.Summary(value=[
        summary_pb2.Summary.Value(tag=name, simple_value=float(value))
        for name, value in values.items()])
    self._writer.add_event(event_pb2.Event(wall_time=time.time(), step=step, summary=summary))

  def close(self) -> None:
    """Flushes and closes the event file."""
    if self._writer is not None:
      self._writer.close()
