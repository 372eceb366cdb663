"""keras.applications reference models with random weights, for golden tests.

Kernels, BatchNorm scales and offsets and biases are random; BatchNorm's
running statistics are those of each layer's input on calibration images, as
training would leave them, so that activations neither vanish nor explode and
the features depend on the input; EfficientNetB0's `Normalization` applies the
ImageNet mean and std its published weights amount to.
"""

import h5py
import numpy as np

from hybridcovid.models import preprocessing

CALIBRATION_IMAGES = 4


def build(arch: str, height: int, width: int, seed: int = 0):
  """A notop keras.applications model with random weights, calibrated on random images.

  Its BatchNorm running statistics are the mean and variance of each layer's
  input on `calibration_images(height, width, seed)`.
  """
  import keras  # Imported lazily: TensorFlow is slow to import.
  constructors = {'resnet50': keras.applications.ResNet50,
                  'efficientnetb0': keras.applications.EfficientNetB0}
  # A static input shape: with (None, None, 3), Keras' correct_pad assumes even sizes.
  model = constructors[arch](include_top=False, weights=None,
                             input_shape=(height, width, 3))
  rng = np.random.default_rng(seed)
  for layer in model.layers:
    if isinstance(layer, keras.layers.Normalization):
      # The values the ImageNet file's normalisation amounts to. The layer
      # keeps its build-time mean 0 and variance 1 until finalize_state().
      values = {'mean': np.asarray(preprocessing.IMAGENET_RGB_MEAN),
                'variance': np.square(preprocessing.IMAGENET_RGB_STD), 'count': 0}
      for weight in layer.weights:
        weight.assign(np.asarray(values[weight.name], weight.dtype).reshape(weight.shape))
      layer.finalize_state()
      continue
    if isinstance(layer, keras.layers.Dropout):
      layer.rate = 0.0  # Calibration runs in training mode, which must not drop.
    for weight in layer.weights:
      shape, name = tuple(weight.shape), weight.name
      if name in ('kernel', 'depthwise_kernel'):
        fan_in = np.prod(shape[:-1]) if name == 'kernel' else np.prod(shape[:2])
        value = rng.normal(0.0, np.sqrt(1.0 / fan_in), shape)
      elif name == 'gamma':
        value = rng.uniform(0.5, 1.5, shape)
      elif name in ('beta', 'bias'):
        value = rng.normal(0.0, 0.2, shape)
      else:  # moving_mean, moving_variance: calibrated below.
        continue
      weight.assign(np.asarray(value, np.float32))
  _calibrate_batchnorm(model, model_inputs(arch, calibration_images(height, width, seed)))
  return model


def _calibrate_batchnorm(model, inputs: np.ndarray) -> None:
  """Sets every BatchNorm's running mean and variance to those of its input on `inputs`.

  In training mode each BatchNorm normalises with the (biased) statistics of
  its input batch, so one training-mode pass gives every layer's input as
  the calibrated model sees it in inference mode.
  """
  for layer, activations in batchnorm_inputs(model, inputs, training=True):
    layer.moving_mean.assign(activations.mean(axis=(0, 1, 2)).astype(np.float32))
    layer.moving_variance.assign(activations.var(axis=(0, 1, 2)).astype(np.float32))


def batchnorm_inputs(model, inputs: np.ndarray, training: bool = False) -> list:
  """(layer, its input as float64) for every BatchNormalization layer, given model `inputs`."""
  import keras
  norms = [layer for layer in model.layers
           if isinstance(layer, keras.layers.BatchNormalization)]
  probe = keras.Model(model.input, [layer.input for layer in norms])
  return [(layer, np.asarray(activations, np.float64))
          for layer, activations in zip(norms, probe(inputs, training=training))]


def calibration_images(height: int, width: int, seed: int = 0) -> np.ndarray:
  """The images `build(arch, height, width, seed)` takes its BatchNorm statistics from."""
  rng = np.random.default_rng([seed, 1])
  return rng.uniform(0, 255, (CALIBRATION_IMAGES, height, width, 3)).astype(np.float32)


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


def model_inputs(arch: str, images: np.ndarray) -> np.ndarray:
  """`images` with the input preprocessing Keras documents for `arch` and leaves to the caller."""
  import keras
  if arch == 'resnet50':  # Keras ResNet50 leaves "caffe" preprocessing to the caller.
    return keras.applications.resnet.preprocess_input(images.copy())
  return images  # EfficientNetB0 rescales and normalises inside the model.


def normalised_inputs(model, arch: str, images: np.ndarray) -> np.ndarray:
  """What the first convolution of the reference model `arch` sees, before its padding."""
  import keras
  inputs = model_inputs(arch, images)
  layer = next((layer for layer in model.layers
                if isinstance(layer, keras.layers.Normalization)), None)
  if layer is None:
    return inputs
  return np.asarray(keras.Model(model.input, layer.output)(inputs))


def features(model, arch: str, images: np.ndarray) -> np.ndarray:
  """The reference feature map of RGB `images` in [0, 255]."""
  return np.asarray(model(model_inputs(arch, images), training=False))
