"""Resizing a decoded image to the model's input, as the training pipeline does, without TensorFlow.

`bounded` shrinks a decoded image to the size preparation stores it at.
`resize` gives the same pixels as `input_pipeline.resize` (TensorFlow's antialiased
bilinear resize, with or without aspect-preserving padding) up to rounding,
so that prediction on a machine without TensorFlow sees what training saw;
`read_resized` reads image files into such model inputs, bounded then resized.
"""

from typing import Sequence

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from PIL import Image
import tqdm

from hybridcovid.data import decode

RESIZE_METHODS = ('pad', 'squash')


def bounded(image: np.ndarray, max_side: int) -> np.ndarray:
  """An (H, W, 3) uint8 image shrunk so that its longer side is `max_side`.

  The other side is rounded to the nearest pixel; each output pixel averages
  the input pixels it covers (Pillow's box filter). An image no longer than
  `max_side`, or any image for 0, is returned as it is.
  """
  height, width = image.shape[:2]
  longer = max(height, width)
  if not max_side or longer <= max_side:
    return image
  size = (max(1, round(width * max_side / longer)), max(1, round(height * max_side / longer)))
  return np.asarray(Image.fromarray(image).resize(size, Image.Resampling.BOX))


def _padded_layout(height: int, width: int, size: int) -> tuple[int, int, int, int]:
  """(resized height, width, top, left) of `tf.image.resize_with_pad`, in its float32 maths."""
  ratio = max(np.float32(width) / np.float32(size), np.float32(height) / np.float32(size))
  resized_height = np.float32(height) / ratio
  resized_width = np.float32(width) / ratio
  top = max(0, int(np.floor((np.float32(size) - resized_height) / np.float32(2))))
  left = max(0, int(np.floor((np.float32(size) - resized_width) / np.float32(2))))
  return int(np.floor(resized_height)), int(np.floor(resized_width)), top, left


def resize(image: np.ndarray, size: int, method: str) -> np.ndarray:
  """An (H, W, 3) uint8 image as (size, size, 3) uint8.

  'pad' keeps the aspect ratio and pads with black, 'squash' stretches.
  """
  if method not in RESIZE_METHODS:
    raise ValueError(f"Unknown resize method {method!r}; choose 'pad' or 'squash'.")
  height, width = image.shape[:2]
  if method == 'squash':
    shape, top, left = (size, size), 0, 0
  else:
    resized_height, resized_width, top, left = _padded_layout(height, width, size)
    shape = (resized_height, resized_width)
  resized = jax.image.resize(jnp.asarray(image, jnp.float32), (*shape, image.shape[2]),
                             method='linear', antialias=True)
  resized = np.asarray(jnp.clip(jnp.round(resized), 0, 255)).astype(np.uint8)
  out = np.zeros((size, size, image.shape[2]), np.uint8)
  out[top:top + shape[0], left:left + shape[1]] = resized
  return out


def read_resized(paths: Sequence[str], data_config: ml_collections.ConfigDict
                 ) -> tuple[list[np.ndarray], list[dict], list[dict]]:
  """Model inputs as training resized them: (images, a row per readable file with its
  path, modality and DICOM study (or None), a problem per unreadable file with its path and the reason, a
  sentence without the path).

  Images are first bounded as preparation stored them; configs of runs that
  predate `max_stored_side` stored them whole.
  """
  images, rows, problems = [], [], []
  window = (data_config.ct_window_level, data_config.ct_window_width)
  max_side = data_config.get('max_stored_side', 0)
  for path in tqdm.tqdm(paths, desc='reading', unit='file'):
    try:
      image, info = decode.read_image(path, ct_window=window)
    except decode.BadImageError as error:
      problems.append({'path': path, 'reason': error.reason})
      continue
    images.append(resize(bounded(image, max_side), data_config.image_size, data_config.resize))
    rows.append({'path': path, 'modality': info.modality or 'unknown', 'study': info.study})
  return images, rows, problems
