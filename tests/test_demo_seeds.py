import json
import os
import subprocess
import sys

import pytest

from hybridcovid import demo_seeds
from hybridcovid.report import json_format, writer

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _write_run(runs_dir, seed, accuracy, seconds):
  workdir = runs_dir / f'seed{seed}'
  counts = {'tp': 140, 'fn': 5, 'tn': 130, 'fp': 11}
  metrics = {'selected_epoch': 6, 'history': [{}] * 6,
             'test': {'overall': {'accuracy': accuracy, 'auc': 0.97, 'counts': counts,
                                  'intervals': {'accuracy': [accuracy - 0.04, accuracy + 0.03]}}}}
  (workdir / writer.REPORT_DIR).mkdir(parents=True)
  json_format.write_json(str(workdir / writer.REPORT_DIR / writer.METRICS_FILE), metrics)
  (workdir / demo_seeds.WALL_SECONDS_FILE).write_text(f'{seconds}\n')


def test_each_seed_is_a_line_and_the_summary_says_whether_all_met_the_target(tmp_path):
  _write_run(tmp_path, 0, 0.9161, 298.2)
  _write_run(tmp_path, 1, 0.8776, 250.0)
  _write_run(tmp_path, 2, 0.95, 301.5)
  results = [demo_seeds.seed_result(str(tmp_path), seed) for seed in range(3)]
  assert demo_seeds.seed_line(results[0]) == (
      'seed 0: test accuracy 91.61% (CI 87.61-94.61%), AUC 97.00%, 4 min 58.2 s')
  assert [result['reached'] for result in results] == [True, False, False]  # 88%; 5 min 1.5 s.
  summary = demo_seeds.summary(results, '--config.train.epochs=7')
  assert summary['accuracy_range'] == [0.8776, 0.95] and not summary['all_reached']
  assert summary['command'] == "scripts/demo_seeds.sh RUNS_DIR OUT (FLAGS='--config.train.epochs=7')"
  text = demo_seeds.markdown(summary)
  assert '| 0 | 91.61 (87.61-94.61) | 97.00 | 286 | 6 of 6 | 4 min 58.2 s | met |' in text
  assert '| 1 | 87.76 (83.76-90.76) | 97.00 | 286 | 6 of 6 | 4 min 10.0 s | missed |' in text
  assert 'Test accuracy 87.76-95.00%, wall time 4 min 10.0 s to 5 min 01.5 s' in text
  assert summary['cpu'] in text and 'missed by at least one seed' in text


@pytest.mark.subprocess
def test_the_command_writes_both_files(tmp_path):
  for seed in (0, 1):
    _write_run(tmp_path, seed, 0.93, 200)
  out = tmp_path / 'results' / 'demo_seeds'
  out.parent.mkdir()
  result = subprocess.run([sys.executable, '-m', 'hybridcovid.demo_seeds',
                           f'--runs_dir={tmp_path}', '--seeds=0,1', f'--out={out}'],
                          cwd=ROOT, capture_output=True, text=True)
  assert result.returncode == 0, result.stderr
  saved = json.loads((tmp_path / 'results' / 'demo_seeds.json').read_text())
  assert saved['all_reached'] and [row['seed'] for row in saved['seeds']] == [0, 1]
  assert (tmp_path / 'results' / 'demo_seeds.md').read_text() == result.stdout.rstrip('\n') + '\n'
