import os
import subprocess
import sys

import h5py
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from hybridcovid import convert, hashing, models
from hybridcovid.convert import layer_table
from hybridcovid.models import preprocessing
import keras_reference

ARCHS = ('resnet50', 'efficientnetb0')


@pytest.fixture(scope='module', params=ARCHS)
def keras_file(request, tmp_path_factory):
  """(arch, Keras model with random weights, its legacy HDF5 file) at 64x96."""
  arch = request.param
  model = keras_reference.build(arch, 64, 96, seed=1)
  path = str(tmp_path_factory.mktemp(arch) / f'{arch}_notop.h5')
  keras_reference.save_legacy_h5(model, path)
  return arch, model, path


def _assert_same_variables(actual, expected):
  assert jax.tree.structure(actual) == jax.tree.structure(expected)
  for a, b in zip(jax.tree.leaves(actual), jax.tree.leaves(expected)):
    np.testing.assert_array_equal(a, b)


@pytest.fixture(scope='module', params=[(arch, size) for arch in ARCHS
                                        for size in ((224, 224), (97, 131))],
                ids=lambda param: f'{param[0]}-{param[1][0]}x{param[1][1]}')
def golden(request, tmp_path_factory):
  """(arch, converted variables, images, Keras features of them and of unrelated images)."""
  arch, (height, width) = request.param
  model = keras_reference.build(arch, height, width, seed=2)
  path = str(tmp_path_factory.mktemp(arch) / 'weights.h5')
  keras_reference.save_legacy_h5(model, path)
  images, unrelated = (keras_reference.random_images(2, height, width, seed=seed)
                       for seed in (3, 4))
  return (arch, convert.from_keras_h5(arch, path), images,
          keras_reference.features(model, arch, images),
          keras_reference.features(model, arch, unrelated))


@pytest.mark.slow
@pytest.mark.parametrize('conv_impl', ['xla', 'cpu'])
def test_converted_features_match_keras(golden, conv_impl):
  arch, variables, images, expected, unrelated = golden
  # A reference whose features ignore the input would match anything.
  assert keras_reference.relative_error(unrelated, expected) > 0.1
  features = jax.jit(models.create_backbone(arch, conv_impl=conv_impl).apply)(variables, images)
  assert features.shape == expected.shape
  assert keras_reference.relative_error(features, expected) <= 1e-4


def test_reference_normalises_its_input_as_imagenet_weights_expect(keras_file):
  arch, model, _ = keras_file
  images = keras_reference.random_images(2, 64, 96, seed=4)
  expected = {'resnet50': preprocessing.caffe,
              'efficientnetb0': preprocessing.imagenet_mean_std}[arch](images)
  np.testing.assert_allclose(keras_reference.normalised_inputs(model, arch, images), expected,
                             rtol=1e-5, atol=1e-5)


def test_reference_batchnorm_statistics_are_those_of_its_inputs(keras_file):
  arch, model, _ = keras_file
  images = keras_reference.calibration_images(64, 96, seed=1)
  norms = keras_reference.batchnorm_inputs(model, keras_reference.model_inputs(arch, images))
  assert len(norms) == {'resnet50': 53, 'efficientnetb0': 49}[arch]
  for layer, activations in norms:
    mean, variance = layer.moving_mean.numpy(), layer.moving_variance.numpy()
    np.testing.assert_allclose((activations.mean(axis=(0, 1, 2)) - mean) / np.sqrt(variance), 0,
                               atol=1e-3)
    np.testing.assert_allclose(activations.var(axis=(0, 1, 2)) / variance, 1, rtol=1e-3)


def test_layer_table_follows_keras_layer_order(keras_file):
  arch, model, _ = keras_file
  keras_names = [layer.name for layer in model.layers
                 if layer.weights and not layer.name.startswith('normalization')]
  assert [layer.name for layer in layer_table.LAYER_TABLES[arch]()] == keras_names


def test_every_tensor_is_copied_with_keras_values(keras_file):
  arch, model, path = keras_file
  variables = convert.from_keras_h5(arch, path)
  count = sum(leaf.size for leaf in jax.tree.leaves(variables))
  assert count == {'resnet50': 23_587_712, 'efficientnetb0': 4_049_564}[arch]
  name = 'conv4_block2_2_bn' if arch == 'resnet50' else 'block3b_project_bn'
  block, part = name.rsplit('_', 2)[0], '_'.join(name.rsplit('_', 2)[1:])
  gamma, beta, mean, variance = [w.numpy() for w in model.get_layer(name).weights]
  np.testing.assert_array_equal(variables['params'][block][part]['scale'], gamma)
  np.testing.assert_array_equal(variables['batch_stats'][block][part]['var'], variance)
  if arch == 'efficientnetb0':
    depthwise = model.get_layer('block2a_dwconv').weights[0].numpy()  # (3, 3, 96, 1)
    np.testing.assert_array_equal(variables['params']['block2a']['dwconv']['kernel'],
                                  np.transpose(depthwise, (0, 1, 3, 2)))


def test_names_without_suffix_keras3_format_and_renamed_layers_convert_alike(
    keras_file, tmp_path):
  arch, model, path = keras_file
  reference = convert.from_keras_h5(arch, path)
  no_suffix = str(tmp_path / 'no_suffix.h5')
  keras_reference.save_legacy_h5(model, no_suffix, suffix='')
  renamed = str(tmp_path / 'renamed.h5')  # Other layer names: matched by order.
  keras_reference.save_legacy_h5(model, renamed, prefix='old_')
  keras3 = str(tmp_path / 'model.weights.h5')
  model.save_weights(keras3)
  for variant in (no_suffix, renamed, keras3):
    _assert_same_variables(convert.from_keras_h5(arch, variant), reference)


def test_keras_option_uses_the_cached_file_without_downloading(keras_file, tmp_path,
                                                                monkeypatch):
  arch, _, path = keras_file
  from hybridcovid.convert import __main__ as command
  file_name, url, _ = command.KERAS_FILES[arch]
  cached = tmp_path / 'models' / file_name
  cached.parent.mkdir()
  cached.write_bytes(open(path, 'rb').read())
  monkeypatch.setenv('KERAS_HOME', str(tmp_path))
  monkeypatch.setitem(command.KERAS_FILES, arch, (file_name, url, hashing.file_md5(path)))
  assert command.fetch_with_keras(arch) == str(cached)


def test_renamed_layers_in_another_order_are_refused(keras_file, tmp_path):
  arch, model, _ = keras_file
  path = str(tmp_path / 'shuffled.h5')
  keras_reference.save_legacy_h5(model, path, prefix='old_')
  with h5py.File(path, 'a') as f:
    names = list(f.attrs['layer_names'])
    f.attrs['layer_names'] = names[:5] + names[5:][::-1]
  with pytest.raises(convert.WeightsError, match='does not hold'):
    convert.from_keras_h5(arch, path)


def test_wrong_architecture_names_the_file_and_missing_layers(keras_file):
  arch, _, path = keras_file
  other = 'efficientnetb0' if arch == 'resnet50' else 'resnet50'
  first_missing = layer_table.LAYER_TABLES[other]()[0].name
  with pytest.raises(convert.WeightsError) as error:
    convert.from_keras_h5(other, path)
  message = str(error.value)
  assert path in message and f'does not hold {other} weights' in message
  assert f'Missing layers: {first_missing}' in message


def test_missing_layer_is_an_error_that_names_it(keras_file, tmp_path):
  arch, model, _ = keras_file
  dropped = 'conv3_block2_1_bn' if arch == 'resnet50' else 'block4a_se_reduce'
  path = str(tmp_path / 'damaged.h5')
  keras_reference.save_legacy_h5(model, path, drop_layers=(dropped,))
  with pytest.raises(convert.WeightsError, match=f'Missing layers: {dropped}\\.'):
    convert.from_keras_h5(arch, path)


def test_wrongly_shaped_tensor_is_an_error_that_names_it(keras_file, tmp_path):
  arch, model, _ = keras_file
  path = str(tmp_path / 'reshaped.h5')
  keras_reference.save_legacy_h5(model, path)
  layer = 'conv1_bn' if arch == 'resnet50' else 'stem_bn'
  with h5py.File(path, 'a') as f:
    name = f'{layer}/{layer}/moving_mean:0'
    del f[name]
    f.create_dataset(name, data=np.zeros(7, np.float32))
  with pytest.raises(convert.WeightsError) as error:
    convert.from_keras_h5(arch, path)
  assert path in str(error.value)
  assert f'{layer}/mean: file (7,), model' in str(error.value)


def test_truncated_and_missing_files_name_the_file_and_the_fix(keras_file, tmp_path):
  arch, _, path = keras_file
  truncated = str(tmp_path / 'truncated.h5')
  with open(path, 'rb') as source, open(truncated, 'wb') as target:
    target.write(source.read(os.path.getsize(path) // 2))
  with pytest.raises(convert.WeightsError,
                     match=f'{truncated}: cannot be read .* download it again'):
    convert.from_keras_h5(arch, truncated)
  with pytest.raises(convert.WeightsError, match='nowhere.h5: no such file'):
    convert.from_keras_h5(arch, str(tmp_path / 'nowhere.h5'))
  not_keras = str(tmp_path / 'other.h5')
  with h5py.File(not_keras, 'w') as f:
    f.create_dataset('x', data=np.zeros(3))
  with pytest.raises(convert.WeightsError, match='not a Keras weight file'):
    convert.from_keras_h5(arch, not_keras)


@pytest.mark.subprocess
def test_command_line_checkpoint_loads_into_a_classifier(keras_file, tmp_path):
  arch, _, path = keras_file
  output = str(tmp_path / 'converted')
  command = [sys.executable, '-m', 'hybridcovid.convert', f'--arch={arch}',
             f'--keras_h5={path}', f'--output={output}']
  subprocess.run(command, check=True, capture_output=True)
  rerun = subprocess.run(command, capture_output=True, text=True)
  assert rerun.returncode != 0 and 'already exists' in rerun.stderr

  classifier = models.HybridClassifier(hidden_units=8)
  fresh = jax.eval_shape(lambda: classifier.init(
      jax.random.key(0), jnp.zeros((1, 32, 32, 3))))
  fresh = jax.tree.map(lambda s: np.full(s.shape, 0.5, s.dtype), fresh)
  restored = convert.load_backbone(output, arch)
  # Host arrays, tied to no device: a CPU conversion loads on any machine.
  assert all(isinstance(leaf, np.ndarray) for leaf in jax.tree.leaves(restored))
  loaded = convert.load_pretrained(fresh, {arch: output, 'other': ''})
  _assert_same_variables(
      {'params': loaded['params'][arch], 'batch_stats': loaded['batch_stats'][arch]},
      convert.from_keras_h5(arch, path))
  untouched = [name for name in fresh['params'] if name != arch]
  assert untouched  # The head and the other backbone keep their values.
  for name in untouched:
    _assert_same_variables(loaded['params'][name], fresh['params'][name])

  other = 'efficientnetb0' if arch == 'resnet50' else 'resnet50'
  with pytest.raises(convert.WeightsError, match=f"holds '{arch}' weights, not '{other}'"):
    convert.load_pretrained(fresh, {other: output})
  single = {'params': {'hidden': {}}, 'batch_stats': {}}
  with pytest.raises(convert.WeightsError, match='has no such backbone'):
    convert.load_pretrained(single, {arch: output})


def test_damaged_checkpoint_is_reported_with_its_directory(keras_file, tmp_path):
  arch, _, path = keras_file
  output = str(tmp_path / 'converted')
  convert.save_backbone(output, arch, convert.from_keras_h5(arch, path), source={})
  for root, _, files in os.walk(os.path.join(output, 'variables')):
    for name in files:
      if name != '_METADATA' and not name.startswith('_CHECKPOINT'):
        with open(os.path.join(root, name), 'wb') as f:
          f.write(b'garbage')
  with pytest.raises(convert.WeightsError, match=f'{output}: the checkpoint cannot be restored'):
    convert.load_backbone(output, arch)
  with pytest.raises(convert.WeightsError, match='cannot read backbone.json'):
    convert.load_backbone(str(tmp_path), arch)
