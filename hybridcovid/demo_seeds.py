"""The demo over several seeds: each run's test accuracy and wall time, and the machine.

`scripts/demo_seeds.sh` trains the demo once per seed, each in RUNS_DIR/seed<N>
with the run's wall time in seconds in RUNS_DIR/seed<N>/wall_seconds, and calls

  python -m hybridcovid.demo_seeds --runs_dir=RUNS_DIR --seeds=N        # one line
  python -m hybridcovid.demo_seeds --runs_dir=RUNS_DIR --seeds=0,1,2,3,4 --out=OUT

The second writes OUT.md and OUT.json: a row per seed and whether every seed
reached the accuracy target within the time limit.
"""

import json
import os
import platform

from absl import app
from absl import flags

from hybridcovid.benchmark import timing
from hybridcovid.report import formatting, writer

TARGET_ACCURACY = 0.90
TIME_LIMIT_SECONDS = 300.0
WALL_SECONDS_FILE = 'wall_seconds'


def seed_result(runs_dir: str, seed: int) -> dict:
  """Test accuracy (with its interval), AUC, selected epoch and wall time of one seed's run."""
  workdir = os.path.join(runs_dir, f'seed{seed}')
  with open(os.path.join(workdir, writer.REPORT_DIR, writer.METRICS_FILE)) as f:
    metrics = json.load(f)
  with open(os.path.join(workdir, WALL_SECONDS_FILE)) as f:
    seconds = float(f.read())
  overall = metrics['test']['overall']
  return {'seed': seed, 'accuracy': overall['accuracy'],
          'accuracy_interval': overall['intervals']['accuracy'], 'auc': overall['auc'],
          'test_images': sum(overall['counts'].values()),
          'selected_epoch': metrics['selected_epoch'], 'epochs': len(metrics['history']),
          'wall_seconds': seconds,
          'reached': overall['accuracy'] >= TARGET_ACCURACY and seconds <= TIME_LIMIT_SECONDS}


def _minutes(seconds: float) -> str:
  return f'{int(seconds // 60)} min {seconds % 60:04.1f} s'


def seed_line(result: dict) -> str:
  """'seed 0: test accuracy 91.61% (CI 87.37-95.73%), AUC 96.83%, 4 min 58.2 s'."""
  low, high = result['accuracy_interval']
  percent = formatting.percent
  return (f"seed {result['seed']}: test accuracy {percent(result['accuracy'])}% (CI "
          f"{percent(low)}-{percent(high)}%), AUC {percent(result['auc'])}%, "
          f"{_minutes(result['wall_seconds'])}")


def summary(results: list[dict], config_flags: str) -> dict:
  """Every seed's result, their range and the machine they ran on."""
  accuracies = [result['accuracy'] for result in results]
  times = [result['wall_seconds'] for result in results]
  return {'command': ('scripts/demo_seeds.sh RUNS_DIR OUT'
                      + (f" (FLAGS='{config_flags}')" if config_flags else '')),
          'cpu': timing.cpu_model(), 'cores': len(os.sched_getaffinity(0)),
          'python': platform.python_version(),
          'target': {'accuracy': TARGET_ACCURACY, 'wall_seconds': TIME_LIMIT_SECONDS},
          'accuracy_range': [min(accuracies), max(accuracies)],
          'wall_seconds_range': [min(times), max(times)],
          'all_reached': all(result['reached'] for result in results),
          'seeds': results}


def markdown(summary_: dict) -> str:
  """The summary as a Markdown table with the machine and the target."""
  target = summary_['target']
  lines = [
      f"# The demo over {len(summary_['seeds'])} seeds",
      '',
      f"`{summary_['command']}` on {summary_['cpu']} ({summary_['cores']} cores), each run "
      'with an empty compilation cache. The target: at least '
      f"{formatting.percent(target['accuracy'])}% test accuracy within "
      f"{_minutes(target['wall_seconds'])}.",
      '',
      '| Seed | Test accuracy (95% CI) | AUC | Test images | Selected epoch | Wall time | Target |',
      '|---|---|---|---|---|---|---|']
  for result in summary_['seeds']:
    low, high = result['accuracy_interval']
    lines.append(
        f"| {result['seed']} | {formatting.percent(result['accuracy'])} ({formatting.percent(low)}-"
        f"{formatting.percent(high)}) | {formatting.percent(result['auc'])} | "
        f"{result['test_images']} | {result['selected_epoch']} of {result['epochs']} | "
        f"{_minutes(result['wall_seconds'])} | {'met' if result['reached'] else 'missed'} |")
  low, high = summary_['accuracy_range']
  fastest, slowest = summary_['wall_seconds_range']
  lines += ['', f'Test accuracy {formatting.percent(low)}-{formatting.percent(high)}%, wall time '
            f'{_minutes(fastest)} to {_minutes(slowest)}; the target was '
            f"{'met by every seed' if summary_['all_reached'] else 'missed by at least one seed'}."
            ' Floating-point results differ between CPUs, so other machines give other '
            'numbers.']
  return '\n'.join(lines) + '\n'


def main(argv: list[str]) -> None:
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {" ".join(argv[1:])}')
  values = flags.FLAGS
  results = [seed_result(values.runs_dir, int(seed)) for seed in values.seeds]
  if not values.out:
    for result in results:
      print(seed_line(result))  # This command's output.
    return
  result = summary(results, values.config_flags)
  with open(values.out + '.json', 'w') as f:
    json.dump(result, f, indent=1)
  text = markdown(result)
  with open(values.out + '.md', 'w') as f:
    f.write(text)
  print(text)


if __name__ == '__main__':
  # Defined here, not on import: other modules' commands define --runs_dir and --out too.
  flags.DEFINE_string('runs_dir', None, 'The folder of the seed<N> runs.')
  flags.DEFINE_list('seeds', ['0', '1', '2', '3', '4'], 'The seeds to read.')
  flags.DEFINE_string('out', '', 'Write OUT.md and OUT.json with every seed.')
  flags.DEFINE_string('config_flags', '', 'The config flags the runs were given, for the record.')
  flags.mark_flag_as_required('runs_dir')
  app.run(main)
