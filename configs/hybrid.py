"""The paper's Figure 1 model on chest X-rays and CT pooled.

ResNet50 and EfficientNetB0 feature maps concatenated, then global average
pooling, a fully connected layer, dropout and the softmax classifier.
"""

import ml_collections

from configs import default


def get_config(variant: str | None = None) -> ml_collections.ConfigDict:
  return default.experiment(('resnet50', 'efficientnetb0'), ('cxr', 'ct'), variant)
