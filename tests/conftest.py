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


@pytest.fixture(scope='module')
def loaded(tmp_path_factory):
  """(data config, workdir, loaded data) of a folder of 4 strata x 10 patients x 2 images."""
  # Imported here: they import TensorFlow, which most tests do without.
  import data_trees  # pylint: disable=g-import-not-at-top
  from hybridcovid.data import loading  # pylint: disable=g-import-not-at-top
  tmp_path = tmp_path_factory.mktemp('pipeline')
  data_trees.write_folder(str(tmp_path / 'images'), patients_per_stratum=10)
  config = data_trees.data_config(tmp_path, tmp_path / 'images')
  workdir = str(tmp_path / 'work')
  return config, workdir, loading.load(config, workdir, seed=0)
