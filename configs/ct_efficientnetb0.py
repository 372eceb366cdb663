"""The paper's Table 3: EfficientNetB0 on CT."""

import ml_collections

from configs import default


def get_config(variant: str | None = None) -> ml_collections.ConfigDict:
  return default.experiment(('efficientnetb0',), ('ct',), variant)
