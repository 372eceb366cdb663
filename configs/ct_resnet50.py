"""The paper's Table 3: ResNet50 on CT."""

import ml_collections

from configs import default


def get_config(variant: str | None = None) -> ml_collections.ConfigDict:
  return default.experiment(('resnet50',), ('ct',), variant)
