"""Shared fixtures. Variables of a randomly initialised hybrid model are built once.

Every process of the suite (the pytest workers and the programs tests start)
shares one JAX compilation cache, made here and removed when the suite ends:
a program several tests compile alike is compiled once, and the user's own
cache is neither read nor filled.
"""

import os
import shutil
import tempfile

os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')
# Set before JAX is imported; the pytest workers and every program inherit it.
_OWN_CACHE = 'JAX_COMPILATION_CACHE_DIR' not in os.environ
if _OWN_CACHE:
  os.environ['JAX_COMPILATION_CACHE_DIR'] = tempfile.mkdtemp(prefix='hybridcovid-tests-jax-')

import jax  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

from hybridcovid import models  # noqa: E402


def pytest_unconfigure(config):
  # The process that made the cache (pytest itself, not a worker) removes it.
  if _OWN_CACHE and not hasattr(config, 'workerinput'):
    shutil.rmtree(os.environ.pop('JAX_COMPILATION_CACHE_DIR'), ignore_errors=True)


def pytest_collection_modifyitems(items):
  # The workers take whole files in this order: files with slow tests first, so
  # that no long file starts when the other worker is nearly done.
  slow_files = {item.path for item in items if item.get_closest_marker('slow')}
  items.sort(key=lambda item: item.path not in slow_files)


@pytest.fixture(scope='session')
def small_images() -> np.ndarray:
  """Four random RGB images in [0, 255] at the smallest supported size."""
  return np.random.default_rng(0).uniform(0, 255, (4, 32, 32, 3)).astype(np.float32)


@pytest.fixture(scope='session')
def hybrid_variables() -> dict:
  """Randomly initialised variables of the default hybrid classifier.

  Initialised on one 32x32 uint8 image, as a run at that size does: the same
  program, so the suite compiles it once.
  """
  return models.initialize(models.HybridClassifier(), jax.random.key(0),
                           np.zeros((1, 32, 32, 3), np.uint8))


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
