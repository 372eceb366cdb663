import json
import os
import subprocess
import sys

import data_trees

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _main(*flags):
  return subprocess.run([sys.executable, 'main.py', '--config=configs/hybrid.py', *flags],
                        cwd=ROOT, capture_output=True, text=True)


def test_main_reports_a_bad_pretrained_path_without_a_traceback(tmp_path):
  result = _main('--mode=summary', f'--workdir={tmp_path}', '--config.data.image_size=32',
                 "--config.model.backbones=('efficientnetb0',)",
                 f'--config.model.pretrained.efficientnetb0={tmp_path}/missing')
  assert result.returncode == 1
  assert result.stderr.strip().splitlines()[-1].startswith(
      f'error: {tmp_path}/missing is not a converted backbone checkpoint')
  assert 'Traceback' not in result.stderr


def test_audit_mode_writes_the_split_and_the_report(tmp_path):
  data_trees.write_folder(str(tmp_path / 'images'), patients_per_stratum=3)
  flags = ['--mode=audit', f'--workdir={tmp_path}/work',
           f'--config.data.folder_dir={tmp_path}/images',
           f'--config.data.tfds_dir={tmp_path}/tfds']
  result = _main(*flags)
  assert result.returncode == 0, result.stderr
  report = json.loads((tmp_path / 'work' / 'audit.json').read_text())
  assert report['images'] == 24 and report['patients'] == 12
  assert 'patients in more than one split: 0' in result.stderr
  missing = _main('--mode=audit', f'--workdir={tmp_path}/work2',
                  f'--config.data.folder_dir={tmp_path}/nowhere')
  assert missing.returncode == 1 and 'nowhere: no such folder' in missing.stderr
  assert 'Traceback' not in missing.stderr


def test_training_without_data_says_how_to_get_it(tmp_path):
  result = _main(f'--workdir={tmp_path}')
  assert result.returncode == 1
  last = result.stderr.strip().splitlines()[-1]
  assert last.startswith('error: No data given.') and '--config.data.synthetic=True' in last
  assert 'Traceback' not in result.stderr
