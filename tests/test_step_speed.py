import importlib.util
import json
import os
import subprocess
import sys

import pytest

from configs import default
from hybridcovid import errors
from hybridcovid.benchmark import step_speed as benchmark

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _config(backbones=('resnet50',), image_size=64, **settings):
  config = default.experiment(backbones, ('cxr', 'ct'))
  config.data.image_size = image_size
  config.benchmark.batch_sizes = (2,)
  config.benchmark.warmup_steps = 1
  config.benchmark.steps = 2
  config.benchmark.update(settings)
  return config


def resnet50_flops_per_image(size: int) -> float:
  """Multiply-adds of ResNet50 v1's convolutions at size x size, times two, as XLA counts them.

  XLA's cost analysis leaves out the taps of its convolutions that fall on
  'SAME' padding: a 3x3 kernel over s x s makes (3s - 2)^2 of the 9 s^2. The
  convolutions run as matrix products (inputs smaller than the kernel, see
  models/conv.py) count all taps.
  """
  out = -(-size // 2)
  flops = out * out * 7 * 7 * 3 * 64
  spatial, channels = -(-out // 2), 64
  for filters, blocks, stride in ((64, 3, 1), (128, 4, 2), (256, 6, 2), (512, 3, 2)):
    for block in range(blocks):
      if block == 0:
        spatial = -(-spatial // stride)
        flops += spatial ** 2 * channels * 4 * filters  # Projection shortcut.
      taps = (3 * spatial - 2) ** 2 if spatial >= 3 else 9 * spatial ** 2
      flops += (spatial ** 2 * (channels * filters + filters * 4 * filters)
                + taps * filters * filters)
      channels = 4 * filters
  return 2.0 * flops


def test_inference_flops_match_resnet50s_convolutions_and_training_costs_about_three_times():
  config = _config()
  inference = benchmark.measure(config, 'inference', 2, 'float32')
  training = benchmark.measure(config, 'train', 2, 'float32')
  expected = resnet50_flops_per_image(64)
  # Besides the convolutions: BatchNorm, activations, pooling and the head.
  assert expected <= inference['flops_per_image'] <= 1.05 * expected
  assert 2.5 <= training['flops_per_image'] / inference['flops_per_image'] <= 3.5
  for result in (inference, training):
    speed = result['images_per_second']
    assert 0 < speed['min'] <= speed['median'] <= speed['max']
    assert result['compile_seconds'] > 0
    assert result['peak_memory_bytes'] > 100 * 2**20


@pytest.mark.subprocess
def test_benchmark_imports_neither_tensorflow_nor_h5py():
  program = os.path.join(ROOT, 'tests', 'programs', 'measure_without_tensorflow.py')
  done = subprocess.run([sys.executable, program], cwd=ROOT, capture_output=True, text=True)
  assert done.returncode == 0, done.stderr


def test_unknown_mode_is_a_user_error(tmp_path):
  with pytest.raises(errors.UserError, match='--config.benchmark.modes'):
    benchmark.run(_config(modes=('training',)), str(tmp_path))


@pytest.mark.subprocess
def test_a_failing_measurement_is_reported_not_raised():
  result = benchmark.run_process([sys.executable, '-c', 'import sys; sys.exit(3)'], 60)
  assert result['error'].startswith('exit status 3')


@pytest.mark.slow
@pytest.mark.subprocess
def test_benchmark_mode_measures_ours_and_the_peers_in_one_run(tmp_path):
  done = subprocess.run(
      [sys.executable, 'main.py', '--mode=benchmark', '--config=configs/cxr_efficientnetb0.py',
       f'--workdir={tmp_path}', '--config.data.image_size=32', "--config.benchmark.modes=('inference',)",
       '--config.benchmark.batch_sizes=(2,)', '--config.benchmark.steps=2',
       '--config.benchmark.peers=True'], cwd=ROOT, capture_output=True, text=True)
  assert done.returncode == 0, done.stderr
  result = json.loads((tmp_path / 'benchmark.json').read_text())
  [case] = result['cases']
  assert case['ours']['images_per_second']['median'] > 0
  assert case['peers']['keras']['images_per_second']['median'] > 0
  torch_result = case['peers']['pytorch']
  if importlib.util.find_spec('torch') is None:
    assert torch_result == {'skipped': 'torch not installed'}
  else:
    assert torch_result['images_per_second']['median'] > 0, torch_result
  assert f"| inference | 2 | float32 | {case['ours']['images_per_second']['median']:.2f}" in (
      tmp_path / 'benchmark.md').read_text()


def test_plain_pytorch_backbones_have_torchvisions_parameter_counts():
  torch = pytest.importorskip('torch')
  sys.path.insert(0, os.path.join(ROOT, 'benchmarks', 'peers'))
  import torch_models  # pylint: disable=import-outside-toplevel

  def count(module):
    return sum(p.numel() for p in module.parameters())

  # torchvision's resnet50 and efficientnet_b0 without their classifiers.
  assert count(torch_models.resnet50_features()) == 25_557_032 - 2_049_000
  assert count(torch_models.efficientnet_b0_features()) == 5_288_548 - 1_281_000
  features = torch_models.efficientnet_b0_features().eval()(torch.zeros(1, 3, 64, 64))
  assert tuple(features.shape) == (1, 1280, 2, 2)
