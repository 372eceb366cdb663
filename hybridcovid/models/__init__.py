"""Backbones and classifiers in flax.linen. Importing this package never imports TensorFlow."""

from hybridcovid.models.efficientnet import EfficientNetB0
from hybridcovid.models.hybrid import (BACKBONES, POOLED_FEATURES, HybridClassifier,
                                       apply_with_feature_maps, create_backbone,
                                       create_classifier, initialize)
from hybridcovid.models.resnet import ResNet50

__all__ = ['BACKBONES', 'EfficientNetB0', 'HybridClassifier', 'POOLED_FEATURES', 'ResNet50',
           'apply_with_feature_maps', 'create_backbone', 'create_classifier',
           'initialize']
