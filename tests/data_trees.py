"""Small image folders written by tests, in the layouts the data sources read."""

import os

import numpy as np
from PIL import Image


def write_png(path: str, seed: int, size=(40, 52), mode='L') -> None:
  rng = np.random.default_rng(seed)
  os.makedirs(os.path.dirname(path), exist_ok=True)
  shape = size if mode == 'L' else (*size, 3)
  Image.fromarray(rng.integers(0, 256, shape, dtype=np.uint8), mode).save(path)


def write_folder(root: str, patients_per_stratum: int = 6, images_per_patient: int = 2,
                 size=(40, 52)) -> list[str]:
  """<root>/<modality>/<label>/ images with a manifest giving patient ids; returns relpaths."""
  rows, relpaths, seed = ['relpath,label,modality,patient_id'], [], 0
  for modality in ('cxr', 'ct'):
    for label in ('COVID', 'Normal'):
      for patient in range(patients_per_stratum):
        for image in range(images_per_patient):
          relpath = f'{modality}/{label}/{patient}_{image}.png'
          write_png(os.path.join(root, relpath), seed, size)
          seed += 1
          relpaths.append(relpath)
          rows.append(f'{relpath},{label},{modality},{modality}-{label}-{patient}')
  with open(os.path.join(root, 'manifest.csv'), 'w') as f:
    f.write('\n'.join(rows) + '\n')
  return relpaths
