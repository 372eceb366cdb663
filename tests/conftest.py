"""Shared fixtures. Variables of a randomly initialised hybrid model are built once."""

import os

os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')

import jax  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

from hybridcovid import models  # noqa: E402


@pytest.fixture(scope='session')
def small_images() -> np.ndarray:
  """Four random RGB images in [0, 255] at the smallest supported size."""
  return np.random.default_rng(0).uniform(0, 255, (4, 32, 32, 3)).astype(np.float32)


@pytest.fixture(scope='session')
def hybrid_variables(small_images) -> dict:
  """Randomly initialised variables of the default hybrid classifier."""
  return jax.jit(models.HybridClassifier().init)(jax.random.key(0), small_images)
