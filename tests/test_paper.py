import json
import subprocess
import sys

from hybridcovid import paper, report
from test_main import ROOT


def _write_run(runs_dir, name, accuracy):
  folder = runs_dir / name / report.REPORT_DIR
  folder.mkdir(parents=True)
  overall = {'accuracy': accuracy, 'specificity': 0.5, 'recall': 0.25, 'f1': float('nan')}
  (folder / report.METRICS_FILE).write_text(json.dumps({'test': {'overall': overall}}))


def test_table_puts_each_run_beside_the_papers_numbers(tmp_path):
  _write_run(tmp_path, 'hybrid', 0.875)
  _write_run(tmp_path, 'ct_resnet50', 0.5)
  lines = paper.paper_table(str(tmp_path)).splitlines()
  assert lines[0].startswith('| Experiment | Data | Model | Az ours | Sp ours')
  hybrid = next(line for line in lines if line.startswith('| Figure 1 |'))
  assert hybrid == ('| Figure 1 | CXR+CT | ResNet50 + EfficientNetB0 | 87.50 | 50.00 | 25.00 | '
                    'n/a | 99.58 | - | - | - |')
  cxr = next(line for line in lines if 'CXR | EfficientNetB0' in line)
  assert '| - | - | - | - | 99.36 |' in cxr
  assert len([line for line in lines if line.startswith('| Table')]) == 6
  assert lines[-1] == ('Not run yet (no report/metrics.json): cxr_resnet50, cxr_efficientnetb0, '
                       'ct_efficientnetb0, pooled_resnet50, pooled_efficientnetb0.')


def test_command_writes_the_table(tmp_path):
  _write_run(tmp_path, 'hybrid', 0.9)
  result = subprocess.run([sys.executable, '-m', 'hybridcovid.paper', f'--runs_dir={tmp_path}'],
                          cwd=ROOT, capture_output=True, text=True)
  assert result.returncode == 0, result.stderr
  assert (tmp_path / paper.TABLE_FILE).read_text() == result.stdout.rstrip('\n') + '\n'
