"""`--mode=benchmark`: train-step and inference throughput of the configured model.

Every case (mode, batch size, dtype) runs in a fresh process, so that its
compile time and peak memory are its own. 'train' and 'inference' time the
steps alone, on synthetic inputs placed on the devices before timing, and
import no TensorFlow; 'train_pipeline' trains from the real input pipeline
(the built-in synthetic data set, decoded, balanced and augmented by
tf.data, prefetched to the devices) as the main job does, so that its rate
beside 'train' shows whether the devices wait for the host. With
`benchmark.peers`, the same cases run in the peers of `benchmarks/peers/`
(Keras on TensorFlow, PyTorch), each in a process of its own, and the report
gives our throughput as a ratio to each peer's, measured in the same run.
"""

import itertools
import json
import os
import platform
import signal
import subprocess
import sys
import tempfile
import time
from typing import Any, Iterator

from absl import logging
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from hybridcovid import classes, errors, models
from hybridcovid.benchmark import speed_table, timing
from hybridcovid.training import optimizers, parallel, train

MODES = ('train', 'inference', 'train_pipeline')
PEER_MODES = ('train', 'inference')  # The peers time their steps alone.
REPO_DIR = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
PEERS_DIR = os.path.join(REPO_DIR, 'benchmarks', 'peers')
PEERS = {'keras': 'keras_peer.py', 'pytorch': 'torch_peer.py'}

# Dense matrix-product peaks (FLOP/s) by device kind: bfloat16 tensor cores,
# and TF32 for float32 (XLA's default GPU precision). Longer names first.
GPU_PEAK_FLOPS = (
    ('H100 PCIe', {'bfloat16': 756e12, 'float32': 378e12}),
    ('H100', {'bfloat16': 989e12, 'float32': 494e12}),
    ('H200', {'bfloat16': 989e12, 'float32': 494e12}),
    ('A100', {'bfloat16': 312e12, 'float32': 156e12}),
)


def model_name(backbones: Any) -> str:
  return '+'.join(backbones)


def synthetic_batch(batch_size: int, image_size: int) -> dict[str, np.ndarray]:
  """A training batch of random images and labels."""
  rng = np.random.default_rng(0)
  return {'image': rng.integers(0, 256, (batch_size, image_size, image_size, 3), np.uint8),
          'label': rng.integers(0, 2, batch_size).astype(np.int32),
          'weight': np.ones(batch_size, np.float32),
          'mask': np.ones(batch_size, bool)}


def pipeline_batches(config: ml_collections.ConfigDict, batch_size: int, workdir: str
                     ) -> Iterator[dict[str, np.ndarray]]:
  """Training batches of the built-in synthetic data at `config.data.image_size`, epoch
  after epoch, from the main job's input pipeline (imports TensorFlow)."""
  from hybridcovid.data import input_pipeline, loading  # pylint: disable=import-outside-toplevel
  data_config = ml_collections.ConfigDict(config.data.to_dict())
  data_config.synthetic = True
  data_config.tfds_dir = os.path.join(workdir, 'tfds')
  data = loading.load(data_config, workdir, config.seed)
  stream = input_pipeline.InputPipeline(data, data_config, batch_size,
                                        jax.local_device_count(), seed=config.seed)
  for epoch in itertools.count():
    yield from stream.train_epoch(epoch)


def _peak_memory() -> tuple[int, str]:
  stats = [device.memory_stats() or {} for device in jax.local_devices()]
  if all('peak_bytes_in_use' in s for s in stats):
    return max(s['peak_bytes_in_use'] for s in stats), 'device'
  return timing.peak_rss_bytes(), 'process'


def measure(config: ml_collections.ConfigDict, mode: str, batch_size: int, dtype: str) -> dict:
  """Times `mode` (one of MODES) of the configured model in this process, laid out over
  the devices as `config.parallel` says.

  Returns images/s (median, min, max over `benchmark.steps` steps after
  `benchmark.warmup_steps`), compile seconds, peak memory and XLA's FLOPs per image.
  """
  config = ml_collections.ConfigDict(config.to_dict())
  config.model.dtype = dtype
  data_parallel = parallel.DataParallel(config.parallel)
  if batch_size % data_parallel.device_count:
    raise errors.UserError(f'Batch size {batch_size} does not split over '
                           f'{data_parallel.device_count} devices; change '
                           '--config.benchmark.batch_sizes.')
  model = models.create_classifier(config.model, len(classes.of_config(config.data)),
                                   axis_name=train.BATCH_AXIS)
  optimizer = optimizers.create_optimizer(config.train, steps_per_epoch=1)
  state = data_parallel.device_state(train.replicate(
      train.create_train_state(model, optimizer, train.initial_variables(config)),
      data_parallel.mesh))
  batch = data_parallel.device_batch(synthetic_batch(batch_size, config.data.image_size))
  rng = jax.random.key(0)
  if mode == 'inference':
    state = train.inference_state(state)
    arguments = (state, {'image': batch['image']})
    step_function = data_parallel.compile_eval_step()
  else:
    arguments = (state, batch, rng)
    step_function = data_parallel.compile_train_step()
  start = time.perf_counter()
  compiled = step_function.lower(*arguments).compile()
  compile_seconds = time.perf_counter() - start
  cost = compiled.cost_analysis()
  cost = cost[0] if isinstance(cost, list) else cost
  settings = config.benchmark
  if mode == 'train_pipeline':
    with tempfile.TemporaryDirectory() as workdir:
      batches = parallel.prefetch_to_devices(
          pipeline_batches(config, batch_size, workdir), data_parallel, train.BATCH_FIELDS)
      seconds = _time_pipelined_steps(compiled, state, batches, rng, settings.warmup_steps,
                                      settings.steps)
  else:
    def step():
      nonlocal state
      if mode == 'train':  # The step donates the state: carry it on.
        state, outputs = compiled(state, batch, rng)
      else:
        outputs = compiled(state, {'image': batch['image']})
      jax.block_until_ready(outputs)

    seconds = timing.time_steps(step, settings.warmup_steps, settings.steps)
  memory, memory_kind = _peak_memory()
  # The compiled program is one device's share of the batch.
  flops = float(cost.get('flops', 0.0)) * data_parallel.device_count / batch_size
  return {'images_per_second': timing.throughput(seconds, batch_size),
          'compile_seconds': compile_seconds,
          'peak_memory_bytes': memory, 'memory_kind': memory_kind,
          'flops_per_image': flops or None}


def _time_pipelined_steps(compiled, state, batches, rng, warmup: int, steps: int
                          ) -> list[float]:
  """Seconds between the ends of consecutive train steps fed from `batches`, dispatched
  as the main job does: each step queued before the previous one is waited for."""
  ends, previous = [], None
  for index, (_, batch) in enumerate(batches):
    state, metrics = compiled(state, batch, rng)
    if previous is not None:
      jax.block_until_ready(previous)
      ends.append(time.perf_counter())
    previous = metrics
    if index == warmup + steps:
      break
  jax.block_until_ready(previous)
  ends.append(time.perf_counter())
  return list(np.diff(ends[warmup:]))


def measure_case(config: ml_collections.ConfigDict, mode: str, batch_size: int, dtype: str,
                 peers: dict[str, str], timeout: float) -> dict:
  """One case, ours and each of `peers` ({name: script in PEERS_DIR}), each measured in a
  process of its own that may run `timeout` seconds."""
  case = {'mode': mode, 'batch_size': batch_size, 'dtype': dtype}
  request = json.dumps({'config': config.to_json(), **case})
  case['ours'] = run_process(
      [sys.executable, '-m', 'hybridcovid.benchmark.step_speed', request], timeout)
  if peers and mode in PEER_MODES:
    settings = config.benchmark
    case['peers'] = {
        peer: run_process(
            [sys.executable, os.path.join(PEERS_DIR, script),
             f'--backbones={",".join(config.model.backbones)}', f'--mode={mode}',
             f'--batch_size={batch_size}', f'--dtype={dtype}',
             f'--image_size={config.data.image_size}',
             f'--hidden_units={config.model.hidden_units}',
             f'--learning_rate={config.train.learning_rate}',
             f'--warmup_steps={settings.warmup_steps}', f'--steps={settings.steps}'],
            timeout)
        for peer, script in peers.items()}
  return case


def run_process(command: list[str], timeout: float) -> dict:
  """Runs one measuring process; its result is the last line of its stdout.

  On timeout the process and everything it started (compiler workers) are killed, and
  the last line it printed, if any, is kept beside the error.
  """
  environment = {**os.environ, 'PYTHONPATH': os.pathsep.join(
      filter(None, [REPO_DIR, os.environ.get('PYTHONPATH')]))}
  process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             text=True, cwd=REPO_DIR, env=environment,
                             start_new_session=True)
  try:
    stdout, stderr = process.communicate(timeout=max(timeout, 1))
  except subprocess.TimeoutExpired:
    os.killpg(process.pid, signal.SIGKILL)
    stdout, _ = process.communicate()
    lines = stdout.strip().splitlines()
    # A process that reports as it goes keeps what it had reported.
    partial = json.loads(lines[-1]) if lines else {}
    return {**partial, 'error': f'timed out after {timeout:.0f} s'}
  lines = stdout.strip().splitlines()
  if process.returncode or not lines:
    tail = ' | '.join(stderr.strip().splitlines()[-3:])
    return {'error': f'exit status {process.returncode}: {tail}'}
  return json.loads(lines[-1])


def _matmul_ceiling(dtype: str) -> float:
  """FLOP/s of a large matrix product on the first device: the practical ceiling."""
  n = 4096 if jax.default_backend() == 'cpu' else 16384
  a = jax.device_put(jnp.ones((n, n), dtype), jax.devices()[0])
  product = jax.jit(jnp.dot)
  product(a, a).block_until_ready()
  seconds = timing.time_steps(lambda: product(a, a).block_until_ready(), 1, 5)
  return 2 * n ** 3 / sorted(seconds)[len(seconds) // 2]


def device_peak(dtype: str) -> float | None:
  kind = jax.devices()[0].device_kind
  for name, peaks in GPU_PEAK_FLOPS:
    if name in kind:
      return peaks.get(dtype)
  return None


def environment() -> dict:
  """What the numbers were measured on."""
  device = jax.devices()[0]
  return {'backend': jax.default_backend(), 'device_kind': device.device_kind,
          'device_count': jax.device_count(), 'cpu_count': os.cpu_count(),
          'processor': timing.cpu_model(),
          'python': platform.python_version(), 'jax': jax.__version__,
          'time': time.strftime('%Y-%m-%d %H:%M:%S %Z')}


def run(config: ml_collections.ConfigDict, workdir: str) -> dict:
  """Measures every case of `config.benchmark`, and its peers if asked.

  Writes `workdir/benchmark.json` and `workdir/benchmark.md`; returns the JSON's content.
  """
  settings = config.benchmark
  for mode in settings.modes:
    if mode not in MODES:
      raise errors.UserError(f'Unknown benchmark mode {mode!r} in --config.benchmark.modes; '
                             f'choose from {MODES}.')
  name = model_name(config.model.backbones)
  result = {'model': name, 'image_size': config.data.image_size,
            'environment': measure_environment(settings.dtypes, settings.timeout_seconds),
            'cases': []}
  for mode in settings.modes:
    for batch_size in settings.batch_sizes:
      for dtype in settings.dtypes:
        logging.info('Benchmarking %s: %s batch %d %s.', name, mode, batch_size, dtype)
        case = measure_case(config, mode, batch_size, dtype, PEERS if settings.peers else {},
                            settings.timeout_seconds)
        logging.info('%s', speed_table.format_case(case))
        result['cases'].append(case)
  os.makedirs(workdir, exist_ok=True)
  with open(os.path.join(workdir, 'benchmark.json'), 'w') as f:
    json.dump(result, f, indent=2)
  with open(os.path.join(workdir, 'benchmark.md'), 'w') as f:
    f.write(speed_table.markdown(result))
  logging.info('Wrote %s and benchmark.md.', os.path.join(workdir, 'benchmark.json'))
  return result


def measure_environment(ceiling_dtypes: tuple[str, ...], timeout: float) -> dict:
  """`environment()` with the matrix-product ceiling of each of `ceiling_dtypes` and the
  device's peak FLOP/s, measured in a process of its own: a parent that used the GPU
  would hold most of its memory (JAX preallocates) while the cases run."""
  measured = run_process([sys.executable, '-m', 'hybridcovid.benchmark.step_speed',
                          json.dumps({'environment': list(ceiling_dtypes)})], timeout)
  if 'error' in measured:
    raise errors.UserError(f'The benchmark could not start JAX on this machine: '
                           f'{measured["error"]}')
  return measured


def main() -> None:
  """Measures one case (or the environment), given as JSON in argv[1]; prints JSON."""
  request = json.loads(sys.argv[1])
  if 'environment' in request:
    dtypes = request['environment']
    timing.print_result({
        **environment(),
        'matmul_flops_per_second': {dtype: _matmul_ceiling(dtype) for dtype in dtypes},
        'device_peak_flops_per_second': {dtype: device_peak(dtype)
                                         for dtype in ('float32', 'bfloat16')}})
    return
  config = ml_collections.ConfigDict(json.loads(request['config']))
  timing.print_result(measure(config, request['mode'], request['batch_size'],
                              request['dtype']))


if __name__ == '__main__':
  main()
