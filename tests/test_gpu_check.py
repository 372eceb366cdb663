import importlib.util
import json
import os
import subprocess

import pytest

pytestmark = pytest.mark.subprocess

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPT = os.path.join(ROOT, 'benchmarks', 'gpu_check.sh')


@pytest.mark.slow
def test_dry_run_measures_every_case_and_checks_correctness(tmp_path):
  done = subprocess.run([SCRIPT, str(tmp_path), '--dry-run'], cwd=ROOT, capture_output=True,
                        text=True, timeout=1900)
  assert done.returncode == 0, done.stderr[-3000:]
  results = json.loads((tmp_path / 'gpu_check.json').read_text())
  assert results['dry_run'] and results['image_size'] == 32
  names = [case['name'] for case in results['cases']]
  # The priorities: the hybrid's training and inference first, then correctness.
  assert names == ['hybrid train', 'hybrid inference', 'correctness']
  torch_installed = importlib.util.find_spec('torch') is not None
  for case in results['cases']:
    assert 'skipped' not in case, case
    if case['name'] == 'correctness':
      continue
    assert case['ours']['images_per_second']['median'] > 0, case
    assert case['ours']['flops_per_image'] > 0
    peer = case['peers']['pytorch']
    if torch_installed:
      assert peer['images_per_second']['median'] > 0, peer
    else:
      assert peer == {'skipped': 'torch not installed'}
  correctness = results['cases'][2]['result']
  for arch in ('resnet50', 'efficientnetb0'):
    features = correctness['features'][arch]
    assert features['input_sensitivity'] > 0.1
    # On CPU the default is conv_impl 'cpu': against XLA's own convolutions.
    assert features['default_vs_cpu'] == 0.0
    assert 0 < features['default_vs_cpu_xla'] <= 1e-4
  assert correctness['pmap_vs_shard_map_after_3_steps'] <= 1e-5
  assert correctness['pmap_vs_shard_map_backbones'] == ['resnet50']
  table = (tmp_path / 'gpu_check.md').read_text()
  assert table.startswith('# GPU check (dry run)')
  assert '| hybrid train | 4 | bfloat16 |' in table and '## Correctness' in table


def test_missing_ml_collections_is_named_with_the_fix(tmp_path):
  # A Python that cannot import ml_collections, and no wheel to bring it.
  blocker = tmp_path / 'block'
  blocker.mkdir()
  (blocker / 'ml_collections.py').write_text('raise ImportError("not installed")\n')
  env = {**os.environ, 'PYTHONPATH': str(blocker),
         'HYBRIDCOVID_WHEELS': str(tmp_path / 'no-wheels')}
  done = subprocess.run([SCRIPT, str(tmp_path / 'out'), '--dry-run'], cwd=ROOT, env=env,
                        capture_output=True, text=True, timeout=60)
  assert done.returncode == 1
  assert 'ml_collections is not installed' in done.stderr
  assert 'pip download --no-deps -d' in done.stderr


def test_the_gpu_run_times_every_single_backbone_case_at_both_batches():
  gpu_check = _load_gpu_check()
  listed = [(case['name'], case.get('batch_size'), case.get('dtype'))
            for case in gpu_check.cases(False)]
  assert listed[:2] == [('hybrid train', 128, 'bfloat16'), ('hybrid inference', 128, 'bfloat16')]
  assert listed[3:] == [(f'{arch} {mode}', batch, 'float32') for mode in ('train', 'inference')
                        for arch in ('resnet50', 'efficientnetb0') for batch in (32, 256)]


def _load_gpu_check():
  spec = importlib.util.spec_from_file_location('gpu_check', SCRIPT.replace('.sh', '.py'))
  gpu_check = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(gpu_check)
  return gpu_check


@pytest.mark.parametrize('dry_run, factor', [(False, 1), (True, 4)])
def test_a_dry_run_gives_each_case_four_times_its_gpu_cap(tmp_path, monkeypatch, dry_run,
                                                          factor):
  gpu_check = _load_gpu_check()
  case_seconds = []

  def run_process(command, timeout):  # The correctness case.
    case_seconds.append(timeout)
    return {}

  def measure_case(config, mode, batch_size, dtype, peers, timeout):
    case_seconds.append(2 * timeout)  # Ours and the peer's share a case's time.
    return {}

  monkeypatch.setattr(gpu_check.benchmark, 'measure_environment', lambda *_: {})
  monkeypatch.setattr(gpu_check, '_save', lambda *_: None)
  monkeypatch.setattr(gpu_check.benchmark, 'run_process', run_process)
  monkeypatch.setattr(gpu_check.benchmark, 'measure_case', measure_case)
  results = gpu_check.run_check(str(tmp_path), dry_run, budget_seconds=1e6)
  assert case_seconds == [factor * case['cap'] for case in gpu_check.cases(dry_run)]
  assert not any('skipped' in case for case in results['cases'])
