"""The diagnostic classes: COVID-19 against normal (the paper's task), or against normal
and other pneumonia.

A label is a class's index in `NAMES`. COVID keeps label 1 in both tasks, so
the COVID probability, and every decision and metric of COVID against the
rest, are the same code for two classes and for three.
"""

from typing import Any

from hybridcovid import errors

NAMES = ('normal', 'covid', 'pneumonia')
# As folders, manifests and reports write them.
TITLES = ('Normal', 'COVID', 'Pneumonia')
COVID = NAMES.index('covid')
BINARY = NAMES[:2]
# --config.data.classes values, and the classes each names.
CHOICES = {'normal,covid': BINARY, 'normal,covid,pneumonia': NAMES}


def parse(value: str) -> tuple[str, ...]:
  """The classes of a --config.data.classes value: its names in any order, comma-separated."""
  named = tuple(sorted(name.strip().lower() for name in str(value).split(',') if name.strip()))
  for choice, names in CHOICES.items():
    if named == tuple(sorted(names)):
      return names
  raise errors.UserError(
      f'--config.data.classes={value}: choose {" or ".join(CHOICES)} (COVID-19 against '
      'normal, as in the paper, or against normal and other pneumonia).')


def of_config(data_config: Any) -> tuple[str, ...]:
  """The classes a config's `data` section trains on (two for configs that predate them)."""
  return parse(data_config.get('classes', ','.join(BINARY)))


def negative_name(names: tuple[str, ...]) -> str:
  """What a decision of COVID against the rest calls the rest: normal, or not COVID."""
  return NAMES[0] if len(names) == 2 else 'not COVID'
