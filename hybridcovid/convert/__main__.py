"""Converts a keras.applications ImageNet weight file into a backbone checkpoint.

  python -m hybridcovid.convert --arch=resnet50 \
      --keras_h5=resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5 \
      --output=weights/resnet50

The training config then names the output:
`--config.model.pretrained.resnet50=weights/resnet50`.
"""

import os

from absl import app
from absl import flags
from absl import logging
import jax

from hybridcovid import hashing
from hybridcovid.convert import checkpoint, keras_h5

# keras.applications' published notop files: (file name, URL, md5).
KERAS_FILES = {
    'resnet50': (
        'resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5',
        'https://storage.googleapis.com/tensorflow/keras-applications/resnet/'
        'resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5',
        '4d473c1dd8becc155b73f8504c6f6626'),
    'efficientnetb0': (
        'efficientnetb0_notop.h5',
        'https://storage.googleapis.com/keras-applications/'
        'efficientnetb0_notop.h5',
        '50bc09e76180e00e4465e1a485ddc09d'),
}

_ARCH = flags.DEFINE_enum('arch', None, sorted(KERAS_FILES), 'Backbone.')
_KERAS_H5 = flags.DEFINE_string(
    'keras_h5', None,
    "Path of the Keras weight file, or 'keras' to have Keras download it.")
_OUTPUT = flags.DEFINE_string('output', None, 'Checkpoint directory to write.')


def fetch_with_keras(arch: str) -> str:
  """Returns the path of the ImageNet file: Keras' cached copy, else a Keras download."""
  file_name, url, md5 = KERAS_FILES[arch]
  keras_home = os.environ.get('KERAS_HOME', os.path.join(os.path.expanduser('~'), '.keras'))
  cached = os.path.join(keras_home, 'models', file_name)
  if os.path.isfile(cached) and hashing.file_md5(cached) == md5:
    return cached
  try:
    import keras  # Only a download needs Keras (and TensorFlow).
  except ImportError as error:
    raise keras_h5.WeightsError(
        f'--keras_h5=keras needs Keras to download {url}; install it, or '
        f'download the file yourself and pass --keras_h5=PATH.') from error
  try:
    return keras.utils.get_file(file_name, url, cache_subdir='models', file_hash=md5)
  except Exception as error:  # Keras wraps network failures in several types.
    raise keras_h5.WeightsError(
        f'Could not download {url} ({error}). On a machine with internet, '
        f'download that file, copy it here and pass --keras_h5=PATH, or put '
        f'it at {cached}.') from error


def main(argv: list[str]) -> None:
  del argv
  try:
    convert(_ARCH.value, _KERAS_H5.value, _OUTPUT.value)
  except keras_h5.WeightsError as error:
    raise SystemExit(f'error: {error}') from error


def convert(arch: str, path: str, output: str) -> None:
  """Converts `path` (or the Keras download, for 'keras') into checkpoint `output`."""
  if os.path.exists(output):
    raise keras_h5.WeightsError(f'{output} already exists; choose a new --output '
                                'or remove it first.')
  if path == 'keras':
    path = fetch_with_keras(arch)
  variables = keras_h5.from_keras_h5(arch, path)
  count = sum(leaf.size for leaf in jax.tree.leaves(variables))
  checkpoint.save_backbone(
      output, arch, variables,
      source={'keras_h5': os.path.abspath(path), 'sha256': hashing.file_sha256(path),
              'tensor_values': count})
  logging.info('Wrote %s (%s, %d values) from %s.', output, arch, count, path)


if __name__ == '__main__':
  flags.mark_flags_as_required(['arch', 'keras_h5', 'output'])
  app.run(main)
