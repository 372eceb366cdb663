"""The paper's Table 2: EfficientNetB0 on chest X-rays."""

import ml_collections

from configs import default


def get_config(variant: str | None = None) -> ml_collections.ConfigDict:
  return default.experiment(('efficientnetb0',), ('cxr',), variant)
