"""Counts the primitives a traced function runs, inside nested jaxprs too."""

import collections
from typing import Any, Callable

import jax


def _count(jaxpr, counts: collections.Counter) -> collections.Counter:
  for eqn in jaxpr.eqns:
    counts[eqn.primitive.name] += 1
    for value in eqn.params.values():
      for item in value if isinstance(value, (tuple, list)) else (value,):
        inner = getattr(item, 'jaxpr', item)  # A ClosedJaxpr holds a Jaxpr.
        if hasattr(inner, 'eqns'):
          _count(inner, counts)
  return counts


def count_primitives(fun: Callable[..., Any], *args: Any) -> collections.Counter:
  """How often each primitive (by name) occurs in the jaxpr of `fun(*args)`."""
  return _count(jax.make_jaxpr(fun)(*args).jaxpr, collections.Counter())
