"""`--mode=predict`: COVID probabilities of image files from a trained run's selected checkpoint.

PNG, JPEG and DICOM files are read with Pillow and pydicom and resized as in
training, without TensorFlow. `WORKDIR/predict/predictions.csv` and
`predictions.json` give, per image, the raw COVID probability, the
temperature-scaled one where the run found scaling to help (see
`calibration`), and the decision at the threshold fixed on the validation split
(COVID against the rest); a run of three classes adds each class's probability
and the most probable class,
and on request the path of a Grad-CAM PNG of the decision. Files that cannot
be read are listed with the reason (in the CSV's `problem` column, after the
scored ones); the others are still scored.

Images also group into studies, each given one decision as the report gives
each test patient one (`patients`): by the `patient_id` column of a CSV of
inputs, else by a DICOM file's StudyInstanceUID, else, with
`studies_by_folder`, by the folder; any other image is a study of its own.
`studies.csv` and the JSON's `studies` hold a row per study, at the threshold
and temperature the run fitted on its validation patients.

Every file is replaced only once scoring has succeeded: a run that fails, or
scores nothing, leaves the previous results as they were.
"""

import csv
import os
from typing import Callable, Sequence, TextIO

from absl import logging
import ml_collections
import numpy as np
import tqdm

from hybridcovid import classes, errors, models
from hybridcovid.data import resize
from hybridcovid.evaluation import calibration, explain, feature_distance, multiclass, patients
from hybridcovid.report import json_format
from hybridcovid.training import checkpoints, parallel, train

PREDICT_DIR = 'predict'
CSV_FILE = 'predictions.csv'
JSON_FILE = 'predictions.json'
STUDIES_FILE = 'studies.csv'
CSV_FIELDS = ('path', 'study', 'modality', 'probability', 'calibrated_probability', 'decision',
              'feature_distance', 'unlike_training_data', 'problem', 'gradcam')
STUDY_FIELDS = ('study', 'modality', 'images', 'probability', 'calibrated_probability',
                'decision')
MISSING = 'no such file or folder'
_SHOWN_PROBLEMS = 3


class PredictionError(errors.UserError):
  """Nothing could be scored; the message names the inputs and why."""


def _listed_files(csv_path: str) -> list[tuple[str, str]]:
  """(path, patient id or '') of each row of a CSV of inputs; relative paths are relative
  to the CSV's folder."""
  with open(csv_path, newline='') as f:
    reader = csv.DictReader(f)
    if 'path' not in (reader.fieldnames or ()):
      raise errors.UserError(
          f'{csv_path}: a CSV of inputs needs a path column (and, to group images into '
          f'studies, a patient_id column); its header is {reader.fieldnames}. Add them, or '
          'name the images or their folders with --input instead.')
    folder = os.path.dirname(os.path.abspath(csv_path))
    return [(os.path.normpath(os.path.join(folder, row['path'])),
             (row.get('patient_id') or '').strip())
            for row in reader]


def input_files(paths: Sequence[str]) -> tuple[list[str], dict[str, str], list[dict]]:
  """Every file named, inside a named folder (sorted) or listed in a named CSV file (its
  path column), the study each CSV row names in its patient_id column, and the paths
  that do not exist."""
  files, studies, missing = [], {}, []
  for path in paths:
    if os.path.isdir(path):
      for folder, _, names in sorted(os.walk(path)):
        files += [os.path.join(folder, name) for name in sorted(names)]
    elif os.path.isfile(path) and path.lower().endswith('.csv'):
      for listed, patient in _listed_files(path):
        files.append(listed)
        if patient:
          studies[listed] = patient
    elif os.path.isfile(path):
      files.append(path)
    else:
      missing.append({'path': path, 'reason': MISSING})
  return files, studies, missing


def _kept_operating_point(record: dict, name: str, what: str) -> dict:
  """The operating point `name` of the checkpoint's `record`, or for runs that kept none,
  threshold 0.5 without scaling, with a warning."""
  point = record.get(name)
  if point:
    return point
  logging.warning('This run kept no operating point for %s (trained by an older version): the '
                  'threshold is 0.5 and probabilities are not calibrated.', what)
  return {'threshold': 0.5, 'temperature': 1.0, 'aggregation': 'mean_logit',
          'scaling': {'used': False, 'reason': 'No temperature was fitted.'}}


def _decide(rows: list[dict], point: dict, negative: str) -> bool:
  """Gives each row its decision at `point`'s threshold, COVID or `negative`, and, where
  `point` scales, its calibrated probability; returns whether it scales."""
  scaled = calibration.scaling_used(point)
  for row in rows:
    if scaled:
      row['calibrated_probability'] = float(calibration.apply_temperature(
          row['probability'], point['temperature']))
    row['decision'] = 'COVID' if row['probability'] >= point['threshold'] else negative
  return scaled


def _explain(model, variables, images, rows, threshold, output_dir, batch_size) -> None:
  """Writes a Grad-CAM PNG of each image's decision; names it and gives each backbone's
  share of the evidence in the image's row."""
  os.makedirs(output_dir, exist_ok=True)
  for start in tqdm.tqdm(range(0, len(images), batch_size), desc='explaining', unit='batch'):
    batch_rows = rows[start:start + batch_size]
    names = [f'{index:05d}_{os.path.splitext(os.path.basename(row["path"]))[0]}.png'
             for index, row in enumerate(batch_rows, start)]
    titles = [explain.decision_title(row['decision'], row['probability'], threshold)
              for row in batch_rows]
    shares = explain.explain_images(
        model, variables, images[start:start + batch_size],
        [row['decision'] == 'COVID' for row in batch_rows], titles,
        [os.path.join(output_dir, name) for name in names])
    for row, name, image_shares in zip(batch_rows, names, shares):
      row['gradcam'] = os.path.join(explain.GRADCAM_DIR, name)
      row['evidence_shares'] = image_shares


def _check_familiar(reference: dict | None, features: np.ndarray, rows: list[dict]) -> None:
  """Gives each row its features' distance from the validation images' and whether it lies
  beyond all of theirs; warns about those that do."""
  if reference is None:
    logging.warning('This run kept no reference of its validation features (trained by an '
                    'older version, or too few validation patients): images unlike the '
                    'training data cannot be told apart.')
    return
  distances = feature_distance.distances(reference, features)
  for row, distance in zip(rows, distances):
    row['feature_distance'] = float(distance)
    row['unlike_training_data'] = bool(distance > reference['threshold'])
  unlike = [row['path'] for row in rows if row['unlike_training_data']]
  if unlike:
    shown = ', '.join(unlike[:_SHOWN_PROBLEMS]) + (', ...' if len(unlike) > _SHOWN_PROBLEMS
                                                   else '')
    logging.warning(
        '%d of %d images look unlike the data this model was trained on (%s): their features '
        'lie farther from the validation images\' than any validation image lies from the '
        'others (distance above %.2f; column unlike_training_data). The model scores them '
        'anyway, and those scores mean little: check the modality, the image type and that '
        'the model was trained on real images.', len(unlike), len(rows), shown,
        reference['threshold'])


def _nothing_scored(inputs: Sequence[str], problems: list[dict], output_dir: str
                    ) -> PredictionError:
  """The error for inputs of which not one image could be scored."""
  details = [f'{problem["path"]}: {problem["reason"].rstrip(".")}'
             for problem in problems[:_SHOWN_PROBLEMS]]
  if len(problems) > _SHOWN_PROBLEMS:
    details.append(f'and {len(problems) - _SHOWN_PROBLEMS} more files that cannot be read')
  details += [f'{path}: a folder without files' for path in inputs
              if os.path.isdir(path) and not any(names for _, _, names in os.walk(path))]
  if any(problem['reason'] != MISSING for problem in problems):
    advice = 'Fix or replace the files that cannot be read, or name others with --input.'
  else:
    advice = 'Name PNG, JPEG or DICOM files, or folders holding them, with --input.'
  return PredictionError(f'Nothing to score: {"; ".join(details)}. {advice} Nothing was '
                         f'written to {output_dir}.')


def _replace_files(writers: dict[str, Callable[[TextIO], None]]) -> None:
  """Writes each path beside its old version, then puts all in their place.

  A write that fails leaves every old version as it was.
  """
  staged = {}
  try:
    for path, write in writers.items():
      staged[path] = f'{path}.{os.getpid()}.tmp'
      with open(staged[path], 'w', newline='') as f:
        write(f)
    for path, temporary in staged.items():
      os.replace(temporary, path)
  finally:
    for temporary in staged.values():
      if os.path.exists(temporary):
        os.remove(temporary)


def _describe(record: dict, trained: ml_collections.ConfigDict, best_dir: str) -> str:
  """One line on what the checkpoint holds."""
  return (f'Scoring with {best_dir}, the epoch selected on validation ({record["epoch"]} '
          f'of {trained.train.epochs}): {" + ".join(trained.model.backbones)} trained on '
          f'{" + ".join(trained.data.modalities)}, {trained.data.image_size}x'
          f'{trained.data.image_size} images ({trained.data.resize}).')


def predict(workdir: str, inputs: Sequence[str], with_gradcam: bool = False,
            studies_by_folder: bool = False) -> dict:
  """Scores `inputs` (files, folders or CSV files listing images) with the run in
  `workdir`; writes WORKDIR/predict/.

  With `with_gradcam`, each image also gets a Grad-CAM PNG in
  WORKDIR/predict/gradcam/, named in its row with each backbone's share of the
  evidence (in the JSON). With `studies_by_folder`, the images of one folder
  that neither a CSV nor their DICOM header assigns make one study. Raises
  PredictionError, and writes nothing, when not one image can be scored.
  """
  if not inputs:
    raise errors.UserError('--mode=predict needs --input=PATH (a file or folder; repeat the '
                           'flag for more).')
  workdir = os.path.abspath(workdir)
  output_dir = os.path.join(workdir, PREDICT_DIR)
  run = checkpoints.open_trained_run(workdir)
  record = run.best_record()
  trained = ml_collections.ConfigDict(record['config'])
  logging.info('%s', _describe(
      record, trained, os.path.join(workdir, checkpoints.BEST_DIR, str(record['epoch']))))
  files, listed_studies, problems = input_files(inputs)
  if not files:
    raise _nothing_scored(inputs, problems, output_dir)

  data_parallel = parallel.DataParallel()
  model = models.create_classifier(trained.model, len(classes.of_config(trained.data)),
                                   axis_name=train.BATCH_AXIS)
  state, _ = run.restore_best_for_inference(model, trained.data.image_size,
                                            data_parallel.mesh)
  run.close()
  images, rows, unreadable = resize.read_resized(files, trained.data)
  problems = unreadable + problems
  if not rows:
    raise _nothing_scored(inputs, problems, output_dir)
  eval_fn = data_parallel.compile_eval_step(train.eval_features_step)
  devices = data_parallel.device_count
  batch_size = -(-trained.train.batch_size // devices) * devices
  names = classes.of_config(trained.data)
  probabilities, class_probabilities, features = [], [], []
  for start in tqdm.tqdm(range(0, len(images), batch_size), desc='scoring', unit='batch'):
    batch = np.stack(images[start:start + batch_size])
    # A full batch every time: one compiled program.
    padded = np.concatenate([batch, np.zeros((batch_size - len(batch), *batch.shape[1:]),
                                             np.uint8)])
    outputs = data_parallel.host_outputs(
        eval_fn(state, data_parallel.device_batch({'image': padded})))
    probabilities += outputs['probability'][:len(batch)].tolist()
    class_probabilities += list(outputs['class_probabilities'][:len(batch)])
    features.append(outputs['features'][:len(batch)])
  _check_familiar(record.get('feature_reference'), np.concatenate(features), rows)

  operating_point = _kept_operating_point(record, 'operating_point', 'images')
  threshold, temperature = operating_point['threshold'], operating_point['temperature']
  for row, probability, by_class in zip(rows, probabilities, class_probabilities):
    row['probability'] = probability
    if len(names) > 2:
      row.update(multiclass.class_fields(by_class))
    dicom_study = row.pop('study')
    row['study'] = (listed_studies.get(row['path']) or dicom_study
                    or (os.path.dirname(row['path']) if studies_by_folder else row['path']))
  negative = classes.negative_name(names)
  scaled = _decide(rows, operating_point, negative)
  if not scaled:
    logging.info('Raw probabilities, not temperature-scaled: %s',
                 operating_point['scaling']['reason'])
  study_point = _kept_operating_point(record, 'patient_operating_point', 'studies')
  studies = patients.patient_rows(rows, study_point['aggregation'], key='study')
  studies_scaled = _decide(studies, study_point, negative)

  os.makedirs(output_dir, exist_ok=True)
  if with_gradcam:
    _explain(model, train.host_variables(state), images, rows, threshold,
             os.path.join(output_dir, explain.GRADCAM_DIR), batch_size)
  result = {'checkpoint_epoch': record['epoch'], 'threshold': threshold,
            'temperature': temperature if scaled else None, 'predictions': rows,
            'unreadable': problems,
            'study_aggregation': study_point['aggregation'],
            'study_threshold': study_point['threshold'],
            'study_temperature': study_point['temperature'] if studies_scaled else None,
            'studies': studies}
  fields = [field for field in CSV_FIELDS
            if (field != 'calibrated_probability' or scaled)
            and (field != 'gradcam' or with_gradcam)]
  if len(names) > 2:
    index = fields.index('decision') + 1
    fields[index:index] = ['predicted_class', *(f'probability_{name}' for name in names)]
  study_fields = [field for field in STUDY_FIELDS
                  if field != 'calibrated_probability' or studies_scaled]

  def write_csv(f: TextIO) -> None:
    writer = csv.DictWriter(f, fields, extrasaction='ignore')
    writer.writeheader()
    writer.writerows(rows)
    writer.writerows({'path': problem['path'], 'problem': problem['reason']}
                     for problem in problems)

  def write_studies(f: TextIO) -> None:
    writer = csv.DictWriter(f, study_fields, extrasaction='ignore')
    writer.writeheader()
    writer.writerows(studies)

  csv_path = os.path.join(output_dir, CSV_FILE)
  _replace_files({csv_path: write_csv,
                  os.path.join(output_dir, STUDIES_FILE): write_studies,
                  os.path.join(output_dir, JSON_FILE): lambda f: json_format.dump_json(result, f)})
  for problem in problems:
    logging.warning('Not scored: %s: %s', problem['path'], problem['reason'])
  if problems:
    logging.warning('%d files were not scored (listed in %s with the problem): fix or remove '
                    'each, or leave it out of --input.', len(problems), csv_path)
  logging.info('Scored %d images (%d COVID at threshold %.4f), skipped %d; wrote %s.',
               len(rows), sum(row['decision'] == 'COVID' for row in rows), threshold,
               len(problems), csv_path)
  logging.info('%d studies (%d COVID at threshold %.4f, %s of their images); wrote %s.',
               len(studies), sum(row['decision'] == 'COVID' for row in studies),
               study_point['threshold'], study_point['aggregation'].replace('_', ' '),
               os.path.join(output_dir, STUDIES_FILE))
  return result
