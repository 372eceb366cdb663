"""How the report writes its numbers and groups: percentages, undefined metrics, group names."""

import math

GROUP_NAMES = {'overall': 'All', 'cxr': 'CXR', 'ct': 'CT'}


def undefined(value: float | None) -> bool:
  """Whether a metric is undefined: NaN in memory, null in metrics.json."""
  return value is None or math.isnan(value)


def percent(value: float | None) -> str:
  """A metric as a percentage with two decimals, or 'n/a' when undefined."""
  return 'n/a' if undefined(value) else f'{100 * value:.2f}'


def group_name(group: str) -> str:
  """A group as the report names it: All, CXR, CT, or the source's own name."""
  return GROUP_NAMES.get(group, group.removeprefix('source:'))
