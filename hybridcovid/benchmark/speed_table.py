"""benchmark.md: the measured cases as a table, with the peers' rates and our ratio to them."""


def _rate(measurement: dict) -> float | None:
  return measurement.get('images_per_second', {}).get('median')


def format_case(case: dict) -> str:
  """One case in a line: its img/s (min-max), or its error."""
  ours = case['ours']
  if 'error' in ours:
    return f"{case['mode']} batch {case['batch_size']} {case['dtype']}: {ours['error']}"
  rate = ours['images_per_second']
  return (f"{case['mode']} batch {case['batch_size']} {case['dtype']}: "
          f"{rate['median']:.2f} img/s ({rate['min']:.2f}-{rate['max']:.2f})")


def _peer_cell(ours: float | None, peer: dict) -> str:
  if 'skipped' in peer:
    return f"skipped ({peer['skipped']})"
  if 'error' in peer:
    return f"error ({peer['error'][:80]})"
  rate = _rate(peer)
  return f'{rate:.2f} ({ours / rate:.2f}x)' if ours else f'{rate:.2f}'


def markdown(result: dict) -> str:
  """The benchmark as a Markdown table; peers as 'img/s (our ratio to it)'."""
  environment_ = result['environment']
  backend = environment_['backend']
  peers = sorted({peer for case in result['cases'] for peer in case.get('peers', {})})
  lines = [
      f"# Benchmark: {result['model']}, {result['image_size']}x{result['image_size']}",
      '',
      f"{environment_['device_count']} x {environment_['device_kind']} ({backend}), "
      f"{environment_['cpu_count']} cores of {environment_['processor']}, "
      f"JAX {environment_['jax']}, "
      f"{environment_['time']}. Matrix-product ceiling measured in this run: " + ', '.join(
          f'{dtype} {flops / 1e9:.0f} GFLOP/s'
          for dtype, flops in environment_['matmul_flops_per_second'].items()) + '.',
      '',
      'img/s: median of the timed steps (min-max). Peers: their img/s and our ratio to it.',
      '',
  ]
  utilisation = 'MFU' if backend == 'gpu' else 'of matmul ceiling'
  header = ['mode', 'batch', 'dtype', 'img/s', 'compile s', 'peak memory GB',
            'GFLOP/img', 'TFLOP/s', utilisation] + peers
  lines += ['| ' + ' | '.join(header) + ' |', '|' + '---|' * len(header)]
  for case in result['cases']:
    ours = case['ours']
    row = [case['mode'], str(case['batch_size']), case['dtype']]
    if 'error' in ours:
      row += [f"error ({ours['error'][:80]})"] + [''] * 5
      rate = None
    else:
      rate = _rate(ours)
      speed = ours['images_per_second']
      flops = ours['flops_per_image']
      achieved = flops * rate if flops else None
      peak = (environment_['device_peak_flops_per_second'].get(case['dtype'])
              if backend == 'gpu' else
              environment_['matmul_flops_per_second'].get(case['dtype']))
      row += [f"{rate:.2f} ({speed['min']:.2f}-{speed['max']:.2f})",
              f"{ours['compile_seconds']:.1f}",
              f"{ours['peak_memory_bytes'] / 2**30:.2f} ({ours['memory_kind']})",
              f'{flops / 1e9:.2f}' if flops else '-',
              f'{achieved / 1e12:.3f}' if achieved else '-',
              f'{100 * achieved / peak:.1f}%' if achieved and peak else '-']
    row += [_peer_cell(rate, case['peers'][peer]) if peer in case.get('peers', {}) else '-'
            for peer in peers]
    lines.append('| ' + ' | '.join(row) + ' |')
  for peer in peers:
    described = {case['peers'][peer].get('configuration')
                 for case in result['cases'] if peer in case.get('peers', {})} - {None}
    if described:
      lines.append(f"\n{peer}: {'; '.join(sorted(described))}.")
  return '\n'.join(lines) + '\n'
