import json
import os
import re
import subprocess
import sys

import pytest

from configs import default
import data_trees

pytestmark = pytest.mark.subprocess

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
  assert last.startswith('error: No data given.')
  assert 'kaggle.com' in last and '--config=configs/hybrid.py:demo' in last
  assert 'Traceback' not in result.stderr


def test_predict_needs_no_config_and_names_a_workdir_without_a_trained_run(tmp_path):
  result = subprocess.run([sys.executable, 'main.py', '--mode=predict', f'--workdir={tmp_path}',
                           f'--input={tmp_path}'], cwd=ROOT, capture_output=True, text=True)
  assert result.returncode == 1
  assert result.stderr.strip().splitlines()[-1] == (
      f'error: {tmp_path} holds no trained run (best/ is missing): check --workdir, or train '
      'first (python main.py --config=... --workdir=...).')
  assert os.listdir(tmp_path) == []


def test_other_modes_still_need_a_config(tmp_path):
  result = subprocess.run([sys.executable, 'main.py', '--mode=summary', f'--workdir={tmp_path}'],
                          cwd=ROOT, capture_output=True, text=True)
  assert result.returncode == 1
  assert '--mode=summary needs --config' in result.stderr


# Each epoch of the demo logs one line.
DEMO_EPOCHS = default.demo(default.get_config()).train.epochs


def _console_lines(output: str) -> list[str]:
  """What a person reads of `output`: no progress bars (tqdm's carriage-return
  updates), no blank lines."""
  return [line for line in output.splitlines()
          if line.strip() and '\r' not in line and not re.search(r'\|[^|]*\| *\d+/', line)]


@pytest.mark.slow
def test_a_demo_run_says_little_and_compiles_each_step_once(tmp_path):
  epochs = 2
  result = subprocess.run(
      [sys.executable, 'main.py', '--config=configs/hybrid.py:demo', f'--workdir={tmp_path}/work',
       f'--config.train.epochs={epochs}', '--config.data.synthetic_patients_per_class=16',
       '--config.data.image_size=32', "--config.model.backbones=('resnet50',)",
       '--config.eval.bootstrap_resamples=50', f'--config.compilation_cache_dir={tmp_path}/cache'],
      cwd=ROOT, capture_output=True, text=True, env={**os.environ, 'JAX_LOG_COMPILES': '1'})
  assert result.returncode == 0, result.stderr[-3000:]
  output = result.stdout + result.stderr
  # JAX's own log of what it compiles, asked for by JAX_LOG_COMPILES, is not console output.
  compiled = [line for line in output.splitlines() if 'Compiling jit(' in line]
  assert sum('jit(train_step)' in line for line in compiled) == 1
  assert sum('jit(eval_features_step)' in line for line in compiled) == 1
  lines = [line for line in _console_lines(output)
           if not re.search(r'(pxla|dispatch|compiler)\.py:\d+\]', line)]
  # The full demo logs one more line per further epoch.
  assert len(lines) + DEMO_EPOCHS - epochs <= 25, '\n'.join(lines)
  assert lines[0].endswith(f'Config: {tmp_path}/work/config.json')
  assert lines[-1].endswith(f'Report written to {tmp_path}/work/report/report.md.')
  assert any('Compiling the train step' in line for line in lines)
  for noise in ('oneDNN', 'tpu', 'Downloading and preparing', 'Using custom data configuration'):
    assert noise not in output
  config = json.loads((tmp_path / 'work' / 'config.json').read_text())
  assert config['train']['epochs'] == epochs
  assert os.path.isdir(tmp_path / 'work' / 'prepared_data')  # Nothing outside the workdir.


def test_a_bad_config_flag_is_one_line_with_the_nearest_field(tmp_path):
  for flag, message in (
      ('--config.train.epochz=3',
       'error: --config.train.epochz: no such config field. Did you mean --config.train.epochs?'),
      ('--config.trian.epochs=3',
       'error: --config.trian.epochs: no such config field. Did you mean --config.train.epochs?'),
      ('--config.train.epochs=abc',
       "error: flag --config.train.epochs=abc: invalid literal for int() with base 10: 'abc' "
       'See --helpfull for every flag.')):
    result = _main(f'--workdir={tmp_path}', flag)
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [message]
  variant = subprocess.run([sys.executable, 'main.py', '--config=configs/hybrid.py:demoo',
                            f'--workdir={tmp_path}'], cwd=ROOT, capture_output=True, text=True)
  assert variant.stderr.strip().splitlines() == [
      "error: flag --config=configs/hybrid.py:demoo: Unknown config variant 'demoo'; choose "
      "from ['demo'] (e.g. --config=configs/hybrid.py:demo). See --helpfull for every flag."]
