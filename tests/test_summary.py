import json

from configs import default
from hybridcovid import summary


def test_summary_counts_every_part(tmp_path):
  config = default.get_config()
  config.model.backbones = ('efficientnetb0',)
  config.model.hidden_units = 16
  config.data.image_size = 32
  result = summary.summarize(config, str(tmp_path))
  assert result['values_per_part'] == {
      'efficientnetb0': 4_049_564,
      'hidden': 1280 * 16 + 16,
      'logits': 16 * 2 + 2,
  }
  assert result['logits_shape'] == [1, 2]
  with open(tmp_path / 'model_summary.json') as f:
    assert json.load(f) == result
