"""`--mode=predict`: COVID probabilities of image files from a trained run's selected checkpoint.

PNG, JPEG and DICOM files are read with Pillow and pydicom and resized as in
training, without TensorFlow. `WORKDIR/predict/predictions.csv` and
`predictions.json` give, per image, the raw and the temperature-scaled COVID
probability and the decision at the threshold fixed on the validation split,
and on request the path of a Grad-CAM PNG of the decision.
Files that cannot be read are listed with the reason; the others are still
scored.
"""

import csv
import json
import os
from typing import Sequence

from absl import logging
import ml_collections
import numpy as np
import tqdm

from hybridcovid import calibration, checkpoints, errors, explain, models, optimizers, parallel
from hybridcovid import train
from hybridcovid.data import resize

PREDICT_DIR = 'predict'
CSV_FIELDS = ('path', 'modality', 'probability', 'calibrated_probability', 'decision',
              'gradcam')


def input_files(paths: Sequence[str]) -> tuple[list[str], list[dict]]:
  """Every file named or inside a named folder (sorted), and the paths that do not exist."""
  files, missing = [], []
  for path in paths:
    if os.path.isdir(path):
      for folder, _, names in sorted(os.walk(path)):
        files += [os.path.join(folder, name) for name in sorted(names)]
    elif os.path.isfile(path):
      files.append(path)
    else:
      missing.append({'path': path, 'reason': 'no such file or folder'})
  return files, missing


def _explain(model, variables, images, rows, output_dir, batch_size) -> None:
  """Writes a Grad-CAM PNG of each image's decision; names it and gives each backbone's
  share of the evidence in the image's row."""
  os.makedirs(output_dir, exist_ok=True)
  for start in tqdm.tqdm(range(0, len(images), batch_size), desc='explaining', unit='batch'):
    batch_rows = rows[start:start + batch_size]
    names = [f'{index:05d}_{os.path.splitext(os.path.basename(row["path"]))[0]}.png'
             for index, row in enumerate(batch_rows, start)]
    titles = [f'{row["decision"]}, p={row["probability"]:.3f}' for row in batch_rows]
    shares = explain.explain_images(
        model, variables, images[start:start + batch_size],
        [row['decision'] == 'COVID' for row in batch_rows], titles,
        [os.path.join(output_dir, name) for name in names])
    for row, name, image_shares in zip(batch_rows, names, shares):
      row['gradcam'] = os.path.join(explain.GRADCAM_DIR, name)
      row['evidence_shares'] = image_shares


def predict(workdir: str, inputs: Sequence[str], with_gradcam: bool = False) -> dict:
  """Scores `inputs` (files or folders) with the run in `workdir`; writes WORKDIR/predict/.

  With `with_gradcam`, each image also gets a Grad-CAM PNG in
  WORKDIR/predict/gradcam/, named in its row with each backbone's share of the
  evidence (in the JSON).
  """
  if not inputs:
    raise errors.UserError('--mode=predict needs --input=PATH (a file or folder; repeat the '
                           'flag for more).')
  workdir = os.path.abspath(workdir)
  run = checkpoints.open_trained_run(workdir)
  record = run.best_record()
  trained = ml_collections.ConfigDict(record['config'])
  files, problems = input_files(inputs)
  images, rows, unreadable = resize.read_resized(files, trained.data)
  problems += unreadable

  data_parallel = parallel.DataParallel()
  model = models.create_classifier(trained.model, axis_name=train.BATCH_AXIS)
  template = train.abstract_train_state(
      model, optimizers.create_optimizer(trained.train, 1), trained.data.image_size,
      data_parallel.mesh)
  state, _ = run.restore_best(template)
  run.close()
  eval_fn = data_parallel.compile_eval_step()
  devices = data_parallel.device_count
  batch_size = -(-trained.train.batch_size // devices) * devices
  probabilities = []
  for start in tqdm.tqdm(range(0, len(images), batch_size), desc='scoring', unit='batch'):
    batch = np.stack(images[start:start + batch_size])
    # A full batch every time: one compiled program.
    padded = np.concatenate([batch, np.zeros((batch_size - len(batch), *batch.shape[1:]),
                                             np.uint8)])
    scores = eval_fn(state, data_parallel.device_batch({'image': padded}))
    probabilities += data_parallel.host_outputs(scores)[:len(batch)].tolist()

  operating_point = record.get('operating_point')
  if not operating_point:
    logging.warning('This run kept no operating point (trained by an older version): the '
                    'threshold is 0.5 and probabilities are not calibrated.')
    operating_point = {'threshold': 0.5, 'temperature': 1.0}
  threshold, temperature = operating_point['threshold'], operating_point['temperature']
  for row, probability in zip(rows, probabilities):
    row['probability'] = probability
    row['calibrated_probability'] = float(calibration.apply_temperature(probability,
                                                                        temperature))
    row['decision'] = 'COVID' if probability >= threshold else 'normal'

  output_dir = os.path.join(workdir, PREDICT_DIR)
  os.makedirs(output_dir, exist_ok=True)
  if with_gradcam and rows:
    _explain(model, train.host_variables(state), images, rows,
             os.path.join(output_dir, explain.GRADCAM_DIR), batch_size)
  with open(os.path.join(output_dir, 'predictions.csv'), 'w', newline='') as f:
    writer = csv.DictWriter(f, CSV_FIELDS if with_gradcam else CSV_FIELDS[:-1],
                            extrasaction='ignore')
    writer.writeheader()
    writer.writerows(rows)
  result = {'checkpoint_epoch': record['epoch'], 'threshold': threshold,
            'temperature': temperature, 'predictions': rows, 'unreadable': problems}
  with open(os.path.join(output_dir, 'predictions.json'), 'w') as f:
    json.dump(result, f, indent=1)
  for problem in problems:
    logging.warning('Skipped %s: %s', problem['path'], problem['reason'])
  logging.info('Scored %d images (%d COVID at threshold %.4f), skipped %d; wrote %s.',
               len(rows), sum(row['decision'] == 'COVID' for row in rows), threshold,
               len(problems), os.path.join(output_dir, 'predictions.csv'))
  return result
