"""keras.applications reference models with random weights, for golden tests."""

import h5py
import numpy as np

from hybridcovid.models import preprocessing


def build(arch: str, height: int, width: int, seed: int = 0):
  """A notop keras.applications model whose every tensor holds random values."""
  import keras  # Imported lazily: TensorFlow is slow to import.
  constructors = {'resnet50': keras.applications.ResNet50,
                  'efficientnetb0': keras.applications.EfficientNetB0}
  model = constructors[arch](include_top=False, weights=None,
                             input_shape=(height, width, 3))
  rng = np.random.default_rng(seed)
  for layer in model.layers:
    for weight in layer.weights:
      shape, name = tuple(weight.shape), weight.name
      if layer.name.startswith('normalization'):
        # The values the ImageNet file's normalisation amounts to.
        value = {'mean': np.asarray(preprocessing.IMAGENET_RGB_MEAN),
                 'variance': np.square(preprocessing.IMAGENET_RGB_STD),
                 'count': np.asarray(0)}[name]
      elif name in ('kernel', 'depthwise_kernel'):
        fan_in = np.prod(shape[:-1]) if name == 'kernel' else np.prod(shape[:2])
        value = rng.normal(0.0, np.sqrt(1.0 / fan_in), shape)
      elif name == 'gamma':
        value = rng.uniform(0.5, 1.5, shape)
      elif name == 'moving_variance':
        value = rng.uniform(0.5, 2.0, shape)
      else:  # bias, beta, moving_mean
        value = rng.normal(0.0, 0.2, shape)
      weight.assign(np.asarray(value, np.float32).reshape(shape))
  return model


def save_legacy_h5(model, path: str, suffix: str = ':0', prefix: str = '',
                   drop_layers: tuple[str, ...] = ()) -> None:
  """Writes `model` in the layout of the HDF5 files keras.applications downloads.

  `prefix` renames every layer (as older saves did); `drop_layers` leaves
  layers out, to make damaged files.
  """
  layers = [layer for layer in model.layers if layer.name not in drop_layers]
  with h5py.File(path, 'w') as f:
    f.attrs['layer_names'] = [(prefix + layer.name).encode() for layer in layers]
    f.attrs['backend'] = b'tensorflow'
    f.attrs['keras_version'] = b'2.2.4'
    for layer in layers:
      group = f.create_group(prefix + layer.name)
      names = [f'{prefix}{layer.name}/{weight.name}{suffix}'
               for weight in layer.weights]
      group.attrs['weight_names'] = [name.encode() for name in names]
      for name, weight in zip(names, layer.weights):
        group.create_dataset(name, data=np.asarray(weight.numpy()))


def random_images(count: int, height: int, width: int, seed: int = 0):
  rng = np.random.default_rng(seed)
  return rng.uniform(0, 255, (count, height, width, 3)).astype(np.float32)


def relative_error(actual, expected) -> float:
  actual, expected = np.asarray(actual, np.float64), np.asarray(expected, np.float64)
  return float(np.linalg.norm(actual - expected) / np.linalg.norm(expected))


def features(model, arch: str, images: np.ndarray) -> np.ndarray:
  """The reference feature map, with the input preprocessing Keras documents for `arch`."""
  import keras
  if arch == 'resnet50':  # Keras ResNet50 leaves "caffe" preprocessing to the caller.
    images = keras.applications.resnet.preprocess_input(images.copy())
  return np.asarray(model(images, training=False))
