"""This project's runs of the paper's experiments beside the paper's reported numbers.

`python -m hybridcovid.report.paper --runs_dir=DIR` reads, for each experiment of
`scripts/reproduce_paper.sh`, `report/metrics.json` and `audit.json` of its run
`DIR/<experiment>/`, or of each of its repeated runs `DIR/<experiment>/seed-<N>/`,
and writes `DIR/paper_table.md`: every cell of the paper's Tables 2-4 (Az, Sp,
Re, F-M) beside our test results with their confidence intervals, or, for
repeated runs, their mean and standard deviation across seeds, whether the
paper's number lies within mean +- 2 sd, and each run with its intervals; then
the paper's Table 1 (images per class) beside the images each run loaded.
"""

import json
import os
import re

import numpy as np

from absl import app
from absl import flags

from hybridcovid import classes
from hybridcovid.data import loading
from hybridcovid.report import formatting, writer

# (config name, modalities, model), in the paper's order.
EXPERIMENTS = (
    ('cxr_resnet50', ('cxr',), 'ResNet50'),
    ('cxr_efficientnetb0', ('cxr',), 'EfficientNetB0'),
    ('ct_resnet50', ('ct',), 'ResNet50'),
    ('ct_efficientnetb0', ('ct',), 'EfficientNetB0'),
    ('pooled_resnet50', ('cxr', 'ct'), 'ResNet50'),
    ('pooled_efficientnetb0', ('cxr', 'ct'), 'EfficientNetB0'),
    ('hybrid', ('cxr', 'ct'), 'ResNet50 + EfficientNetB0'),
)
COLUMNS = (('accuracy', 'Az'), ('specificity', 'Sp'), ('recall', 'Re'), ('f1', 'F-M'))
# Every cell of the paper's Tables 2-4, in percent exactly as printed (with the
# paper's own precision: 99.0, 100), under the experiment that reproduces its
# row: experiment -> (table, row, (Az, Sp, Re, F-M)). Table 4 ("hybrid", CXR
# and CT together) has one row per backbone, so its rows go to the pooled
# single-backbone runs; the Figure 1 model (`hybrid`) has no row of its own.
PAPER_RESULTS = {
    'cxr_resnet50': ('Table 2', 'ResNet50', ('98.47', '99.0', '100', '99.0')),
    'cxr_efficientnetb0': ('Table 2', 'EfficientNet(B0)', ('99.36', '98.0', '99.0', '99.0')),
    'ct_resnet50': ('Table 3', 'ResNet50', ('98.85', '99.0', '98.0', '99.0')),
    'ct_efficientnetb0': ('Table 3', 'EfficientNet(B0)', ('99.23', '99.0', '99.0', '99.0')),
    'pooled_resnet50': ('Table 4', 'ResNet50', ('98.01', '99.0', '99.0', '99.0')),
    'pooled_efficientnetb0': ('Table 4', 'EfficientNet(B0)', ('99.58', '99.0', '99.0', '99.0')),
}
# The paper's Table 1: images per class in its two Kaggle data sets, keyed as
# audit.json's `class_balance` is.
PAPER_DATA = {'cxr': {'covid': 3923, 'normal': 3960}, 'ct': {'covid': 1323, 'normal': 1290}}
DATA_COLUMNS = tuple((modality, label) for modality in PAPER_DATA for label in ('covid', 'normal'))
CLASS_TITLES = dict(zip(classes.BINARY, classes.TITLES))
TABLE_FILE = 'paper_table.md'
SEED_PREFIX = 'seed-'
# The paper's number lies inside our spread when within this many standard
# deviations (across seeds) of our mean.
SPREAD_SDS = 2
HYBRID_NOTE = ('The paper gives the Figure 1 model (ResNet50 and EfficientNetB0 feature maps '
               'concatenated) no number of its own. Its Table 4 ("hybrid": chest X-ray and CT '
               'together) has one row per backbone, read here as that backbone trained on both '
               f'modalities pooled; the {PAPER_RESULTS["pooled_efficientnetb0"][2][0]}% its '
               'conclusion quotes for the hybrid approach is that table\'s EfficientNet(B0) row, '
               'shown beside pooled_efficientnetb0.')

_RUNS_DIR = flags.DEFINE_string('runs_dir', None, 'Folder holding one work directory per '
                                'experiment, as scripts/reproduce_paper.sh writes it.')


def _row(cells) -> str:
  return '| ' + ' | '.join(cells) + ' |'


def _header(names) -> list[str]:
  return [_row(names), '|' + '---|' * len(names)]


def _read_json(path: str) -> dict | None:
  if not os.path.isfile(path):
    return None
  with open(path) as f:
    return json.load(f)


def _ours(values: dict, name: str) -> str:
  """Our metric in percent, with its confidence interval (low-high) where there is one."""
  if name not in values:
    return '-'
  value = values[name]
  low, high = values.get('intervals', {}).get(name, (None, None))
  if formatting.undefined(value) or formatting.undefined(low) or formatting.undefined(high):
    return formatting.percent(value)
  return f'{formatting.percent(value)} ({formatting.percent(low)}-{formatting.percent(high)})'


def run_dirs(runs_dir: str, name: str) -> dict[str, str]:
  """{label: folder} of the runs of experiment `name`: its folder itself, and each
  `seed-<N>` folder in it, in order of N."""
  folder = os.path.join(runs_dir, name)
  found = {name: folder}
  if os.path.isdir(folder):
    seeds = [entry for entry in os.listdir(folder)
             if re.fullmatch(f'{SEED_PREFIX}[0-9]+', entry)]
    for entry in sorted(seeds, key=lambda entry: int(entry[len(SEED_PREFIX):])):
      found[entry] = os.path.join(folder, entry)
  return found


def _results(runs_dir: str, name: str) -> dict[str, dict]:
  """{label: metrics.json} of the finished runs of experiment `name`."""
  results = {label: _read_json(os.path.join(folder, writer.REPORT_DIR, writer.METRICS_FILE))
             for label, folder in run_dirs(runs_dir, name).items()}
  return {label: result for label, result in results.items() if result is not None}


def _defined(values) -> np.ndarray:
  return np.array([value for value in values if not formatting.undefined(value)], np.float64)


def _spread(values) -> str:
  """'mean ± sd' in percent of the defined `values` (one run each)."""
  defined = _defined(values)
  if len(defined) < 2:
    return formatting.percent(defined[0]) if len(defined) else formatting.percent(None)
  return (f'{formatting.percent(np.mean(defined))} ± '
          f'{formatting.percent(np.std(defined, ddof=1))}')


def _inside_spread(values, paper: str) -> bool | None:
  """Whether the paper's number (a printed percentage) lies within SPREAD_SDS standard
  deviations of the mean of `values`; None with fewer than two defined values."""
  defined = _defined(values)
  if len(defined) < 2:
    return None
  return bool(abs(float(paper) / 100 - np.mean(defined))
              <= SPREAD_SDS * np.std(defined, ddof=1) + 1e-12)


def _verdict(results: dict[str, dict], paper) -> str:
  """Which of the paper's cells lie inside the spread of our repeated runs."""
  if paper[0] == '-':
    return '-'
  inside, outside = [], []
  for (key, short), printed in zip(COLUMNS, paper):
    found = _inside_spread([result['test']['overall'].get(key) for result in results.values()],
                           printed)
    if found is not None:
      (inside if found else outside).append(short)
  if not inside and not outside:
    return '-'
  return '; '.join(part for part in (f'inside: {", ".join(inside)}' if inside else '',
                                     f'outside: {", ".join(outside)}' if outside else '')
                   if part)


def _modalities_name(modalities) -> str:
  return '+'.join(modality.upper() for modality in modalities)


def _interval_note(settings: dict[str, dict]) -> str:
  """What the brackets hold, once if every run agrees, else per run."""
  def describe(s):
    return f"{100 * s['level']:g}%, {s['resamples']} resamples of {s['unit']}s"
  described = {name: describe(s) for name, s in settings.items()}
  if not described:
    return ''
  if len(set(described.values())) == 1:
    return f' In brackets: bootstrap confidence intervals ({next(iter(described.values()))}).'
  listed = '; '.join(f'{name} {text}' for name, text in described.items())
  return f' In brackets: bootstrap confidence intervals ({listed}).'


def results_table(runs_dir: str) -> list[str]:
  """The paper's Tables 2-4 beside our test results, one row per experiment; with
  repeated runs, their mean and sd, whether the paper lies inside that spread, and
  each run with its intervals."""
  all_results = {name: _results(runs_dir, name) for name, _, _ in EXPERIMENTS}
  repeated = any(len(results) > 1 for results in all_results.values())
  lines = _header(['Experiment', 'Data', 'Model', 'Paper row',
                   *(f'{short} ours' for _, short in COLUMNS),
                   *(f'{short} paper' for _, short in COLUMNS),
                   *([f'Paper within mean ± {SPREAD_SDS} sd'] if repeated else [])])
  missing, settings, runs = [], {}, []
  for name, modalities, model in EXPERIMENTS:
    results = all_results[name]
    if not results:
      missing.append(name)
    for label, result in results.items():
      if 'intervals' in result:
        settings[label] = result['intervals']
      runs.append(_row([name, label, *(_ours(result['test']['overall'], key)
                                       for key, _ in COLUMNS)]))
    if name in PAPER_RESULTS:
      table, paper_row, paper = PAPER_RESULTS[name]
      source = f'{table} {paper_row}'
    else:
      source, paper = 'none: the paper gives this model no number of its own', ('-',) * 4
    if len(results) > 1:
      ours = [_spread([result['test']['overall'].get(key) for result in results.values()])
              for key, _ in COLUMNS]
    else:
      overall = next(iter(results.values()))['test']['overall'] if results else {}
      ours = [_ours(overall, key) for key, _ in COLUMNS]
    lines.append(_row([name, _modalities_name(modalities), model, source, *ours, *paper,
                       *([_verdict(results, paper) if len(results) > 1 else '-']
                         if repeated else [])]))
  ours_note = ('the checkpoint chosen on the validation split, evaluated once on the '
               'patient-level test split (the paper split per image)')
  if repeated:
    ours_note = (f'mean ± standard deviation over the runs of an experiment with '
                 f'different seeds (each seed draws its own split and initialisation), each '
                 f'run {ours_note}; a single run shows its value with its interval. "Paper '
                 f'within" names the paper\'s cells that lie within {SPREAD_SDS} standard '
                 'deviations of our mean')
  lines += ['', f'Percentages. Ours: {ours_note}; see each run\'s report/report.md for every '
            'metric and the per-modality rows.' + _interval_note(settings)
            + ' Paper: as printed in its Tables 2-4.', '', HYBRID_NOTE]
  if missing:
    lines += ['', f'Not run yet (no report/metrics.json): {", ".join(missing)}.']
  if repeated:
    lines += ['', '### Each run', '', *_header(['Experiment', 'Run',
                                                 *(short for _, short in COLUMNS)]), *runs]
  return lines


def _loaded_counts(audit: dict) -> dict[str, dict[str, int]]:
  """Images per modality and class over all splits, as the run trained and evaluated."""
  counts = {}
  for by_modality in audit['class_balance'].values():
    for modality, labels in by_modality.items():
      for label, count in labels.items():
        counts.setdefault(modality, {}).setdefault(label, 0)
        counts[modality][label] += count
  return counts


def _against_paper(counts: dict, modalities, audit: dict) -> str:
  """'same', or each class that differs from Table 1, with what the run left out."""
  differences = []
  for modality in modalities:
    for label, paper in PAPER_DATA[modality].items():
      ours = counts.get(modality, {}).get(label, 0)
      if ours != paper:
        differences.append(f'{modality.upper()} {CLASS_TITLES[label]} {ours - paper:+,}')
  left_out = []
  if audit.get('dropped_duplicates'):
    left_out.append(f'{len(audit["dropped_duplicates"]):,} duplicate copies')
  if audit.get('bad_files'):
    left_out.append(f'{len(audit["bad_files"]):,} unreadable files')
  text = f'differs: {", ".join(differences)}' if differences else 'same'
  return text + (f' ({" and ".join(left_out)} left out)' if left_out else '')


def data_table(runs_dir: str) -> list[str]:
  """The paper's Table 1 beside the images each run loaded."""
  lines = _header(['Data', *(f'{modality.upper()} {CLASS_TITLES[label]}'
                             for modality, label in DATA_COLUMNS), 'Against Table 1'])
  lines.append(_row(['Paper (Table 1)',
                     *(f'{PAPER_DATA[modality][label]:,}' for modality, label in DATA_COLUMNS),
                     '']))
  for name, modalities, _ in EXPERIMENTS:
    # Repeated runs load the same images; the first run's audit speaks for them.
    audit = next(filter(None, (_read_json(os.path.join(folder, loading.AUDIT_FILE))
                               for folder in run_dirs(runs_dir, name).values())), None)
    if audit is None:
      lines.append(_row([name, *('-' * len(DATA_COLUMNS)), f'no {loading.AUDIT_FILE}']))
      continue
    counts = _loaded_counts(audit)
    cells = [f'{counts.get(modality, {}).get(label, 0):,}' if modality in modalities else '-'
             for modality, label in DATA_COLUMNS]
    lines.append(_row([name, *cells, _against_paper(counts, modalities, audit)]))
  lines += ['', f'Images per class. Ours: all splits of the run as trained and evaluated, '
            f'from its {loading.AUDIT_FILE}: without unreadable files, and an image found in more '
            'than one split kept in the first only. "-": a modality the run does not use.']
  return lines


def paper_table(runs_dir: str) -> str:
  """The Markdown of every experiment beside the paper's Tables 2-4, then its Table 1."""
  lines = ['## Results (the paper\'s Tables 2-4)', '', *results_table(runs_dir),
           '', '## Data (the paper\'s Table 1)', '', *data_table(runs_dir)]
  return '\n'.join(lines) + '\n'


def main(argv: list[str]) -> None:
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {" ".join(argv[1:])}')
  if not os.path.isdir(_RUNS_DIR.value):
    raise app.UsageError(f'--runs_dir={_RUNS_DIR.value}: no such folder. Point it at the '
                         'folder given to scripts/reproduce_paper.sh.')
  table = paper_table(_RUNS_DIR.value)
  path = os.path.join(_RUNS_DIR.value, TABLE_FILE)
  with open(path, 'w') as f:
    f.write(table)
  print(table)  # The table is this command's output.


if __name__ == '__main__':
  flags.mark_flag_as_required('runs_dir')
  app.run(main)
