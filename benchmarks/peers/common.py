"""Command line and result format shared by the peers.

Each peer measures one case (model, mode, batch size, dtype) per process and
prints one JSON line, timed with the same code as the JAX benchmark.
"""

import argparse
import importlib.util
import sys
import time
from typing import Callable

from hybridcovid.benchmark import timing


def parse_arguments() -> argparse.Namespace:
  parser = argparse.ArgumentParser(description=__doc__)
  parser.add_argument('--backbones', default='resnet50,efficientnetb0',
                      help='Comma-separated: resnet50, efficientnetb0 or both (the hybrid).')
  parser.add_argument('--mode', choices=('train', 'inference'), default='train')
  parser.add_argument('--batch_size', type=int, default=32)
  parser.add_argument('--dtype', choices=('float32', 'bfloat16'), default='float32')
  parser.add_argument('--image_size', type=int, default=224)
  parser.add_argument('--hidden_units', type=int, default=256)
  parser.add_argument('--learning_rate', type=float, default=1e-3)
  parser.add_argument('--warmup_steps', type=int, default=2)
  parser.add_argument('--steps', type=int, default=5)
  arguments = parser.parse_args()
  arguments.backbones = tuple(arguments.backbones.split(','))
  return arguments


def exit_unless_installed(*packages: str) -> None:
  """Reports the peer as skipped, and exits, when a package it needs is missing."""
  missing = [name for name in packages if importlib.util.find_spec(name) is None]
  if missing:
    timing.print_result({'skipped': f"{', '.join(missing)} not installed"})
    sys.exit(0)


def measure(step: Callable[[], None], arguments: argparse.Namespace,
            peak_memory: Callable[[], tuple[int, str]], configuration: str) -> None:
  """Times `step` (which blocks on its result) and prints the result line.

  The first call, which traces and compiles, is reported as the compile time.
  """
  start = time.perf_counter()
  step()
  first_step_seconds = time.perf_counter() - start
  seconds = timing.time_steps(step, max(arguments.warmup_steps - 1, 0), arguments.steps)
  memory, memory_kind = peak_memory()
  timing.print_result({
      'images_per_second': timing.throughput(seconds, arguments.batch_size),
      'compile_seconds': first_step_seconds,
      'peak_memory_bytes': memory, 'memory_kind': memory_kind,
      'configuration': configuration})


def process_peak_memory() -> tuple[int, str]:
  return timing.peak_rss_bytes(), 'process'
