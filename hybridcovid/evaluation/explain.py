"""Grad-CAM for each backbone: where in the image, and in which branch, the decision came from.

For each backbone's last feature map A (h x w x C), the target y is the
decision's logit margin (COVID minus normal for a COVID decision, the reverse
for a normal one; with three classes, the COVID logit against the log-sum-exp
of the other two). Each channel is weighted by the spatial mean of dy/dA, and
the heat map is the ReLU of the weighted channel sum (Selvaraju et al., 2017).
Summed over all positions before the ReLU, a backbone's map equals its
evidence, the sum of gradient x input over its pooled features; with two
classes the evidence of all backbones adds up to the margin less the head's
bias terms, so each branch's share of the positive evidence says which branch
drove the decision.
"""

import functools
from typing import Any, Mapping, Sequence

import jax
import jax.numpy as jnp
import matplotlib

matplotlib.use('Agg')
from matplotlib import pyplot as plt  # pylint: disable=g-import-not-at-top
import numpy as np
from PIL import Image

from hybridcovid import classes, models

# Where reports and predictions keep their Grad-CAM PNGs.
GRADCAM_DIR = 'gradcam'
# Heat reaches this opacity over the image where it is highest.
OVERLAY_OPACITY = 0.6
# Both backbones halve the resolution five times, rounding up ('SAME' padding).
FEATURE_STRIDE = 32
BACKBONE_TITLES = {'resnet50': 'ResNet50', 'efficientnetb0': 'EfficientNetB0'}
NO_EVIDENCE = 'No evidence for\nthis decision\nin this branch'


@functools.partial(jax.jit, static_argnums=0)
def _margin_gradients(model, variables, images, sign):
  """Gradients of the signed COVID log-odds (the COVID logit against the log-sum-exp of the
  others': the logit margin with two classes) with respect to each backbone's feature map."""
  _, shapes = jax.eval_shape(
      lambda x: models.apply_with_feature_maps(model, variables, x), images)

  def margin(offsets):
    logits, feature_maps = models.apply_with_feature_maps(model, variables, images, offsets)
    others = jnp.delete(logits, classes.COVID, axis=1, assume_unique_indices=True)
    log_odds = logits[:, classes.COVID] - jax.nn.logsumexp(others, axis=1)
    return jnp.sum(sign * log_odds), (logits, feature_maps)

  zeros = {name: jnp.zeros(shape.shape, jnp.float32) for name, shape in shapes.items()}
  gradients, (logits, feature_maps) = jax.grad(margin, has_aux=True)(zeros)
  return gradients, logits, feature_maps


def gradcam(model: models.HybridClassifier, variables: Mapping[str, Any],
            images: np.ndarray, toward_covid: np.ndarray) -> dict[str, Any]:
  """Grad-CAM of each backbone for a batch of model-input images.

  Args:
    model: the classifier.
    variables: its 'params' and 'batch_stats'.
    images: [N, H, W, 3] images as the model takes them.
    toward_covid: [N] booleans: explain the evidence for COVID (True) or against
      it (False: for normal, or with three classes for normal or pneumonia),
      usually the model's decision.

  Returns:
    'probability': [N] COVID probabilities; 'heat': {backbone: [N, h, w]}
    non-negative heat maps; 'evidence': {backbone: [N]} each branch's signed
    evidence for the explained class.
  """
  gradients, logits, feature_maps = _margin_gradients(
      model, variables, jnp.asarray(images), jnp.where(jnp.asarray(toward_covid), 1.0, -1.0))
  heat, evidence = {}, {}
  for name in model.backbones:
    weights = jnp.mean(gradients[name], axis=(1, 2))
    signed = jnp.einsum('nhwc,nc->nhw', feature_maps[name].astype(jnp.float32), weights)
    heat[name] = np.asarray(jax.nn.relu(signed))
    evidence[name] = np.asarray(jnp.sum(signed, axis=(1, 2)))
  return {'probability': np.asarray(jax.nn.softmax(logits)[:, classes.COVID]), 'heat': heat,
          'evidence': evidence}


def feature_map_size(image_size: int) -> int:
  """Side of the backbones' last feature maps, the heat maps' resolution."""
  return -(-image_size // FEATURE_STRIDE)


def evidence_shares(evidence: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
  """Each branch's share of the positive evidence (0 to 1; all 0 when none is positive)."""
  positive = {name: np.maximum(values, 0.0) for name, values in evidence.items()}
  total = sum(positive.values())
  return {name: np.divide(values, total, out=np.zeros_like(values), where=total > 0)
          for name, values in positive.items()}


def upsample(heat: np.ndarray, size: tuple[int, int]) -> np.ndarray:
  """A [h, w] heat map resized bilinearly to `size` (height, width)."""
  resized = Image.fromarray(heat.astype(np.float32)).resize(
      (size[1], size[0]), Image.Resampling.BILINEAR)
  return np.asarray(resized)


def overlay(image: np.ndarray, heat: np.ndarray, scale: float) -> np.ndarray:
  """`heat` in the 'jet' colours over a [H, W, 3] uint8 image, as uint8.

  `scale` is the heat shown at full colour, shared by the maps that are
  compared, so that a weaker map looks weaker.
  """
  level = np.clip(upsample(heat, image.shape[:2]) / max(scale, 1e-12), 0.0, 1.0)
  colour = matplotlib.colormaps['jet'](level)[..., :3] * 255.0
  opacity = OVERLAY_OPACITY * level[..., None]
  return np.round((1.0 - opacity) * image + opacity * colour).astype(np.uint8)


def decision_title(decision: str, probability: float, threshold: float) -> str:
  """An explanation's title: the decision, the COVID probability and the threshold."""
  return f'{decision}\np={probability:.3f}, threshold {threshold:.4f}'


def plot_explanation(image: np.ndarray, heat: Mapping[str, np.ndarray],
                     shares: Mapping[str, float], title: str, path: str) -> None:
  """The input and one Grad-CAM overlay per backbone side by side, written to `path` (PNG).

  The maps share one colour scale, shown by the colour bar. A backbone whose
  map is zero everywhere (none of its evidence favours the decision) gets a
  panel that says so, rather than a plain image that looks like a missing one.
  """
  scale = max(float(np.max(values)) for values in heat.values())
  figure, axes = plt.subplots(1, 1 + len(heat), figsize=(2.6 * (1 + len(heat)) + 0.6, 3.0),
                              layout='constrained')
  axes[0].imshow(image)
  axes[0].set_title(title, fontsize='small')
  for axis, name in zip(axes[1:], heat):
    title = BACKBONE_TITLES.get(name, name)
    if len(heat) > 1:
      title += f': {100 * shares[name]:.0f}% of evidence'
    axis.set_title(title, fontsize='small')
    if np.max(heat[name]) > 0:
      axis.imshow(overlay(image, heat[name], scale))
      continue
    axis.imshow(image, alpha=0.35)
    axis.text(0.5, 0.5, NO_EVIDENCE, transform=axis.transAxes, ha='center', va='center',
              fontsize='small', wrap=True,
              bbox={'facecolor': 'white', 'edgecolor': 'grey', 'alpha': 0.9})
  for axis in axes:
    axis.axis('off')
  colours = matplotlib.cm.ScalarMappable(matplotlib.colors.Normalize(0.0, 1.0), 'jet')
  bar = figure.colorbar(colours, ax=list(axes[1:]), fraction=0.04, pad=0.02, ticks=[0, 1])
  bar.ax.set_yticklabels(['none', 'highest'], fontsize='x-small')
  bar.set_label('Grad-CAM heat', fontsize='x-small')
  figure.savefig(path, dpi=100)
  plt.close(figure)


def explain_images(model: models.HybridClassifier, variables: Mapping[str, Any],
                   images: Sequence[np.ndarray], toward_covid: Sequence[bool],
                   titles: Sequence[str], paths: Sequence[str]) -> list[dict[str, float]]:
  """Writes one explanation PNG per image; returns each image's evidence shares."""
  explained = gradcam(model, variables, np.stack(images), np.asarray(toward_covid))
  shares = evidence_shares(explained['evidence'])
  result = []
  for index, (image, title, path) in enumerate(zip(images, titles, paths)):
    image_shares = {name: float(values[index]) for name, values in shares.items()}
    plot_explanation(image, {name: values[index] for name, values in explained['heat'].items()},
                     image_shares, title, path)
    result.append(image_shares)
  return result
