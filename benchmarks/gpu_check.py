"""One GPU check: the cases that matter most first, each result saved as soon as it is known.

  benchmarks/gpu_check.sh OUT [--dry-run]

Cases, in priority order, each in processes of its own with a time cap:
1. the hybrid's train step at batch 128 in bfloat16, ours and the PyTorch
   peer's (torchvision, channels_last, bfloat16 autocast, torch.compile);
2. the hybrid's inference at batch 128 in bfloat16, ours and the peer's;
3. correctness on this machine: each backbone's features on the default
   backend (conv_impl 'auto') against the CPU backend with both conv_impl
   values, in float32 at full matrix-product precision, with BatchNorm
   statistics taken from the images so that the features depend on them;
   and three hybrid train steps with pmap against shard_map;
4. ResNet50 and EfficientNetB0 alone, train then inference, batches 32 and
   256, float32, ours and the peer's.
Every result goes into OUT/gpu_check.json and OUT/gpu_check.md as it comes,
so a run cut short still leaves its numbers; the whole check stops within
`--budget_seconds`. Each result gives images/s, peak memory and MFU (XLA's
FLOPs per image of our model times images/s over the card's dense peak).
`--dry-run` runs the hybrid's cases and correctness at tiny sizes (32x32, batches of 4,
pmap against shard_map on ResNet50 alone), on whatever backend JAX finds.
Imports no TensorFlow; needs ml_collections (gpu_check.sh brings it).
"""

import argparse
import json
import os
import sys
import time

import flax.linen as nn
import jax
import numpy as np
import optax

REPO_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO_DIR)

# pylint: disable=wrong-import-position
from configs import default
from hybridcovid import models
from hybridcovid.benchmark import step_speed as benchmark
from hybridcovid.training import parallel, train
# pylint: enable=wrong-import-position

BACKBONES = ('resnet50', 'efficientnetb0')  # Alone, and together: the hybrid.
RESULTS_JSON = 'gpu_check.json'
RESULTS_MARKDOWN = 'gpu_check.md'
# Seconds kept back from the budget for writing results and stopping cleanly.
STOP_MARGIN_SECONDS = 15.0
# A case with less time left than this is skipped, not started to time out.
MINIMUM_CASE_SECONDS = 30.0
# The caps and the budget fit a GPU. The dry run checks that every case runs
# to a result, and compiling is what takes its time: on a 2-core CPU it needs
# several times a GPU's caps, more on a slow core.
DRY_RUN_TIME_FACTOR = 4
DEFAULT_BUDGET_SECONDS = 450.0
# The dry run's correctness case compares pmap with shard_map on ResNet50 alone.
DRY_RUN_PARALLEL_BACKBONE = 'resnet50'


def cases(dry_run: bool) -> list[dict]:
  """Every case in priority order, with its time cap in seconds."""
  def batch(size):
    return max(size // 32, 2) if dry_run else size

  listed = [
      {'name': 'hybrid train', 'backbones': BACKBONES, 'mode': 'train', 'batch_size': batch(128),
       'dtype': 'bfloat16', 'cap': 240},
      {'name': 'hybrid inference', 'backbones': BACKBONES, 'mode': 'inference',
       'batch_size': batch(128), 'dtype': 'bfloat16', 'cap': 150},
      {'name': 'correctness', 'cap': 180},
  ]
  if dry_run:  # It checks the script: the single-backbone cases run the hybrid's code.
    return listed
  for mode in ('train', 'inference'):
    for backbone in BACKBONES:
      for size in (32, 256):
        listed.append({'name': f'{backbone} {mode}', 'backbones': (backbone,), 'mode': mode,
                       'batch_size': size, 'dtype': 'float32', 'cap': 120})
  return listed


def benchmark_config(backbones: tuple[str, ...], image_size: int, dry_run: bool):
  config = default.experiment(backbones, ('cxr', 'ct'))
  config.data.image_size = image_size
  config.benchmark.warmup_steps = 1 if dry_run else 3
  config.benchmark.steps = 1 if dry_run else 10
  return config


def relative_error(actual, expected) -> float:
  actual, expected = np.asarray(actual, np.float64), np.asarray(expected, np.float64)
  return float(np.linalg.norm(actual - expected) / np.linalg.norm(expected))


def correctness(image_size: int, batch_size: int, parallel_backbones: tuple[str, ...]) -> None:
  """Features on the default backend against the CPU backend, and pmap against shard_map
  for a classifier over `parallel_backbones`.

  Prints the results so far as a JSON line after each part, so that a part cut
  short by the time cap leaves the ones before it.
  """
  jax.config.update('jax_default_matmul_precision', 'highest')
  cpu = jax.devices('cpu')[0]
  images = np.random.default_rng(0).integers(
      0, 256, (batch_size, image_size, image_size, 3)).astype(np.uint8)
  result = {'backend': jax.default_backend(), 'device_kind': jax.devices()[0].device_kind,
            'features': {}}

  def without_dropout(next_fun, args, kwargs, context):
    # Stochastic depth would drop blocks from the calibrating pass only.
    if isinstance(context.module, nn.Dropout) and context.method_name == '__call__':
      return args[0]
    return next_fun(*args, **kwargs)

  for arch in BACKBONES:
    # Momentum 0: one training pass sets the running statistics to the images' own,
    # so inference normalises every layer as a trained network would.
    calibrating = models.create_backbone(arch, batchnorm_momentum=0.0)
    variables = models.initialize(calibrating, jax.random.key(0), images[:1])
    @jax.jit
    def calibrated_statistics(variables, images):
      with nn.intercept_methods(without_dropout):
        return calibrating.apply(variables, images, train=True, mutable=['batch_stats'])[1]

    updates = calibrated_statistics(variables, images)
    variables = {'params': variables['params'], 'batch_stats': updates['batch_stats']}
    features, default_apply = {}, None
    for name, device, conv_impl in (('default', None, 'auto'), ('cpu', cpu, 'cpu'),
                                    ('cpu_xla', cpu, 'xla')):
      apply = jax.jit(models.create_backbone(arch, conv_impl=conv_impl).apply)
      default_apply = default_apply or apply
      placed = jax.device_put((variables, images), device) if device else (variables, images)
      features[name] = np.asarray(apply(*placed))
    other = np.asarray(default_apply(variables, images[::-1].copy()))
    result['features'][arch] = {
        'default_vs_cpu': relative_error(features['default'], features['cpu']),
        'default_vs_cpu_xla': relative_error(features['default'], features['cpu_xla']),
        # Above 0.1: the features depend on the image, so the comparison means something.
        'input_sensitivity': relative_error(other, features['default'])}
    sys.stdout.write(json.dumps(result) + '\n')
    sys.stdout.flush()

  batch = benchmark.synthetic_batch(batch_size, image_size)
  model = models.HybridClassifier(backbones=parallel_backbones, dropout_rate=0.0,
                                  axis_name=train.BATCH_AXIS)
  init = models.initialize(models.HybridClassifier(backbones=parallel_backbones),
                           jax.random.key(0), batch['image'][:1])
  params = {}
  for mode in parallel.PARALLEL_MODES:
    data_parallel = parallel.DataParallel(mode)
    state = data_parallel.device_state(train.replicate(
        train.create_train_state(model, optax.sgd(0.01), init), data_parallel.mesh))
    step = data_parallel.compile_train_step()
    for _ in range(3):
      state, _ = step(state, data_parallel.device_batch(batch), jax.random.key(1))
    params[mode] = np.concatenate([np.ravel(leaf) for leaf in jax.tree.leaves(
        train.host_variables(data_parallel.logical_state(state)))])
  result['pmap_vs_shard_map_after_3_steps'] = relative_error(params['pmap'],
                                                             params['shard_map'])
  result['pmap_vs_shard_map_backbones'] = list(parallel_backbones)
  sys.stdout.write(json.dumps(result) + '\n')


def _mfu(measurement: dict, flops_per_image: float | None, peak: float | None
         ) -> float | None:
  rate = measurement.get('images_per_second', {}).get('median')
  if not (rate and flops_per_image and peak):
    return None
  return flops_per_image * rate / peak


def _summary_lines(results: dict) -> list[str]:
  environment = results['environment']
  lines = [f"# GPU check{' (dry run)' if results['dry_run'] else ''}", '',
           f"{environment['device_count']} x {environment['device_kind']} "
           f"({environment['backend']}), JAX {environment['jax']}, {environment['time']}, "
           f"{results['image_size']}x{results['image_size']}.", '',
           '| case | batch | dtype | ours img/s | peak GB | MFU | PyTorch img/s | ours/PyTorch |',
           '|---|---|---|---|---|---|---|---|']
  peaks = environment['device_peak_flops_per_second']
  for case in results['cases']:
    if case['name'] == 'correctness':
      continue
    ours = case.get('ours', {'skipped': case.get('skipped', '-')})
    peer = case.get('peers', {}).get('pytorch', {})
    rate = ours.get('images_per_second', {}).get('median')
    peer_rate = peer.get('images_per_second', {}).get('median')
    mfu = _mfu(ours, ours.get('flops_per_image'), peaks.get(case['dtype']))
    lines.append('| ' + ' | '.join([
        case['name'], str(case['batch_size']), case['dtype'],
        f'{rate:.1f}' if rate else ours.get('error', ours.get('skipped', '-'))[:60],
        f"{ours['peak_memory_bytes'] / 2**30:.2f}" if rate else '-',
        f'{100 * mfu:.1f}%' if mfu else '-',
        f'{peer_rate:.1f}' if peer_rate else peer.get('error', peer.get('skipped', '-'))[:60],
        f'{rate / peer_rate:.2f}x' if rate and peer_rate else '-']) + ' |')
  for case in results['cases']:
    if case['name'] == 'correctness':
      outcome = case.get('result', {'skipped': case.get('skipped')})
      lines += ['', '## Correctness', '', '```', json.dumps(outcome, indent=1), '```']
  return lines


def _write(path: str, text: str) -> None:
  """Replaces `path` whole, through a temporary file: never half-written."""
  with open(path + '.tmp', 'w') as f:
    f.write(text)
  os.replace(path + '.tmp', path)


def _save(out: str, results: dict) -> None:
  """The JSON first, so that the numbers are kept whatever happens to the table."""
  _write(os.path.join(out, RESULTS_JSON), json.dumps(results, indent=1))
  _write(os.path.join(out, RESULTS_MARKDOWN), '\n'.join(_summary_lines(results)) + '\n')


def run_check(out: str, dry_run: bool, budget_seconds: float) -> dict:
  """Runs every case in priority order until the budget is spent; returns the results."""
  deadline = time.monotonic() + budget_seconds - STOP_MARGIN_SECONDS
  cap_factor = DRY_RUN_TIME_FACTOR if dry_run else 1
  image_size = 32 if dry_run else 224
  os.makedirs(out, exist_ok=True)
  # Measured in a process of its own: JAX here would hold most of the GPU's memory.
  environment = benchmark.measure_environment((), 120)
  results = {'dry_run': dry_run, 'image_size': image_size, 'environment': environment,
             'cases': []}
  for case in cases(dry_run):
    remaining = deadline - time.monotonic()
    if remaining < MINIMUM_CASE_SECONDS:
      results['cases'].append({**case, 'skipped': 'the time budget was spent'})
      continue
    timeout = min(case['cap'] * cap_factor, remaining)
    started = time.monotonic()
    if case['name'] == 'correctness':
      case['result'] = benchmark.run_process(
          [sys.executable, os.path.abspath(__file__), '--correctness',
           f'--image_size={image_size}',
           # Enough values per channel at the last stage for calibrated statistics.
           f'--batch_size={16 if dry_run else 8}',
           '--parallel_backbones=' + (
               DRY_RUN_PARALLEL_BACKBONE if dry_run else ','.join(BACKBONES))], timeout)
    else:
      config = benchmark_config(case['backbones'], image_size, dry_run)
      # Ours and the peer's share the case's time.
      case.update(benchmark.measure_case(config, case['mode'], case['batch_size'],
                                         case['dtype'], {'pytorch': 'torch_peer.py'},
                                         timeout / 2))
    case['seconds'] = round(time.monotonic() - started, 1)
    results['cases'].append(case)
    _save(out, results)
    sys.stderr.write(f"{case['name']}: {case['seconds']} s\n")
  _save(out, results)
  return results


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument('--out', help='Folder for gpu_check.json and gpu_check.md.')
  parser.add_argument('--dry-run', action='store_true', help='Tiny sizes, for CI.')
  parser.add_argument('--budget_seconds', type=float,
                      help=f'The whole check stops within this many seconds (default '
                           f'{DEFAULT_BUDGET_SECONDS:.0f}, {DRY_RUN_TIME_FACTOR} times that '
                           'for a dry run).')
  parser.add_argument('--correctness', action='store_true',
                      help='Run the correctness case in this process and print its JSON.')
  parser.add_argument('--image_size', type=int, default=224)
  parser.add_argument('--batch_size', type=int, default=8)
  parser.add_argument('--parallel_backbones', default=','.join(BACKBONES),
                      help='The classifier whose pmap and shard_map steps are compared.')
  arguments = parser.parse_args()
  if arguments.correctness:
    correctness(arguments.image_size, arguments.batch_size,
                tuple(arguments.parallel_backbones.split(',')))
    return
  if not arguments.out:
    parser.error('--out is required')
  budget = arguments.budget_seconds or DEFAULT_BUDGET_SECONDS * (
      DRY_RUN_TIME_FACTOR if arguments.dry_run else 1)
  run_check(arguments.out, arguments.dry_run, budget)


if __name__ == '__main__':
  main()
