from hybridcovid.benchmark import speed_table


def test_markdown_gives_our_ratio_to_each_peer():
  case = {'mode': 'train', 'batch_size': 32, 'dtype': 'float32',
          'ours': {'images_per_second': {'median': 6.0, 'min': 5.0, 'max': 7.0},
                   'compile_seconds': 30.0, 'peak_memory_bytes': 3 * 2**30,
                   'memory_kind': 'process', 'flops_per_image': 12e9},
          'peers': {'keras': {'images_per_second': {'median': 2.0, 'min': 2, 'max': 2},
                              'configuration': 'Keras graph'},
                    'pytorch': {'skipped': 'torch not installed'}}}
  result = {'model': 'resnet50', 'image_size': 224, 'cases': [case],
            'environment': {'backend': 'cpu', 'device_kind': 'cpu', 'device_count': 1,
                            'cpu_count': 2, 'processor': 'Intel(R) Xeon(R) Processor',
                            'jax': '0.10.2', 'time': 'now',
                            'matmul_flops_per_second': {'float32': 144e9},
                            'device_peak_flops_per_second': {'float32': None}}}
  table = speed_table.markdown(result)
  assert table.splitlines()[2].startswith('1 x cpu (cpu), 2 cores of Intel(R) Xeon(R) Processor,')
  row = table.splitlines()[-3]
  assert row == ('| train | 32 | float32 | 6.00 (5.00-7.00) | 30.0 | 3.00 (process) | 12.00 '
                 '| 0.072 | 50.0% | 2.00 (3.00x) | skipped (torch not installed) |')
  assert table.splitlines()[-1] == 'keras: Keras graph.'
