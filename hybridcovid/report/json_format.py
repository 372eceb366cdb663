"""Strict JSON, the format of metrics.json and of prediction's output."""

import json
import math
from typing import TextIO

import numpy as np


def strict_json(value):
  """`value` with every NaN or infinite float as None, so that json.dump writes strict
  JSON (null), which every JSON reader accepts."""
  if isinstance(value, dict):
    return {key: strict_json(item) for key, item in value.items()}
  if isinstance(value, (list, tuple)):
    return [strict_json(item) for item in value]
  if isinstance(value, (float, np.floating)):
    return float(value) if math.isfinite(value) else None
  if isinstance(value, np.integer):
    return int(value)
  if isinstance(value, np.bool_):
    return bool(value)
  if isinstance(value, np.ndarray):
    return strict_json(value.tolist())
  return value


def dump_json(value, f: TextIO) -> None:
  """`value` as strict, indented JSON into the open file `f`."""
  json.dump(strict_json(value), f, indent=1, allow_nan=False)


def write_json(path: str, value) -> None:
  """`value` as strict, indented JSON in `path`."""
  with open(path, 'w') as f:
    dump_json(value, f)
