import json
import os
import subprocess
import sys

import pytest

from hybridcovid.data import loading
from hybridcovid.report import json_format, paper, writer
from test_main import ROOT


def test_every_cell_of_the_papers_tables_is_transcribed_by_row():
  # Literal values from the paper's Tables 2-4 (Az, Sp, Re, F-M, as printed) and Table 1.
  assert paper.PAPER_RESULTS == {
      'cxr_resnet50': ('Table 2', 'ResNet50', ('98.47', '99.0', '100', '99.0')),
      'cxr_efficientnetb0': ('Table 2', 'EfficientNet(B0)', ('99.36', '98.0', '99.0', '99.0')),
      'ct_resnet50': ('Table 3', 'ResNet50', ('98.85', '99.0', '98.0', '99.0')),
      'ct_efficientnetb0': ('Table 3', 'EfficientNet(B0)', ('99.23', '99.0', '99.0', '99.0')),
      'pooled_resnet50': ('Table 4', 'ResNet50', ('98.01', '99.0', '99.0', '99.0')),
      'pooled_efficientnetb0': ('Table 4', 'EfficientNet(B0)', ('99.58', '99.0', '99.0', '99.0')),
  }
  assert sum(len(values) for _, _, values in paper.PAPER_RESULTS.values()) == 24
  assert [short for _, short in paper.COLUMNS] == ['Az', 'Sp', 'Re', 'F-M']
  assert paper.PAPER_DATA == {'ct': {'covid': 1323, 'normal': 1290},
                              'cxr': {'covid': 3923, 'normal': 3960}}
  # Every experiment the script runs has a row; only the Figure 1 model has no paper row.
  names = [name for name, _, _ in paper.EXPERIMENTS]
  assert names == ['cxr_resnet50', 'cxr_efficientnetb0', 'ct_resnet50', 'ct_efficientnetb0',
                   'pooled_resnet50', 'pooled_efficientnetb0', 'hybrid']
  assert set(names) - set(paper.PAPER_RESULTS) == {'hybrid'}


def _write_run(runs_dir, name, accuracy, intervals=True, level=0.95):
  folder = runs_dir / name / writer.REPORT_DIR
  folder.mkdir(parents=True)
  overall = {'accuracy': accuracy, 'specificity': 0.5, 'recall': 0.25, 'f1': float('nan')}
  result = {'test': {'overall': overall}}
  if intervals:
    overall['intervals'] = {'accuracy': [accuracy - 0.1, accuracy + 0.05],
                            'specificity': [float('nan'), float('nan')],
                            'recall': [0.1, 0.4], 'f1': [float('nan'), float('nan')]}
    result['intervals'] = {'level': level, 'resamples': 1000, 'unit': 'patient'}
  # As the report writes it: strict JSON, undefined metrics as null.
  json_format.write_json(str(folder / writer.METRICS_FILE), result)


def _write_audit(runs_dir, name, class_balance, dropped=0, bad=0):
  audit = {'class_balance': class_balance, 'dropped_duplicates': [f'k{i}' for i in range(dropped)],
           'bad_files': [{'file': f'f{i}', 'error': 'x'} for i in range(bad)]}
  (runs_dir / name).mkdir(parents=True, exist_ok=True)
  (runs_dir / name / loading.AUDIT_FILE).write_text(json.dumps(audit))


def _sections(runs_dir):
  """The lines of the results table's section and of the data table's."""
  lines = paper.paper_table(str(runs_dir)).splitlines()
  start = lines.index("## Data (the paper's Table 1)")
  assert lines[0] == "## Results (the paper's Tables 2-4)"
  return lines[:start], lines[start:]


def _line(lines, start):
  [line] = [line for line in lines if line.startswith(start)]
  return line


def test_table_puts_each_run_beside_the_papers_row(tmp_path):
  _write_run(tmp_path, 'hybrid', 0.875)
  _write_run(tmp_path, 'ct_resnet50', 0.5, intervals=False)
  lines, _ = _sections(tmp_path)
  assert lines[2] == ('| Experiment | Data | Model | Paper row | Az ours | Sp ours | Re ours | '
                      'F-M ours | Az paper | Sp paper | Re paper | F-M paper |')
  # Our cells carry their intervals; an undefined interval leaves the bare value.
  assert _line(lines, '| hybrid |') == (
      '| hybrid | CXR+CT | ResNet50 + EfficientNetB0 | none: the paper gives this model no '
      'number of its own | 87.50 (77.50-92.50) | 50.00 | 25.00 (10.00-40.00) | n/a | '
      '- | - | - | - |')
  assert _line(lines, '| ct_resnet50 |') == (
      '| ct_resnet50 | CT | ResNet50 | Table 3 ResNet50 | 50.00 | 50.00 | 25.00 | n/a | '
      '98.85 | 99.0 | 98.0 | 99.0 |')
  assert _line(lines, '| cxr_resnet50 |') == (
      '| cxr_resnet50 | CXR | ResNet50 | Table 2 ResNet50 | - | - | - | - | '
      '98.47 | 99.0 | 100 | 99.0 |')
  assert _line(lines, '| pooled_efficientnetb0 |').endswith(
      '| Table 4 EfficientNet(B0) | - | - | - | - | 99.58 | 99.0 | 99.0 | 99.0 |')
  text = '\n'.join(lines)
  assert 'In brackets: bootstrap confidence intervals (95%, 1000 resamples of patients).' in text
  assert paper.HYBRID_NOTE in lines
  assert ('the 99.58% its conclusion quotes for the hybrid approach is that table\'s '
          'EfficientNet(B0) row, shown beside pooled_efficientnetb0.') in paper.HYBRID_NOTE
  assert ('Not run yet (no report/metrics.json): cxr_resnet50, cxr_efficientnetb0, '
          'ct_efficientnetb0, pooled_resnet50, pooled_efficientnetb0.') in lines


def test_intervals_of_differing_levels_are_named_per_run(tmp_path):
  _write_run(tmp_path, 'cxr_resnet50', 0.5, level=0.9)
  _write_run(tmp_path, 'hybrid', 0.5)
  text = paper.paper_table(str(tmp_path))
  assert ('In brackets: bootstrap confidence intervals (cxr_resnet50 90%, 1000 resamples of '
          'patients; hybrid 95%, 1000 resamples of patients).') in text


def test_data_table_puts_the_loaded_images_beside_table_1(tmp_path):
  paper_split = {'train': {'ct': {'normal': 903, 'covid': 926}},
                 'test': {'ct': {'normal': 258, 'covid': 265}},
                 'validation': {'ct': {'normal': 129, 'covid': 132}}}
  _write_audit(tmp_path, 'ct_resnet50', paper_split)
  _write_audit(tmp_path, 'pooled_resnet50',
               {'train': {'cxr': {'normal': 3960, 'covid': 3900}, 'ct': {'normal': 1290}},
                'test': {'ct': {'covid': 1323}}, 'validation': {}},
               dropped=20, bad=3)
  _, lines = _sections(tmp_path)
  assert lines[2:5] == [
      '| Data | CXR COVID | CXR Normal | CT COVID | CT Normal | Against Table 1 |',
      '|---|---|---|---|---|---|',
      '| Paper (Table 1) | 3,923 | 3,960 | 1,323 | 1,290 |  |']
  assert _line(lines, '| ct_resnet50 |') == '| ct_resnet50 | - | - | 1,323 | 1,290 | same |'
  assert _line(lines, '| pooled_resnet50 |') == (
      '| pooled_resnet50 | 3,900 | 3,960 | 1,323 | 1,290 | differs: CXR COVID -23 '
      '(20 duplicate copies and 3 unreadable files left out) |')
  assert _line(lines, '| hybrid |') == '| hybrid | - | - | - | - | no audit.json |'


def test_repeated_runs_give_mean_and_sd_and_whether_the_paper_lies_inside(tmp_path):
  for seed, accuracy in [(10, 1.0), (0, 0.99), (2, 0.995)]:
    _write_run(tmp_path, f'cxr_efficientnetb0/seed-{seed}', accuracy)
  _write_run(tmp_path, 'hybrid', 0.875)
  (tmp_path / 'cxr_efficientnetb0' / 'seed-x').mkdir()  # Not a seed: ignored.
  _write_audit(tmp_path, 'cxr_efficientnetb0/seed-0', {'train': {'cxr': {'covid': 3923,
                                                                         'normal': 3960}}})
  lines, data_lines = _sections(tmp_path)
  assert lines[2].endswith('| F-M paper | Paper within mean ± 2 sd |')
  # Accuracy 99.50 ± 0.50 holds the paper's 99.36; specificity (50 in every run, sd 0)
  # and recall are far from 98.0 and 99.0; F-M is undefined in every run.
  assert _line(lines, '| cxr_efficientnetb0 | CXR |') == (
      '| cxr_efficientnetb0 | CXR | EfficientNetB0 | Table 2 EfficientNet(B0) | 99.50 ± 0.50 | '
      '50.00 ± 0.00 | 25.00 ± 0.00 | n/a | 99.36 | 98.0 | 99.0 | 99.0 | '
      'inside: Az; outside: Sp, Re |')
  assert _line(lines, '| hybrid | CXR+CT |').endswith('| 87.50 (77.50-92.50) | 50.00 | '
                                             '25.00 (10.00-40.00) | n/a | - | - | - | - | - |')
  runs = lines[lines.index('### Each run'):]
  assert runs[2:4] == ['| Experiment | Run | Az | Sp | Re | F-M |', '|---|---|---|---|---|---|']
  assert [line.split(' | ')[1] for line in runs[4:8]] == ['seed-0', 'seed-2', 'seed-10',
                                                         'hybrid']
  assert runs[4] == ('| cxr_efficientnetb0 | seed-0 | 99.00 (89.00-104.00) | 50.00 | '
                     '25.00 (10.00-40.00) | n/a |')
  assert 'mean ± standard deviation over the runs of an experiment with different seeds' in (
      '\n'.join(lines))
  assert _line(data_lines, '| cxr_efficientnetb0 |') == (
      '| cxr_efficientnetb0 | 3,923 | 3,960 | - | - | same |')


def test_the_script_runs_each_experiment_once_per_seed_into_its_own_folder(tmp_path):
  fake = tmp_path / 'bin' / 'python'
  fake.parent.mkdir()
  fake.write_text('#!/bin/sh\necho "$@" >> "$CALLS"\n')
  fake.chmod(0o755)
  calls = tmp_path / 'calls.txt'
  environment = {**os.environ, 'PATH': f'{fake.parent}:{os.environ["PATH"]}',
                 'CALLS': str(calls), 'SEEDS': '0 7', 'VARIANT': 'demo'}
  done = subprocess.run(['scripts/reproduce_paper.sh', str(tmp_path / 'runs'),
                         '--config.train.epochs=1'], cwd=ROOT, env=environment,
                        capture_output=True, text=True)
  assert done.returncode == 0, done.stderr
  lines = calls.read_text().splitlines()
  assert len(lines) == 2 * len(paper.EXPERIMENTS) + 1
  runs = tmp_path / 'runs'
  assert lines[:2] == [
      f'{ROOT}/main.py --config={ROOT}/configs/cxr_resnet50.py:demo '
      f'--workdir={runs}/cxr_resnet50/seed-{seed} --config.seed={seed} '
      f'--config.data.tfds_dir={runs}/prepared_data --config.train.epochs=1' for seed in (0, 7)]
  assert lines[-1] == f'-m hybridcovid.report.paper --runs_dir={runs}'
  del environment['SEEDS']
  calls.unlink()
  assert subprocess.run(['scripts/reproduce_paper.sh', str(runs)], cwd=ROOT,
                        env=environment).returncode == 0
  assert calls.read_text().splitlines()[0] == (
      f'{ROOT}/main.py --config={ROOT}/configs/cxr_resnet50.py:demo '
      f'--workdir={runs}/cxr_resnet50 --config.data.tfds_dir={runs}/prepared_data')


@pytest.mark.subprocess
def test_command_writes_the_table(tmp_path):
  _write_run(tmp_path, 'hybrid', 0.9)
  result = subprocess.run([sys.executable, '-m', 'hybridcovid.report.paper',
                           f'--runs_dir={tmp_path}'], cwd=ROOT, capture_output=True, text=True)
  assert result.returncode == 0, result.stderr
  assert (tmp_path / paper.TABLE_FILE).read_text() == result.stdout.rstrip('\n') + '\n'
  missing = subprocess.run([sys.executable, '-m', 'hybridcovid.report.paper',
                            f'--runs_dir={tmp_path / "nowhere"}'],
                           cwd=ROOT, capture_output=True, text=True)
  assert missing.returncode != 0 and 'nowhere: no such folder' in missing.stderr
