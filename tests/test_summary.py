import json
import os
import subprocess
import sys

from configs import default
from hybridcovid import summary


def test_summary_counts_every_part(tmp_path):
  config = default.get_config()
  config.model.backbones = ('efficientnetb0',)
  config.model.hidden_units = 16
  config.data.image_size = 32
  result = summary.summarize(config, str(tmp_path))
  assert result['values_per_part'] == {
      'efficientnetb0': 4_049_564,
      'hidden': 1280 * 16 + 16,
      'logits': 16 * 2 + 2,
  }
  assert result['logits_shape'] == [1, 2]
  with open(tmp_path / 'model_summary.json') as f:
    assert json.load(f) == result


def test_main_reports_a_bad_pretrained_path_without_a_traceback(tmp_path):
  root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  result = subprocess.run(
      [sys.executable, 'main.py', '--config=configs/hybrid.py',
       f'--workdir={tmp_path}', '--config.data.image_size=32',
       "--config.model.backbones=('efficientnetb0',)",
       f'--config.model.pretrained.efficientnetb0={tmp_path}/missing'],
      cwd=root, capture_output=True, text=True)
  assert result.returncode == 1
  assert result.stderr.strip().splitlines()[-1].startswith(
      f'error: {tmp_path}/missing is not a converted backbone checkpoint')
  assert 'Traceback' not in result.stderr
