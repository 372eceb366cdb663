"""Small image folders written by tests, in the layouts the data sources read."""

import os

import ml_collections
import numpy as np
from PIL import Image

from configs import default

# Real CXR and CT images, where the shared folder holds them.
REALMINI = os.path.join(os.path.dirname(__file__), '..', '..', 'shared', 'data', 'realmini')


def data_config(tmp_path, folder, **overrides) -> ml_collections.ConfigDict:
  """The default data config reading `folder` at 32x32, preparing into `tmp_path`/tfds."""
  config = default.get_config().data
  config.folder_dir = str(folder)
  config.tfds_dir = str(tmp_path / 'tfds')
  config.image_size = 32
  config.update(overrides)
  return config


def write_png(path: str, seed: int, size=(40, 52), mode='L') -> None:
  rng = np.random.default_rng(seed)
  os.makedirs(os.path.dirname(path), exist_ok=True)
  shape = size if mode == 'L' else (*size, 3)
  Image.fromarray(rng.integers(0, 256, shape, dtype=np.uint8), mode).save(path)


def write_folder(root: str, patients_per_stratum: int = 6, images_per_patient: int = 2,
                 size=(40, 52), cxr_sites: int = 0) -> list[str]:
  """<root>/<modality>/<label>/ images with a manifest giving patient ids; returns relpaths.

  With `cxr_sites`, the manifest also names sources: CXR patient p comes from
  `cxr-site<p % cxr_sites>`, and every CT patient from `ct-site0`.
  """
  header = 'relpath,label,modality,patient_id' + (',source' if cxr_sites else '')
  rows, relpaths, seed = [header], [], 0
  for modality in ('cxr', 'ct'):
    for label in ('COVID', 'Normal'):
      for patient in range(patients_per_stratum):
        for image in range(images_per_patient):
          relpath = f'{modality}/{label}/{patient}_{image}.png'
          write_png(os.path.join(root, relpath), seed, size)
          seed += 1
          relpaths.append(relpath)
          row = f'{relpath},{label},{modality},{modality}-{label}-{patient}'
          if cxr_sites:
            row += f',{modality}-site{patient % cxr_sites if modality == "cxr" else 0}'
          rows.append(row)
  with open(os.path.join(root, 'manifest.csv'), 'w') as f:
    f.write('\n'.join(rows) + '\n')
  return relpaths


def add_cxr_pneumonia(root: str, patients: int = 6, images_per_patient: int = 2) -> None:
  """Adds CXR pneumonia patients to a `write_folder` tree, in its manifest."""
  rows = []
  for patient in range(patients):
    for image in range(images_per_patient):
      relpath = f'cxr/Pneumonia/{patient}_{image}.png'
      write_png(os.path.join(root, relpath), 1000 + images_per_patient * patient + image)
      rows.append(f'{relpath},Pneumonia,cxr,cxr-pneumonia-{patient}\n')
  with open(os.path.join(root, 'manifest.csv'), 'a') as f:
    f.writelines(rows)
