"""This project's runs of the paper's experiments beside the paper's reported numbers.

`python -m hybridcovid.paper --runs_dir=DIR` reads `DIR/<experiment>/report/
metrics.json` for each experiment of `scripts/reproduce_paper.sh` and writes
`DIR/paper_table.md`: one row per experiment in the layout of the paper's
Tables 2-4 (Az, Sp, Re, F-M), ours beside the paper's.
"""

import json
import os

from absl import app
from absl import flags

from hybridcovid import report

# (config name, paper table, data, model), in the paper's order.
EXPERIMENTS = (
    ('cxr_resnet50', 'Table 2', 'CXR', 'ResNet50'),
    ('cxr_efficientnetb0', 'Table 2', 'CXR', 'EfficientNetB0'),
    ('ct_resnet50', 'Table 3', 'CT', 'ResNet50'),
    ('ct_efficientnetb0', 'Table 3', 'CT', 'EfficientNetB0'),
    ('pooled_resnet50', 'Table 4', 'CXR+CT', 'ResNet50'),
    ('pooled_efficientnetb0', 'Table 4', 'CXR+CT', 'EfficientNetB0'),
    ('hybrid', 'Figure 1', 'CXR+CT', 'ResNet50 + EfficientNetB0'),
)
COLUMNS = (('accuracy', 'Az'), ('specificity', 'Sp'), ('recall', 'Re'), ('f1', 'F-M'))
# The paper's reported values (fractions) that this table quotes; a metric
# missing here is shown as '-'.
PAPER_RESULTS = {
    'cxr_efficientnetb0': {'accuracy': 0.9936},
    'ct_efficientnetb0': {'accuracy': 0.9923},
    'hybrid': {'accuracy': 0.9958},
}
TABLE_FILE = 'paper_table.md'

_RUNS_DIR = flags.DEFINE_string('runs_dir', None, 'Folder holding one work directory per '
                                'experiment, as scripts/reproduce_paper.sh writes it.')


def _cell(value: float | None) -> str:
  return '-' if value is None else report.percent(value)


def paper_table(runs_dir: str) -> str:
  """The Markdown table of every experiment: ours (test split) and the paper's, in percent."""
  header = ['Experiment', 'Data', 'Model',
            *(f'{short} ours' for _, short in COLUMNS),
            *(f'{short} paper' for _, short in COLUMNS)]
  lines = ['| ' + ' | '.join(header) + ' |', '|' + '---|' * len(header)]
  missing = []
  for name, table, data, model in EXPERIMENTS:
    path = os.path.join(runs_dir, name, report.REPORT_DIR, report.METRICS_FILE)
    ours = {}
    if os.path.isfile(path):
      with open(path) as f:
        ours = json.load(f)['test']['overall']
    else:
      missing.append(name)
    paper = PAPER_RESULTS.get(name, {})
    cells = [table, data, model, *(_cell(ours.get(key)) for key, _ in COLUMNS),
             *(_cell(paper.get(key)) for key, _ in COLUMNS)]
    lines.append('| ' + ' | '.join(cells) + ' |')
  notes = ['', 'Ours: the checkpoint chosen on the validation split, evaluated once on the '
           'patient-level test split; see each run\'s report/report.md for all metrics '
           'and per-modality rows. Paper: as reported; "-" where this table does not quote it.']
  if missing:
    notes.append(f'Not run yet (no report/metrics.json): {", ".join(missing)}.')
  return '\n'.join(lines + notes) + '\n'


def main(argv: list[str]) -> None:
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {" ".join(argv[1:])}')
  table = paper_table(_RUNS_DIR.value)
  path = os.path.join(_RUNS_DIR.value, TABLE_FILE)
  with open(path, 'w') as f:
    f.write(table)
  print(table)  # The table is this command's output.


if __name__ == '__main__':
  flags.mark_flag_as_required('runs_dir')
  app.run(main)
