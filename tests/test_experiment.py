import json
import os

import pytest

from configs import default
from hybridcovid import experiment
import data_trees


def _config(tmp_path, epochs):
  config = default.get_config()
  config.model.backbones = ('resnet50',)
  config.model.hidden_units = 8
  config.data.folder_dir = str(tmp_path / 'images')
  config.data.tfds_dir = str(tmp_path / 'tfds')
  config.data.image_size = 32
  config.train.batch_size = 8
  config.train.epochs = epochs
  return config


@pytest.mark.slow
def test_trains_selects_on_validation_evaluates_test_and_resumes(tmp_path):
  data_trees.write_folder(str(tmp_path / 'images'), patients_per_stratum=10)
  workdir = str(tmp_path / 'work')
  first = experiment.train_and_evaluate(_config(tmp_path, epochs=1), workdir)
  assert first['selected_epoch'] == 0
  assert sorted(os.listdir(os.path.join(workdir, 'checkpoints'))) == ['0']
  resumed = experiment.train_and_evaluate(_config(tmp_path, epochs=2), workdir)
  # Epoch 0 came from the checkpoint; only epoch 1 was trained.
  assert sorted(os.listdir(os.path.join(workdir, 'checkpoints'))) == ['0', '1']
  with open(os.path.join(workdir, 'metrics.json')) as f:
    saved = json.load(f)
  assert saved['selected_epoch'] == resumed['selected_epoch'] in (0, 1)
  test = saved['test']
  assert set(test) >= {'overall', 'cxr', 'ct'}
  # 80 images, patients split 70/20/10: the test split holds 16 of them.
  assert sum(test['overall']['counts'].values()) == 16
  assert sum(test['cxr']['counts'].values()) + sum(test['ct']['counts'].values()) == 16
  with open(os.path.join(workdir, 'inputs.json')) as f:
    assert len(json.load(f)) == 80
