import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from hybridcovid.data import synthetic
from hybridcovid.evaluation import explain
from hybridcovid.models import hybrid

IMAGE_SIZE = 64


class SmallBackbone(nn.Module):
  """Four convolutions, three of stride 2: an 8x8 feature map from 64x64 images."""
  dtype: object = jnp.float32
  axis_name: str | None = None
  batchnorm_momentum: float = 0.99
  conv_impl: str = 'auto'
  zero_init_residual: bool = False

  @nn.compact
  def __call__(self, images, train=False):
    x = images.astype(jnp.float32) / 127.5 - 1.0
    x = nn.relu(nn.Conv(16, (5, 5), strides=2)(x))
    for strides in (2, 1, 2):
      x = nn.relu(nn.Conv(32, (3, 3), strides=strides)(x))
    return x


@pytest.fixture(scope='module')
def small_hybrid():
  """A two-branch classifier with the real head over small backbones."""
  with pytest.MonkeyPatch.context() as patch:
    patch.setitem(hybrid.BACKBONES, 'small_a', SmallBackbone)
    patch.setitem(hybrid.BACKBONES, 'small_b', SmallBackbone)
    yield hybrid.HybridClassifier(backbones=('small_a', 'small_b'), hidden_units=32,
                                  dropout_rate=0.0)


def _synthetic_cxr(patients):
  images, labels, findings = [], [], []
  for label in synthetic.LABELS[:2]:  # COVID and normal.
    for index in patients:
      patient_images, densities = synthetic.patient_images(0, 'cxr', label, index, IMAGE_SIZE)
      images += patient_images
      findings += densities
      labels += [int(label == 'COVID')] * len(patient_images)
  return np.repeat(np.stack(images)[..., None], 3, axis=-1), np.array(labels), np.stack(findings)


def test_heat_concentrates_on_the_planted_opacities(small_hybrid):
  train_images, train_labels, _ = _synthetic_cxr(range(100))
  test_images, test_labels, findings = _synthetic_cxr(range(100, 120))
  params = small_hybrid.init(jax.random.key(0), train_images[:1])['params']
  optimizer = optax.adam(1e-3)

  @jax.jit
  def step(params, opt_state, images, labels):
    def loss(params):
      logits = small_hybrid.apply({'params': params}, images)
      return optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()
    gradients = jax.grad(loss)(params)
    updates, opt_state = optimizer.update(gradients, opt_state, params)
    return optax.apply_updates(params, updates), opt_state

  opt_state = optimizer.init(params)
  rng = np.random.default_rng(0)
  for _ in range(800):
    batch = rng.choice(len(train_images), 32)
    params, opt_state = step(params, opt_state, train_images[batch], train_labels[batch])

  explained = explain.gradcam(small_hybrid, {'params': params}, test_images, test_labels == 1)
  predicted = explained['probability'] >= 0.5
  assert np.mean(predicted == test_labels) > 0.9
  ratios = []
  for index in np.flatnonzero(predicted & (test_labels == 1)):
    heat = sum(explain.upsample(values[index], (IMAGE_SIZE, IMAGE_SIZE))
               for values in explained['heat'].values())
    opacity = findings[index] > 0.2 * findings[index].max()
    ratios.append(heat[opacity].mean() / heat[~opacity].mean())
  # Mean heat on the opacities against the rest of the image, per image.
  assert np.median(ratios) > 1.5
  assert np.mean(np.array(ratios) > 1.0) > 0.8


def test_branch_evidence_adds_up_to_the_margin_less_the_head_bias(small_hybrid):
  images = np.random.default_rng(1).integers(0, 256, (6, IMAGE_SIZE, IMAGE_SIZE, 3), np.uint8)
  variables = small_hybrid.init(jax.random.key(1), images[:1])
  toward_covid = np.array([True, False] * 3)
  explained = explain.gradcam(small_hybrid, variables, images, toward_covid)

  logits, intermediates = small_hybrid.apply(variables, images, mutable=['intermediates'])
  pooled = np.asarray(intermediates['intermediates'][hybrid.POOLED_FEATURES][0])
  params = jax.tree.map(np.asarray, variables['params'])
  hidden = pooled @ params['hidden']['kernel'] + params['hidden']['bias']
  direction = params['logits']['kernel'][:, 1] - params['logits']['kernel'][:, 0]
  bias = ((hidden > 0) * params['hidden']['bias']) @ direction + (
      params['logits']['bias'][1] - params['logits']['bias'][0])
  sign = np.where(toward_covid, 1.0, -1.0)
  margin = sign * (np.asarray(logits)[:, 1] - np.asarray(logits)[:, 0])
  total = sum(explained['evidence'].values())
  np.testing.assert_allclose(total, margin - sign * bias, rtol=1e-4, atol=1e-5)
  np.testing.assert_allclose(explained['probability'], jax.nn.softmax(logits)[:, 1], rtol=1e-5)
  for values in explained['heat'].values():
    assert values.shape == (6, 8, 8) and values.min() >= 0.0


def test_with_three_classes_the_heat_explains_covid_against_both_others(small_hybrid):
  images = np.random.default_rng(2).integers(0, 256, (4, IMAGE_SIZE, IMAGE_SIZE, 3), np.uint8)
  three_classes = small_hybrid.clone(num_classes=3)
  three = three_classes.init(jax.random.key(2), images[:1])
  toward_covid = np.array([True, False, True, False])
  kernel, bias = (three['params']['logits'][name] for name in ('kernel', 'bias'))
  # With one of the other classes made impossible, the COVID log-odds are the two-class
  # margin of COVID against the class left: whichever of the two it is.
  for impossible, left in ((2, 0), (0, 2)):
    variables = jax.tree.map(lambda x: x, three)
    variables['params']['logits'] = {'kernel': kernel, 'bias': bias.at[impossible].add(-1e4)}
    binary = jax.tree.map(lambda x: x, three)
    binary['params']['logits'] = {'kernel': kernel[:, np.array([left, 1])],
                                  'bias': bias[np.array([left, 1])]}
    explained = explain.gradcam(three_classes, variables, images, toward_covid)
    expected = explain.gradcam(small_hybrid, binary, images, toward_covid)
    for name in small_hybrid.backbones:
      np.testing.assert_allclose(explained['heat'][name], expected['heat'][name], rtol=1e-4,
                                 atol=1e-6)
      assert explained['heat'][name].max() > 0
    np.testing.assert_allclose(explained['probability'], jax.nn.softmax(
        three_classes.apply(variables, images))[:, 1], rtol=1e-5)


def test_evidence_shares_count_positive_evidence_only():
  shares = explain.evidence_shares({'a': np.array([3.0, -1.0, 2.0, -1.0]),
                                    'b': np.array([1.0, 4.0, 2.0, -2.0])})
  np.testing.assert_allclose(shares['a'], [0.75, 0.0, 0.5, 0.0])
  np.testing.assert_allclose(shares['b'], [0.25, 1.0, 0.5, 0.0])


def test_overlay_leaves_cold_pixels_and_colours_hot_ones():
  image = np.full((16, 16, 3), 100, np.uint8)
  cold = explain.overlay(image, np.zeros((4, 4)), scale=1.0)
  np.testing.assert_array_equal(cold, image)
  hot = explain.overlay(image, np.ones((4, 4)), scale=1.0)
  # jet at 1.0 is dark red (0.5, 0, 0): 40% grey plus 60% of it.
  np.testing.assert_array_equal(hot[5, 5], np.round([0.4 * 100 + 0.6 * 127.5, 40, 40]))
  np.testing.assert_allclose(explain.upsample(np.full((2, 2), 3.0), (10, 10)), 3.0)


@pytest.mark.parametrize('image_size', [48, 224])
@pytest.mark.parametrize('name', ['resnet50', 'efficientnetb0'])
def test_feature_map_size_is_that_of_the_real_backbones(name, image_size):
  images = jax.ShapeDtypeStruct((1, image_size, image_size, 3), jnp.float32)
  output, _ = jax.eval_shape(
      lambda x: hybrid.create_backbone(name).init_with_output(jax.random.key(0), x), images)
  side = explain.feature_map_size(image_size)
  assert output.shape[1:3] == (side, side) and side == {48: 2, 224: 7}[image_size]


def test_a_branch_without_evidence_says_so_and_the_colour_bar_gives_the_scale(
    tmp_path, monkeypatch):
  kept = []
  monkeypatch.setattr(explain.plt, 'close', kept.append)
  image = np.full((32, 32, 3), 90, np.uint8)
  heat = {'resnet50': np.zeros((2, 2)), 'efficientnetb0': np.array([[0.0, 1.0], [0.5, 0.0]])}
  title = explain.decision_title('false positive', 0.61, 0.4321)
  explain.plot_explanation(image, heat, {'resnet50': 0.0, 'efficientnetb0': 1.0}, title,
                           str(tmp_path / 'explained.png'))
  figure, = kept
  image_axis, resnet, efficientnet, bar = figure.axes
  assert image_axis.get_title() == 'false positive\np=0.610, threshold 0.4321'
  assert resnet.get_title() == 'ResNet50: 0% of evidence'
  assert [text.get_text() for text in resnet.texts] == [explain.NO_EVIDENCE]
  assert efficientnet.get_title() == 'EfficientNetB0: 100% of evidence'
  assert not efficientnet.texts
  assert bar.get_ylabel() == 'Grad-CAM heat'
  assert [label.get_text() for label in bar.get_yticklabels()] == ['none', 'highest']
  monkeypatch.undo()
  explain.plt.close(figure)
  assert (tmp_path / 'explained.png').stat().st_size > 0
