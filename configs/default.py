"""Fields shared by every experiment. Each experiment's config starts from this one."""

import ml_collections


def get_config() -> ml_collections.ConfigDict:
  config = ml_collections.ConfigDict()
  config.seed = 0

  config.model = ml_collections.ConfigDict()
  # One backbone gives the paper's single-model classifier, two the hybrid.
  config.model.backbones = ('resnet50', 'efficientnetb0')
  config.model.num_classes = 2
  config.model.hidden_units = 256
  config.model.dropout_rate = 0.5
  config.model.dtype = 'float32'  # Compute dtype: 'float32' or 'bfloat16'.
  # Backbones in inference mode (running BatchNorm statistics) while training.
  config.model.freeze_backbone_batchnorm = False
  # Directories written by `python -m hybridcovid.convert`; '' keeps the
  # backbone randomly initialised.
  config.model.pretrained = ml_collections.ConfigDict(
      {'resnet50': '', 'efficientnetb0': ''})

  config.data = ml_collections.ConfigDict()
  config.data.image_size = 224
  return config
