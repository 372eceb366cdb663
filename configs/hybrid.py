"""The paper's Figure 1 model: ResNet50 and EfficientNetB0 features concatenated."""

import ml_collections

from configs import default


def get_config() -> ml_collections.ConfigDict:
  config = default.get_config()
  config.model.backbones = ('resnet50', 'efficientnetb0')
  return config
