import importlib

import pytest

from configs import default

EXPERIMENTS = {
    'cxr_resnet50': (('resnet50',), ('cxr',)),
    'cxr_efficientnetb0': (('efficientnetb0',), ('cxr',)),
    'ct_resnet50': (('resnet50',), ('ct',)),
    'ct_efficientnetb0': (('efficientnetb0',), ('ct',)),
    'pooled_resnet50': (('resnet50',), ('cxr', 'ct')),
    'pooled_efficientnetb0': (('efficientnetb0',), ('cxr', 'ct')),
    'hybrid': (('resnet50', 'efficientnetb0'), ('cxr', 'ct')),
}


@pytest.mark.parametrize('name', sorted(EXPERIMENTS))
def test_each_experiment_has_the_papers_settings(name):
  config = importlib.import_module(f'configs.{name}').get_config()
  backbones, modalities = EXPERIMENTS[name]
  assert tuple(config.model.backbones) == backbones
  assert tuple(config.data.modalities) == modalities
  assert config.data.image_size == 224 and config.train.epochs == 100
  assert config.model.dropout_rate == 0.5 and tuple(config.data.split_fractions) == (0.7, 0.2, 0.1)
  assert config.data.balance == 'resample' and config.data.augment.rotation_degrees > 0
  assert not config.data.synthetic


def test_every_experiment_differs_from_the_default_only_in_model_and_modalities():
  for name, (backbones, modalities) in EXPERIMENTS.items():
    expected = default.get_config()
    expected.model.backbones = backbones
    expected.data.modalities = modalities
    config = importlib.import_module(f'configs.{name}').get_config()
    assert config.to_dict() == expected.to_dict(), name


def test_demo_variant_is_the_same_model_on_synthetic_data():
  paper = importlib.import_module('configs.hybrid').get_config()
  demo = importlib.import_module('configs.hybrid').get_config('demo')
  assert demo.data.synthetic and demo.data.image_size < paper.data.image_size
  assert tuple(demo.model.backbones) == tuple(paper.model.backbones)
  assert demo.model.hidden_units == paper.model.hidden_units
  assert demo.model.dropout_rate == paper.model.dropout_rate


def test_unknown_variant_names_the_known_ones():
  with pytest.raises(ValueError, match=r"Unknown config variant 'tiny'.*\['demo'\]"):
    importlib.import_module('configs.hybrid').get_config('tiny')
