"""Keras 3 applications on TensorFlow, the method's original stack, as a benchmark peer.

The same classifier as ours: the backbones' feature maps concatenated, global
average pooling, dense, dropout 0.5, dense. Trained with `train_on_batch`
(Adam, graph mode) and run with `predict_on_batch`, Keras' documented fast
paths. Usage: see `common.parse_arguments`.
"""

import os

import common

BACKBONES = {'resnet50': 'ResNet50', 'efficientnetb0': 'EfficientNetB0'}


def build_classifier(keras, arguments):
  inputs = keras.Input((arguments.image_size, arguments.image_size, 3))
  feature_maps = [
      getattr(keras.applications, BACKBONES[name])(
          include_top=False, weights=None,
          input_shape=(arguments.image_size, arguments.image_size, 3))(inputs)
      for name in arguments.backbones]
  x = (keras.layers.Concatenate()(feature_maps) if len(feature_maps) > 1
       else feature_maps[0])
  x = keras.layers.GlobalAveragePooling2D()(x)
  x = keras.layers.Dense(arguments.hidden_units, activation='relu')(x)
  x = keras.layers.Dropout(0.5)(x)
  outputs = keras.layers.Dense(2, dtype='float32')(x)
  return keras.Model(inputs, outputs)


def main():
  arguments = common.parse_arguments()
  common.exit_unless_installed('tensorflow', 'keras')
  os.environ['KERAS_BACKEND'] = 'tensorflow'
  os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')
  import keras  # pylint: disable=import-outside-toplevel
  import numpy as np  # pylint: disable=import-outside-toplevel
  import tensorflow as tf  # pylint: disable=import-outside-toplevel

  if arguments.dtype == 'bfloat16':
    keras.mixed_precision.set_global_policy('mixed_bfloat16')
  model = build_classifier(keras, arguments)
  model.compile(optimizer=keras.optimizers.Adam(arguments.learning_rate),
                loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                jit_compile=False)
  rng = np.random.default_rng(0)
  shape = (arguments.batch_size, arguments.image_size, arguments.image_size, 3)
  images = tf.constant(rng.uniform(0, 255, shape).astype(np.float32))
  labels = tf.constant(rng.integers(0, 2, arguments.batch_size).astype(np.int32))
  if arguments.mode == 'train':
    step = lambda: model.train_on_batch(images, labels)
  else:
    step = lambda: model.predict_on_batch(images)
  common.measure(step, arguments, common.process_peak_memory,
                 f'Keras {keras.__version__} on TensorFlow {tf.__version__}, '
                 'graph mode (compiled train/predict functions, jit_compile=False)')


if __name__ == '__main__':
  main()
