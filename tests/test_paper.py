import json
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
