import numpy as np

from hybridcovid.benchmark import timing


def test_time_steps_runs_the_warmup_untimed_and_times_each_step():
  calls = []
  seconds = timing.time_steps(lambda: calls.append(1), warmup=2, steps=3)
  assert len(calls) == 5 and len(seconds) == 3
  assert all(0 <= s < 1 for s in seconds)


def test_throughput_is_images_per_second_of_each_step():
  rates = timing.throughput([1.0, 2.0, 4.0], batch_size=8)
  assert rates == {'median': 4.0, 'min': 2.0, 'max': 8.0}


def test_peak_rss_counts_a_large_allocation():
  before = timing.peak_rss_bytes()
  block = np.ones(400 * 2**20 // 8)  # 400 MiB, touched.
  assert timing.peak_rss_bytes() >= max(before, block.nbytes)


def test_cpu_model_reads_the_model_name(monkeypatch, tmp_path):
  cpuinfo = tmp_path / 'cpuinfo'
  cpuinfo.write_text('processor\t: 0\nmodel name\t: AMD EPYC 7B13\nflags\t: fpu\n')
  real_open = open
  monkeypatch.setattr('builtins.open', lambda path, *args, **kwargs: real_open(
      cpuinfo if path == '/proc/cpuinfo' else path, *args, **kwargs))
  assert timing.cpu_model() == 'AMD EPYC 7B13'
