import hashlib
import json
import os
import types

import jax
import pytest

from configs import default
from hybridcovid import runs
from hybridcovid.data import sources


def _data(*keys):
  """A stand-in for `loading.LoadedData`: the facts' keys and file digests alone."""
  facts = [types.SimpleNamespace(record=types.SimpleNamespace(key=key), sha256=f'{i:064x}')
           for i, key in enumerate(keys)]
  return types.SimpleNamespace(facts=facts)


def test_inputs_are_written_once_and_their_digest_names_them(tmp_path):
  digest = runs.write_inputs(str(tmp_path), _data('cxr:a.png', 'ct:b.png'))
  text = (tmp_path / runs.INPUTS_FILE).read_text()
  assert json.loads(text) == {'cxr:a.png': f'{0:064x}', 'ct:b.png': f'{1:064x}'}
  assert digest == hashlib.sha256(text.encode()).hexdigest()


def test_the_run_record_names_the_config_split_inputs_and_versions(tmp_path):
  (tmp_path / 'split.json').write_text('{"assignment": {}}')
  config = default.get_config()
  config.seed = 3
  record = runs.run_record(config, str(tmp_path), 'abc')
  assert record['config']['seed'] == 3 and record['seed'] == 3
  assert record['split_file'] == str(tmp_path / 'split.json')
  assert record['split_sha256'] == hashlib.sha256(b'{"assignment": {}}').hexdigest()
  assert record['inputs_file'] == os.path.join(str(tmp_path), runs.INPUTS_FILE)
  assert record['inputs_sha256'] == 'abc'
  assert {'jax', 'flax', 'python'} <= set(record['versions'])
  assert record['devices']


def test_a_data_error_of_process_0_is_raised_as_it_is(tmp_path):
  config = default.get_config().data  # No data named: loading says how to get some.
  with pytest.raises(sources.DataSourceError, match='--config.data.synthetic=True'):
    runs.load_data(config, str(tmp_path), seed=0)


@pytest.mark.parametrize('environment', ['', 'from-environment'])
def test_the_compilation_cache_is_the_configs_unless_jax_compilation_cache_dir_is_set(
    tmp_path, monkeypatch, environment):
  previous = jax.config.jax_compilation_cache_dir
  if environment:
    monkeypatch.setenv('JAX_COMPILATION_CACHE_DIR', str(tmp_path / environment))
  else:
    monkeypatch.delenv('JAX_COMPILATION_CACHE_DIR', raising=False)
  config = default.get_config()
  config.compilation_cache_dir = str(tmp_path / 'from-config')
  try:
    runs.setup_jax(config)
    # Set from the environment, JAX's own setting stays as it was.
    expected = previous if environment else str(tmp_path / 'from-config')
    assert jax.config.jax_compilation_cache_dir == expected
  finally:
    jax.config.update('jax_compilation_cache_dir', previous)
