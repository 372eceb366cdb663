"""Turning image files into the examples a builder stores, on every core.

`prepare_example` decodes one file (`decode`), shrinks it to the stored size
(`resize.bounded`) and encodes it as a lossless PNG, with the file's facts
(sha256, original size, format and bits) and a thumbnail of the stored image
for near-duplicate search. A file that cannot be used gives an empty image and
the reason in `error`. `prepare_examples` does so for many files in
worker processes and returns the examples in the files' order.

This module must not import TensorFlow: every worker process imports it.
"""

import collections
import concurrent.futures
import functools
import io
import multiprocessing
import os
from typing import Iterator, Sequence

from absl import logging
import numpy as np
from PIL import Image

from hybridcovid import errors, hashing
from hybridcovid.data import audit, decode, resize, sources

# Files handed out ahead of the one being stored: every process stays busy
# while at most this many examples per process wait in memory.
_IN_FLIGHT_PER_PROCESS = 4


class PreparationError(errors.UserError):
  """A worker process died while preparing images."""


def png_bytes(image: np.ndarray) -> bytes:
  """An (H, W, 3) uint8 image as lossless PNG bytes; one channel when all three are equal."""
  if (image[..., 1:] == image[..., :1]).all():
    image = image[..., 0]
  buffer = io.BytesIO()
  Image.fromarray(image).save(buffer, format='PNG')
  return buffer.getvalue()


def prepare_example(record: sources.Record, ct_window: tuple[float, float],
                    max_side: int) -> dict:
  """The stored example of one file: its PNG at most `max_side` pixels long, label and facts."""
  try:
    digest = hashing.file_sha256(record.path)
    image, info = decode.read_image(record.path, record.modality, ct_window)
    facts = {'height': info.height, 'width': info.width, 'format': info.format,
             'bits': info.bits, 'error': ''}
  except (OSError, decode.BadImageError) as error:
    digest, image = '', np.zeros((1, 1, 3), np.uint8)
    facts = {'height': 0, 'width': 0, 'format': '', 'bits': 0,
             'error': str(error) if isinstance(error, decode.BadImageError)
             else f'{record.path}: cannot be read ({error}).'}
  stored = resize.bounded(image, max_side)
  return {
      'image': png_bytes(stored), 'label': record.label, 'modality': record.modality,
      'source': record.source, 'patient_id': record.patient_id,
      'patient_known': record.patient_known, 'relpath': record.relpath,
      'path': record.path, 'sha256': digest, 'thumbnail': audit.thumbnail(stored), **facts,
  }


def process_count(processes: int) -> int:
  """`processes`, or every core this process may use for 0."""
  return processes or len(os.sched_getaffinity(0))


def prepare_examples(records: Sequence[sources.Record], ct_window: tuple[float, float],
                     max_side: int, processes: int) -> Iterator[dict]:
  """`prepare_example` of each record, in order, in `processes` processes.

  0 uses every core; 1 prepares in this process, without workers.
  """
  prepare_one = functools.partial(prepare_example, ct_window=ct_window, max_side=max_side)
  processes = min(process_count(processes), len(records))
  logging.info('Preparing %d image files in %d processes.', len(records), processes)
  if processes <= 1:
    yield from map(prepare_one, records)
    return
  # Spawned, not forked: this process may run TensorFlow and JAX threads.
  context = multiprocessing.get_context('spawn')
  with concurrent.futures.ProcessPoolExecutor(processes, mp_context=context) as pool:
    pending = collections.deque()
    try:
      for record in records:
        pending.append(pool.submit(prepare_one, record))
        if len(pending) == _IN_FLIGHT_PER_PROCESS * processes:
          yield pending.popleft().result()
      while pending:
        yield pending.popleft().result()
    except concurrent.futures.BrokenExecutor as error:
      raise PreparationError(
          f'A process preparing images died ({error}). Most likely it ran out of memory: '
          f'each of the {processes} holds a whole decoded image; set '
          '--config.data.prepare_processes to fewer. If they die at once, the main '
          "script lacks an `if __name__ == '__main__':` guard: each worker imports "
          'it.') from error
