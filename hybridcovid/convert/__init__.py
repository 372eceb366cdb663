"""ImageNet weight conversion from keras.applications files, and converted checkpoints."""

from hybridcovid.convert.checkpoint import load_backbone, load_pretrained, save_backbone
from hybridcovid.convert.keras_h5 import WeightsError, from_keras_h5

__all__ = ['WeightsError', 'from_keras_h5', 'load_backbone', 'load_pretrained',
           'save_backbone']
