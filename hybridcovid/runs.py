"""What every mode shares: JAX set up, the data loaded by process 0 first, the run record."""

import hashlib
import json
import os
import platform
from importlib import metadata

from absl import logging
import jax
from jax.experimental import multihost_utils
import ml_collections
import numpy as np

from hybridcovid import errors, hashing
from hybridcovid.data import loading, sources

PACKAGES = ('jax', 'jaxlib', 'flax', 'optax', 'orbax-checkpoint', 'tensorflow-cpu',
            'tensorflow-datasets', 'numpy')
INPUTS_FILE = 'inputs.json'


def setup_jax(config: ml_collections.ConfigDict) -> None:
  """Compilation cache, deterministic kernels and multi-process start, before any device use."""
  if config.deterministic:
    os.environ['XLA_FLAGS'] = (os.environ.get('XLA_FLAGS', '') +
                               ' --xla_gpu_deterministic_ops=true')
  # JAX's own JAX_COMPILATION_CACHE_DIR, where set, takes precedence.
  if config.compilation_cache_dir and not os.environ.get('JAX_COMPILATION_CACHE_DIR'):
    jax.config.update('jax_compilation_cache_dir',
                      os.path.expanduser(config.compilation_cache_dir))
  distributed = config.distributed
  address = distributed.coordinator_address or os.environ.get('JAX_COORDINATOR_ADDRESS')
  if address:
    jax.distributed.initialize(
        coordinator_address=address,
        num_processes=distributed.num_processes or None,
        process_id=None if distributed.process_id < 0 else distributed.process_id)
    logging.info('Process %d of %d.', jax.process_index(), jax.process_count())


def is_writer() -> bool:
  """Whether this process writes the files every process would write alike."""
  return jax.process_index() == 0


def load_data(data_config: ml_collections.ConfigDict, workdir: str, seed: int,
              all_test: bool = False) -> loading.LoadedData:
  """`loading.load`, by process 0 first: it alone prepares the data and writes files.

  The other processes then read what it prepared; if it fails, they stop too.
  """
  data, error = None, None
  if is_writer():
    try:
      data = loading.load(data_config, workdir, seed, all_test=all_test)
    except errors.UserError as caught:
      error = caught
  failed = bool(multihost_utils.broadcast_one_to_all(np.array(error is not None)))
  if error is not None:
    raise error
  if failed:
    raise sources.DataSourceError('Process 0 could not prepare the data; its log says why.')
  return data or loading.load(data_config, workdir, seed, write_files=False,
                              all_test=all_test)


def _versions() -> dict[str, str]:
  versions = {}
  for package in PACKAGES:
    try:
      versions[package] = metadata.version(package)
    except metadata.PackageNotFoundError:
      continue
  return versions


def write_inputs(workdir: str, data: loading.LoadedData) -> str:
  """Writes every input file's sha256 once; returns the digest the checkpoints name."""
  text = json.dumps({fact.record.key: fact.sha256 for fact in data.facts}, indent=0)
  if is_writer():
    with open(os.path.join(workdir, INPUTS_FILE), 'w') as f:
      f.write(text)
  return hashlib.sha256(text.encode()).hexdigest()


def run_record(config: ml_collections.ConfigDict, workdir: str, inputs_digest: str) -> dict:
  """What a checkpoint records of its run: config, split and inputs with their digests,
  seed, package versions and devices."""
  split_path = config.data.split_file or os.path.join(workdir, loading.SPLIT_FILE)
  return {
      'config': json.loads(config.to_json_best_effort()),
      'split_file': os.path.abspath(split_path),
      'split_sha256': hashing.file_sha256(split_path),
      'inputs_file': os.path.join(os.path.abspath(workdir), INPUTS_FILE),
      'inputs_sha256': inputs_digest,
      'seed': config.seed,
      'versions': {**_versions(), 'python': platform.python_version()},
      'devices': [str(device) for device in jax.devices()],
  }
