"""Step timing and peak memory, shared by the benchmark and its peers.

Imports no numerical framework, so that a peer measured with PyTorch or
TensorFlow times its steps exactly as the JAX benchmark does.
"""

import json
import platform
import resource
import statistics
import sys
import time
from typing import Any, Callable


def time_steps(step: Callable[[], Any], warmup: int, steps: int) -> list[float]:
  """Seconds of each of `steps` calls of `step`, after `warmup` untimed calls.

  `step` must return only once its work is done (block on its result).
  """
  for _ in range(warmup):
    step()
  seconds = []
  for _ in range(steps):
    start = time.perf_counter()
    step()
    seconds.append(time.perf_counter() - start)
  return seconds


def throughput(seconds: list[float], batch_size: int) -> dict[str, float]:
  """Images per second of steps that took `seconds`: median, min and max."""
  rates = [batch_size / s for s in seconds]
  return {'median': statistics.median(rates), 'min': min(rates), 'max': max(rates)}


def peak_rss_bytes() -> int:
  """This process's peak resident memory so far (Linux reports KiB, macOS bytes)."""
  peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
  return peak if sys.platform == 'darwin' else peak * 1024


def print_result(result: dict) -> None:
  """Writes a measurement as the last line of stdout, where the benchmark reads it."""
  sys.stdout.write(json.dumps(result) + '\n')
  sys.stdout.flush()


def cpu_model() -> str:
  """The CPU's 'model name' in /proc/cpuinfo, or the platform's processor name."""
  try:
    with open('/proc/cpuinfo') as f:
      for line in f:
        if line.startswith('model name'):
          return line.split(':', 1)[1].strip()
  except OSError:
    pass
  return platform.processor() or 'unknown'
