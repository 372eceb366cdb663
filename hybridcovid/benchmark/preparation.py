"""Preparation throughput: images per second from files to a prepared TFDS data set.

  python -m hybridcovid.benchmark.preparation [--out=benchmarks/results/cpu-2core]

Times two settings on each folder, back to back in one run: "before", one
process storing whole images (`prepare_processes=1`, `max_stored_side=0`, as
preparation did before worker processes and bounded images), and "after",
every usable core storing images at most 512 pixels long (the defaults). The
folders are realmini (real CXR and CT images; skipped when absent) and a
generated one of full-size 16-bit radiographs and CT DICOMs. Every file is
read once before timing, so that both settings find it in the page cache;
the time of "after" includes starting its worker processes.
"""

import csv
import datetime
import json
import os
import platform
import shutil
import tempfile
import time

from absl import app
from absl import flags
from absl import logging
import numpy as np
from PIL import Image
from pydicom.uid import CTImageStorage

from hybridcovid.benchmark import timing
from hybridcovid.data import builders, dicom_files, prepare, sources, synthetic

_REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
_REALMINI = flags.DEFINE_string(
    'realmini_dir', os.path.join(os.path.dirname(_REPO), 'shared', 'data', 'realmini'),
    'The realmini folder; skipped when absent.')
_RADIOGRAPHS = flags.DEFINE_integer('radiographs', 200, 'Generated 16-bit grey PNG radiographs.')
_SIDE = flags.DEFINE_integer('side', 2500, 'Side of the generated radiographs, in pixels.')
_CT_SLICES = flags.DEFINE_integer('ct_slices', 50, 'Generated 512x512 CT DICOM slices.')
_MAX_STORED_SIDE = flags.DEFINE_integer('max_stored_side', 512, 'Stored size of "after".')
_WORKDIR = flags.DEFINE_string(
    'workdir', None, 'Where to generate the folder (kept and reused) and prepare the data; '
    'a temporary folder if unset.')
_OUT = flags.DEFINE_string('out', '', 'Folder for preparation.json and preparation.md; '
                           'nothing is written if empty.')

CT_SIDE = 512
CT_INTERCEPT = -1024.0
RESULT_NAME = 'preparation'


def settings(max_stored_side: int) -> dict[str, dict]:
  """The two timed settings: `prepared_builder` arguments of "before" and "after"."""
  return {'before': {'processes': 1, 'max_stored_side': 0},
          'after': {'processes': 0, 'max_stored_side': max_stored_side}}


def _smooth_noise(rng: np.random.Generator, side: int, cells: int) -> np.ndarray:
  """Unit-scale noise that varies smoothly over about side / cells pixels."""
  coarse = Image.fromarray(rng.standard_normal((cells, cells)).astype(np.float32), 'F')
  return np.asarray(coarse.resize((side, side), Image.Resampling.BICUBIC))


def radiograph(rng: np.random.Generator, side: int) -> np.ndarray:
  """A (side, side) uint16 image of 12-bit values: broad and fine structure plus pixel noise."""
  values = (0.5 + 0.12 * _smooth_noise(rng, side, 12) + 0.04 * _smooth_noise(rng, side, 150)
            + 0.01 * rng.standard_normal((side, side), np.float32))
  return np.round(np.clip(values, 0.0, 1.0) * 4095).astype(np.uint16)


def write_ct_dicom(path: str, hounsfield: np.ndarray) -> None:
  """A single-frame CT DICOM of int16 values, stored with RescaleIntercept -1024."""
  dicom_files.write_dicom(path, np.round(hounsfield - CT_INTERCEPT).astype(np.int16),
                          sop_class_uid=CTImageStorage, Modality='CT', RescaleSlope=1,
                          RescaleIntercept=CT_INTERCEPT)


def write_full_size_folder(root: str, radiographs: int, side: int, ct_slices: int,
                           seed: int = 0) -> str:
  """`root` with 16-bit PNG radiographs, CT DICOM slices and a manifest; reused if written."""
  manifest = os.path.join(root, sources.MANIFEST)
  if os.path.isfile(manifest):
    return root
  rng = np.random.default_rng(seed)
  rows = []
  for index in range(radiographs):
    label = synthetic.LABELS[index % 2]
    relpath = f'cxr/{label}/{index:04d}.png'
    os.makedirs(os.path.dirname(os.path.join(root, relpath)), exist_ok=True)
    Image.fromarray(radiograph(rng, side)).save(os.path.join(root, relpath))
    rows.append((relpath, label, 'cxr', f'cxr-{index}'))
  for index in range(ct_slices):
    label = synthetic.LABELS[index % 2]
    relpath = f'ct/{label}/{index:04d}.dcm'
    os.makedirs(os.path.dirname(os.path.join(root, relpath)), exist_ok=True)
    hounsfield = -600 + 500 * _smooth_noise(rng, CT_SIDE, 16) + 20 * rng.standard_normal(
        (CT_SIDE, CT_SIDE))
    write_ct_dicom(os.path.join(root, relpath), np.clip(hounsfield, -1024, 3000))
    rows.append((relpath, label, 'ct', f'ct-{index}'))
  with open(manifest, 'w', newline='') as f:  # Last: its presence marks a whole folder.
    writer = csv.writer(f, lineterminator='\n')
    writer.writerow(('relpath', 'label', 'modality', 'patient_id'))
    writer.writerows(rows)
  return root


def _read_every_file(root: str) -> int:
  """Reads every file under `root` once; returns their total size in bytes."""
  total = 0
  for parent, _, files in os.walk(root):
    for name in files:
      with open(os.path.join(parent, name), 'rb') as f:
        while chunk := f.read(1 << 24):
          total += len(chunk)
  return total


def _size_of(folder: str) -> int:
  return sum(os.path.getsize(os.path.join(parent, name))
             for parent, _, files in os.walk(folder) for name in files)


def time_preparation(root: str, tfds_dir: str, max_stored_side: int, processes: int) -> dict:
  """Prepares the 'folder' layout of `root` into an empty `tfds_dir`, timed."""
  start = time.perf_counter()
  builder = builders.prepared_builder('folder', root, tfds_dir, (-600.0, 1500.0),
                                      max_stored_side=max_stored_side, processes=processes)
  seconds = time.perf_counter() - start
  images = builder.info.splits[builders.ALL_SPLIT].num_examples
  return {'processes': prepare.process_count(processes), 'max_stored_side': max_stored_side,
          'images': images, 'seconds': round(seconds, 3),
          'images_per_second': round(images / seconds, 2),
          'stored_bytes': _size_of(str(builder.data_dir))}


def compare(name: str, root: str, workdir: str, max_stored_side: int) -> dict:
  """"before" and "after" on one folder, with the speed-up of "after"."""
  result = {'folder': name, 'source_bytes': _read_every_file(root)}
  for setting, arguments in settings(max_stored_side).items():
    tfds_dir = os.path.join(workdir, f'tfds-{name}-{setting}')
    shutil.rmtree(tfds_dir, ignore_errors=True)
    result[setting] = time_preparation(root, tfds_dir, **arguments)
    shutil.rmtree(tfds_dir)
    logging.info('%s, %s: %s', name, setting, json.dumps(result[setting]))
  result['speedup'] = round(result['after']['images_per_second']
                            / result['before']['images_per_second'], 2)
  return result


def measure(workdir: str, realmini_dir: str, radiographs: int, side: int, ct_slices: int,
            max_stored_side: int) -> dict:
  """Both settings on realmini (if present) and on the generated full-size folder."""
  load_average = os.getloadavg()[0]  # Other work on this machine shares its cores.
  # Untimed: TensorFlow starts when the first data set is prepared.
  warm_up = write_full_size_folder(os.path.join(workdir, 'warm-up'), 2, 64, 2)
  shutil.rmtree(os.path.join(workdir, 'tfds-warm-up'), ignore_errors=True)
  time_preparation(warm_up, os.path.join(workdir, 'tfds-warm-up'), 0, 1)
  folders = []
  if os.path.isdir(realmini_dir):
    folders.append(('realmini', os.path.abspath(realmini_dir)))
  else:
    logging.warning('%s: no such folder; realmini is skipped.', realmini_dir)
  generated = os.path.join(workdir, f'full-size-{radiographs}x{side}-{ct_slices}ct')
  logging.info('Writing (or reusing) the generated folder %s.', generated)
  folders.append(('full-size', write_full_size_folder(generated, radiographs, side,
                                                      ct_slices)))
  return {
      'machine': {'cpu_model': timing.cpu_model(), 'cpu_cores': len(os.sched_getaffinity(0)),
                  'load_average_at_start': round(load_average, 2),
                  'python': platform.python_version(),
                  'time': datetime.datetime.now(datetime.timezone.utc).strftime(
                      '%Y-%m-%d %H:%M:%S UTC')},
      'settings': {
          'before': 'one process, whole images (prepare_processes=1, max_stored_side=0), '
                    'as preparation worked before worker processes and bounded images',
          'after': f'every usable core, bounded images (prepare_processes=0, '
                   f'max_stored_side={max_stored_side}), including starting the workers'},
      'generated': (f'{radiographs} grey 16-bit PNG radiographs of {side}x{side} (12-bit '
                    f'values, smooth noise at two scales plus pixel noise) and {ct_slices} '
                    f'CT DICOM slices of {CT_SIDE}x{CT_SIDE} int16 (RescaleIntercept '
                    f'{CT_INTERCEPT:g}, Modality CT)'),
      'folders': [compare(name, root, workdir, max_stored_side) for name, root in folders],
  }


def _megabytes(size: int) -> str:
  return f'{size / 1e6:,.1f}'


def markdown(result: dict) -> str:
  """The result as a short markdown report."""
  machine = result['machine']
  lines = [
      '# Benchmark: data preparation', '',
      f'{machine["cpu_model"]}, {machine["cpu_cores"]} CPU cores (load average '
      f'{machine["load_average_at_start"]} from other work when the run started), Python '
      f'{machine["python"]}, {machine["time"]}.', '',
      f'- before: {result["settings"]["before"]}.',
      f'- after: {result["settings"]["after"]}.',
      f'- full-size: {result["generated"]}.', '',
      '| folder | images | source MB | before img/s | after img/s | speed-up '
      '| stored MB before | stored MB after |',
      '|---|---|---|---|---|---|---|---|']
  for folder in result['folders']:
    before, after = folder['before'], folder['after']
    lines.append(
        f'| {folder["folder"]} | {after["images"]} | {_megabytes(folder["source_bytes"])} '
        f'| {before["images_per_second"]:.2f} | {after["images_per_second"]:.2f} '
        f'| {folder["speedup"]:.2f}x | {_megabytes(before["stored_bytes"])} '
        f'| {_megabytes(after["stored_bytes"])} |')
  lines += ['', 'Reproduce: `python -m hybridcovid.benchmark.preparation '
            '--out=benchmarks/results/cpu-2core`.']
  return '\n'.join(lines) + '\n'


def main(argv: list[str]) -> None:
  del argv
  with tempfile.TemporaryDirectory() as scratch:
    result = measure(_WORKDIR.value or scratch, _REALMINI.value, _RADIOGRAPHS.value,
                     _SIDE.value, _CT_SLICES.value, _MAX_STORED_SIDE.value)
  report = markdown(result)
  logging.info('Preparation:\n%s', report)
  if _OUT.value:
    os.makedirs(_OUT.value, exist_ok=True)
    with open(os.path.join(_OUT.value, f'{RESULT_NAME}.json'), 'w') as f:
      json.dump(result, f, indent=2)
    with open(os.path.join(_OUT.value, f'{RESULT_NAME}.md'), 'w') as f:
      f.write(report)


if __name__ == '__main__':
  app.run(main)
