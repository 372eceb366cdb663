"""The paper's Table 4: ResNet50 on chest X-rays and CT pooled."""

import ml_collections

from configs import default


def get_config(variant: str | None = None) -> ml_collections.ConfigDict:
  return default.experiment(('resnet50',), ('cxr', 'ct'), variant)
