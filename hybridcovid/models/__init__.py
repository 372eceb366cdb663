"""Backbones and classifiers in flax.linen. Importing this package never imports TensorFlow."""

from hybridcovid.models.efficientnet import EfficientNetB0
from hybridcovid.models.hybrid import (BACKBONES, HybridClassifier, create_backbone,
                                       create_classifier)
from hybridcovid.models.resnet import ResNet50

__all__ = ['BACKBONES', 'EfficientNetB0', 'HybridClassifier', 'ResNet50',
           'create_backbone', 'create_classifier']
