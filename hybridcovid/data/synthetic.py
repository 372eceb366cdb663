"""A synthetic COVID-19 versus normal (and pneumonia) chest X-ray and CT data set, made
from a seed.

`generate` draws synthetic patients and writes their images in the layout of the
real data, `root/<modality>/<Label>/<file>.png`, with `root/manifest.csv`, so the
same loading code reads both. COVID patients show patchy, soft-edged ground-glass
opacities near the lateral and posterior edges of the lungs, of faint to clear
contrast. Normal patients show none but may have central (hilar) brightening, a
single small nodule, prominent vessels or, on CT, a faint band of dependent
density. With three classes, chest X-rays also come from pneumonia patients:
a lobar consolidation, one dense opacity filling the lower or middle part of
one lung below a sharp upper border (a fissure). CT has no pneumonia class, as
in the paper's CT data. The COVID and normal images are the same with two
classes and with three. Anatomy, brightness and contrast vary per patient in the same way for
both classes, so the class cannot be read from global statistics. The images of
one patient share its anatomy and findings; each is shifted by a few pixels and
has its own noise and a slightly different brightness.

Patients come from two sites per modality, alternately, so both sites hold
both classes alike. Site b burns a bright marker into the top left corner of
its images, as many X-ray and CT systems do: the site can be told from the
images, the disease cannot be told from the site.

Coordinates run from -1 to 1 across the image: x to the right, y downwards.
"""

import csv
import dataclasses
import io
import json
import os
from typing import Sequence

import numpy as np
from PIL import Image

from hybridcovid import classes, errors
from hybridcovid.data import sources

MODALITIES = ('cxr', 'ct')
# COVID first: the order seeds each image's generator.
LABELS = ('COVID', 'Normal', 'Pneumonia')
# The labels each modality has in the three-class data set.
THREE_CLASS_LABELS = {'cxr': LABELS, 'ct': LABELS[:2]}
MANIFEST_HEADER = ('relpath', 'label', 'modality', 'source', 'patient_id')
PARAMETERS_NAME = 'synthetic.json'
MIN_IMAGE_SIZE = 32
MIN_IMAGES_PER_PATIENT = 2
MAX_IMAGES_PER_PATIENT = 4
# Largest shift between the images of one patient, as a fraction of the image size.
MAX_SHIFT = 0.02
# Softness of organ outlines, in coordinate units (about 1.3 pixels at 128x128).
EDGE_WIDTH = 0.02
# Range of the angles at which opacities sit in a lung, measured from lateral
# towards posterior (CT) or inferior (CXR).
CXR_OPACITY_ANGLES = (-0.35 * np.pi, 0.45 * np.pi)
CT_OPACITY_ANGLES = (-0.15 * np.pi, 0.6 * np.pi)
# Opacities fill this fraction of the grey-level difference between lung and soft
# tissue; a minority of COVID patients have subtle ones.
SUBTLE_OPACITY_FRACTION = 0.1
SUBTLE_OPACITY_CONTRAST = (0.25, 0.4)
CLEAR_OPACITY_CONTRAST = (0.5, 1.0)
SITES = ('a', 'b')
MARKED_SITE = 'b'
# The marker's offset from the top left corner and its side, as fractions of the image size.
MARKER_OFFSET = 0.03
MARKER_SIZE = 0.06
MARKER_LEVEL = 0.95


@dataclasses.dataclass(frozen=True)
class _Ellipse:
  """An axis-aligned ellipse whose width grows by `taper` from top to bottom."""
  center_x: float
  center_y: float
  radius_x: float
  radius_y: float
  taper: float = 0.0

  def _radius_x_at(self, y: np.ndarray) -> np.ndarray:
    height = np.clip((y - self.center_y) / self.radius_y, -1.0, 1.0)
    return self.radius_x * (1.0 + self.taper * height)

  def radius(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Elliptical radius: 0 at the centre, 1 on the outline."""
    return np.hypot((x - self.center_x) / self._radius_x_at(y),
                    (y - self.center_y) / self.radius_y)

  def mask(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Inside mask in [0, 1] with edges about EDGE_WIDTH wide."""
    distance = (self.radius(x, y) - 1.0) * min(self.radius_x, self.radius_y)
    return _sigmoid(-distance / EDGE_WIDTH)

  def point(self, side: float, angle: float, fraction: float) -> tuple[float, float]:
    """The point at `fraction` of the radius, `angle` from lateral towards +y.

    `side` is +1 or -1: the direction of x that points away from the midline.
    """
    y = self.center_y + fraction * self.radius_y * np.sin(angle)
    return self.center_x + side * fraction * self._radius_x_at(y) * np.cos(angle), y

  def shrunk(self, amount: float) -> '_Ellipse':
    return dataclasses.replace(self, radius_x=self.radius_x - amount,
                               radius_y=self.radius_y - amount)


@dataclasses.dataclass(frozen=True)
class _Blob:
  """A Gaussian brightening: opacity, nodule, hilar shadow or vessel in section."""
  center_x: float
  center_y: float
  sigma_x: float
  sigma_y: float
  amplitude: float

  def density(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    return self.amplitude * np.exp(
        -0.5 * (((x - self.center_x) / self.sigma_x) ** 2
                + ((y - self.center_y) / self.sigma_y) ** 2))


@dataclasses.dataclass(frozen=True)
class _Consolidation:
  """Lobar pneumonia: a dense opacity filling one lung below a sharp, slightly tilted upper
  border (a fissure), fading out below `bottom`."""
  lung: _Ellipse
  fissure_y: float
  tilt: float
  bottom: float
  amplitude: float

  def density(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    fissure = self.fissure_y + self.tilt * (x - self.lung.center_x)
    return (self.amplitude * self.lung.mask(x, y) * _sigmoid((y - fissure) / EDGE_WIDTH)
            * _sigmoid((self.bottom - y) / (4 * EDGE_WIDTH)))


@dataclasses.dataclass(frozen=True)
class _Segment:
  """A bright line (vessel or clavicle) that narrows and fades by `taper` at its end."""
  start_x: float
  start_y: float
  angle: float
  length: float
  width: float
  amplitude: float
  taper: float

  def density(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    direction_x, direction_y = np.cos(self.angle), np.sin(self.angle)
    along = np.clip((x - self.start_x) * direction_x
                    + (y - self.start_y) * direction_y, 0.0, self.length)
    across = np.hypot(x - self.start_x - along * direction_x,
                      y - self.start_y - along * direction_y)
    fade = 1.0 - self.taper * along / self.length + 1e-3  # Keeps the tip's width above 0.
    return self.amplitude * fade * np.exp(-0.5 * (across / (self.width * fade)) ** 2)


@dataclasses.dataclass(frozen=True)
class _Intensity:
  """Per-patient grey-level transform, offset + gain * level ** gamma, and noise."""
  gain: float
  offset: float
  gamma: float
  smooth_noise: float
  fine_noise: float


@dataclasses.dataclass(frozen=True)
class _ChestXray:
  """Anatomy and findings of one synthetic frontal chest X-ray patient."""
  body: _Ellipse
  lungs: tuple[_Ellipse, _Ellipse]
  heart: _Ellipse
  diaphragm_heights: tuple[float, float]
  diaphragm_curvature: float
  background_level: float
  tissue_level: float
  lung_depth: float
  spine_level: float
  spine_width: float
  rib_period: float
  rib_curvature: float
  rib_phase: float
  rib_level: float
  bones: tuple[_Segment, ...]
  vessels: tuple[_Segment, ...]
  findings: tuple[_Blob, ...]

  def render(self, x: np.ndarray, y: np.ndarray, texture: np.ndarray) -> np.ndarray:
    """Grey levels before noise and the patient's intensity transform."""
    body = self.body.mask(x, y)
    lung = np.zeros_like(x)
    darkness = np.zeros_like(x)
    for lung_field, diaphragm_height in zip(self.lungs, self.diaphragm_heights):
      dome = diaphragm_height + self.diaphragm_curvature * (x - lung_field.center_x) ** 2
      inside = lung_field.mask(x, y) * _sigmoid((dome - y) / EDGE_WIDTH)
      lung = np.maximum(lung, inside)
      # Soft tissue overlies the lung edges, so lungs are darkest in the middle.
      darkness = np.maximum(darkness, inside * (
          1.0 - 0.35 * np.minimum(lung_field.radius(x, y), 1.0) ** 2))
    darkness *= 1.0 - self.heart.mask(x, y)
    lung *= 1.0 - self.heart.mask(x, y)
    image = self.background_level + (self.tissue_level - self.background_level) * body
    image += body * (self.spine_level * np.exp(
        -0.5 * ((x - self.body.center_x) / self.spine_width) ** 2)
                     + _density(self.bones, x, y))
    ribs = (0.5 + 0.5 * np.cos(2 * np.pi * (
        (y - self.rib_curvature * (x - self.body.center_x) ** 2) / self.rib_period
        + self.rib_phase))) ** 4
    image -= self.lung_depth * darkness
    findings = np.minimum(_density(self.findings, x, y) * texture, self.lung_depth)
    image += lung * (self.rib_level * ribs + _density(self.vessels, x, y) + findings)
    return image


@dataclasses.dataclass(frozen=True)
class _ChestCt:
  """Anatomy and findings of one synthetic axial chest CT patient."""
  body: _Ellipse
  rim_width: float
  lungs: tuple[_Ellipse, _Ellipse]
  mediastinum: _Ellipse
  vertebra: _Ellipse
  aorta: _Ellipse
  background_level: float
  rim_level: float
  tissue_level: float
  lung_level: float
  bone_level: float
  rib_count: int
  rib_phase: float
  vessels: tuple[_Blob, ...]
  findings: tuple[_Blob, ...]

  def render(self, x: np.ndarray, y: np.ndarray, texture: np.ndarray) -> np.ndarray:
    """Grey levels before noise and the patient's intensity transform."""
    body = self.body.mask(x, y)
    lung = np.maximum(self.lungs[0].mask(x, y), self.lungs[1].mask(x, y))
    lung *= 1.0 - self.mediastinum.mask(x, y)
    image = self.background_level + (self.rim_level - self.background_level) * body
    image += (self.tissue_level - self.rim_level) * self.body.shrunk(self.rim_width).mask(x, y)
    rib_ring = self.body.shrunk(2.0 * self.rim_width)
    ring_distance = (rib_ring.radius(x, y) - 1.0) * rib_ring.radius_y
    angle = np.arctan2(y - rib_ring.center_y, x - rib_ring.center_x)
    ribs = np.exp(-0.5 * (ring_distance / 0.02) ** 2) * np.clip(
        np.cos(self.rib_count * angle + self.rib_phase) * 3.0 - 2.0, 0.0, 1.0)
    bone = np.maximum(ribs * (y > rib_ring.center_y - 0.5 * rib_ring.radius_y),
                      self.vertebra.mask(x, y))
    image += (self.bone_level - self.tissue_level) * bone
    image += 0.08 * self.aorta.mask(x, y)
    image += (self.lung_level - self.tissue_level) * lung
    findings = np.minimum(_density(self.findings, x, y) * texture,
                          self.tissue_level - self.lung_level)
    image += lung * (_density(self.vessels, x, y) + findings)
    return image


def _sigmoid(values: np.ndarray) -> np.ndarray:
  return 0.5 + 0.5 * np.tanh(0.5 * values)


def _density(shapes: Sequence, x: np.ndarray, y: np.ndarray) -> np.ndarray:
  total = np.zeros_like(x)
  for shape in shapes:
    total += shape.density(x, y)
  return total


def _smooth_noise(rng: np.random.Generator, size: int, sigma: float) -> np.ndarray:
  """Gaussian noise blurred by `sigma` pixels, with unit standard deviation."""
  frequency_y = np.fft.fftfreq(size)[:, None]
  frequency_x = np.fft.rfftfreq(size)[None, :]
  transfer = np.exp(-2.0 * (np.pi * sigma) ** 2 * (frequency_x ** 2 + frequency_y ** 2))
  noise = np.fft.irfft2(np.fft.rfft2(rng.standard_normal((size, size))) * transfer,
                        s=(size, size))
  return noise / noise.std()


def _side(lung_field: _Ellipse, midline: float) -> float:
  return 1.0 if lung_field.center_x > midline else -1.0


def _draw_opacities(rng: np.random.Generator, lungs: tuple[_Ellipse, _Ellipse],
                    midline: float, angles: tuple[float, float],
                    lung_depth: float) -> tuple[_Blob, ...]:
  """2 to 6 soft ground-glass blobs near the outer edges of one or both lungs."""
  if rng.random() < SUBTLE_OPACITY_FRACTION:
    contrast = rng.uniform(*SUBTLE_OPACITY_CONTRAST)
  else:
    contrast = rng.uniform(*CLEAR_OPACITY_CONTRAST)
  bilateral = rng.random() < 0.7
  first_lung = rng.integers(2)
  blobs = []
  for _ in range(rng.integers(2, 7)):
    lung_field = lungs[rng.integers(2) if bilateral else first_lung]
    center = lung_field.point(_side(lung_field, midline), rng.uniform(*angles),
                              rng.uniform(0.55, 0.9))
    sigma = rng.uniform(0.08, 0.15)
    blobs.append(_Blob(*center, sigma, sigma * rng.uniform(1.0, 1.5),
                       contrast * lung_depth * rng.uniform(0.7, 1.0)))
  return tuple(blobs)


def _draw_confounders(rng: np.random.Generator, lungs: tuple[_Ellipse, _Ellipse],
                      midline: float, lung_depth: float) -> list[_Blob]:
  """Findings of a normal patient: hilar brightening and a small nodule, each optional."""
  blobs = []
  for lung_field in lungs:
    if rng.random() < 0.5:
      sigma = rng.uniform(0.06, 0.1)
      center = lung_field.point(_side(lung_field, midline), np.pi + rng.normal(0.0, 0.3),
                                rng.uniform(0.5, 0.7))
      blobs.append(_Blob(*center, sigma, sigma, lung_depth * rng.uniform(0.2, 0.4)))
  if rng.random() < 0.35:
    lung_field = lungs[rng.integers(2)]
    sigma = rng.uniform(0.015, 0.03)
    center = lung_field.point(1.0, rng.uniform(-np.pi, np.pi), 0.9 * np.sqrt(rng.random()))
    blobs.append(_Blob(*center, sigma, sigma, lung_depth * rng.uniform(0.4, 0.7)))
  return blobs


def _draw_consolidation(rng: np.random.Generator, lungs: tuple[_Ellipse, _Ellipse],
                        lung_depth: float) -> _Consolidation:
  """A lower-lobe consolidation (most often) or a middle-zone one, in one lung."""
  lung_field = lungs[rng.integers(2)]
  top, height = lung_field.center_y - lung_field.radius_y, 2 * lung_field.radius_y
  if rng.random() < 0.6:
    fissure = top + height * rng.uniform(0.45, 0.6)
    bottom = top + 2 * height  # Down to the diaphragm.
  else:
    fissure = top + height * rng.uniform(0.2, 0.35)
    bottom = fissure + height * rng.uniform(0.25, 0.35)
  return _Consolidation(lung_field, fissure, rng.uniform(-0.3, 0.3), bottom,
                        lung_depth * rng.uniform(0.6, 1.0))


def _draw_intensity(rng: np.random.Generator) -> _Intensity:
  """Draws brightness, contrast and noise, alike for both classes."""
  return _Intensity(gain=rng.uniform(0.7, 1.15), offset=rng.uniform(-0.04, 0.08),
                    gamma=rng.uniform(0.8, 1.25), smooth_noise=rng.uniform(0.01, 0.025),
                    fine_noise=rng.uniform(0.01, 0.02))


def _draw_chest_xray(rng: np.random.Generator, label: str) -> _ChestXray:
  """Draws the anatomy of one chest X-ray patient and the findings of its class `label`."""
  is_covid = label == 'COVID'
  body = _Ellipse(rng.normal(0.0, 0.03), rng.uniform(0.25, 0.35),
                  rng.uniform(0.9, 1.0), rng.uniform(1.2, 1.3))
  separation = rng.uniform(0.4, 0.46)
  lung_y = rng.uniform(-0.15, -0.05)
  lung_radius_x = rng.uniform(0.28, 0.33)
  lung_radius_y = rng.uniform(0.6, 0.68)
  taper = rng.uniform(0.15, 0.3)
  lungs = tuple(_Ellipse(body.center_x + side * separation + rng.normal(0.0, 0.01),
                         lung_y, lung_radius_x * rng.uniform(0.95, 1.05),
                         lung_radius_y * rng.uniform(0.95, 1.05), taper)
                for side in (-1, 1))
  heart = _Ellipse(body.center_x + rng.uniform(0.08, 0.16),
                   lung_y + lung_radius_y * rng.uniform(0.5, 0.7),
                   rng.uniform(0.22, 0.28), rng.uniform(0.18, 0.24))
  diaphragm = lung_y + lung_radius_y * rng.uniform(0.7, 0.85)
  lung_depth = rng.uniform(0.25, 0.35)
  clavicle_y = lung_y - lung_radius_y * rng.uniform(0.65, 0.8)
  clavicle_level = rng.uniform(0.06, 0.12)
  clavicle_tilt = np.pi * rng.uniform(0.04, 0.1)
  bones = tuple(
      _Segment(body.center_x + side * 0.08, clavicle_y,
               -clavicle_tilt if side > 0 else np.pi + clavicle_tilt,
               rng.uniform(0.6, 0.7), 0.025, clavicle_level, 0.3)
      for side in (-1, 1))
  vessel_level = rng.uniform(0.03, 0.06) * (1.0 if is_covid else rng.uniform(1.0, 1.6))
  vessels = []
  for lung_field in lungs:
    side = _side(lung_field, body.center_x)
    hilum_x = lung_field.center_x - side * 0.6 * lung_field.radius_x
    for _ in range(rng.integers(5, 9)):
      angle = rng.uniform(-0.6 * np.pi, 0.6 * np.pi)
      start_x, start_y = rng.normal((hilum_x, lung_y + 0.1), 0.04)
      vessels.append(_Segment(start_x, start_y, angle if side > 0 else np.pi - angle,
                              rng.uniform(0.15, 0.35), rng.uniform(0.008, 0.015),
                              vessel_level * rng.uniform(0.6, 1.0), 1.0))
  if is_covid:
    findings = _draw_opacities(rng, lungs, body.center_x, CXR_OPACITY_ANGLES, lung_depth)
  else:
    findings = tuple(_draw_confounders(rng, lungs, body.center_x, lung_depth))
  if label == 'Pneumonia':
    findings += (_draw_consolidation(rng, lungs, lung_depth),)
  return _ChestXray(
      body=body, lungs=lungs, heart=heart,
      diaphragm_heights=(diaphragm, diaphragm + rng.uniform(0.0, 0.06)),
      diaphragm_curvature=rng.uniform(1.5, 3.0),
      background_level=rng.uniform(0.02, 0.08), tissue_level=rng.uniform(0.5, 0.6),
      lung_depth=lung_depth, spine_level=rng.uniform(0.08, 0.15),
      spine_width=rng.uniform(0.06, 0.09), rib_period=rng.uniform(0.14, 0.18),
      rib_curvature=rng.uniform(0.5, 0.9), rib_phase=rng.uniform(0.0, 1.0),
      rib_level=rng.uniform(0.015, 0.035), bones=bones, vessels=tuple(vessels),
      findings=findings)


def _draw_chest_ct(rng: np.random.Generator, is_covid: bool) -> _ChestCt:
  """Draws the anatomy of one axial chest CT patient and the findings of its class."""
  body = _Ellipse(rng.normal(0.0, 0.03), rng.uniform(-0.04, 0.1),
                  rng.uniform(0.8, 0.93), rng.uniform(0.58, 0.72))
  separation = rng.uniform(0.33, 0.42)
  lung_radius_x = rng.uniform(0.25, 0.34)
  lung_radius_y = body.radius_y * rng.uniform(0.66, 0.8)
  lung_y = body.center_y - rng.uniform(0.0, 0.05)
  taper = rng.uniform(0.05, 0.2)
  lungs = tuple(_Ellipse(body.center_x + side * separation + rng.normal(0.0, 0.01),
                         lung_y, lung_radius_x * rng.uniform(0.95, 1.05),
                         lung_radius_y * rng.uniform(0.95, 1.05), taper)
                for side in (-1, 1))
  mediastinum = _Ellipse(body.center_x, lung_y - 0.1, rng.uniform(0.13, 0.17),
                         lung_radius_y * rng.uniform(0.7, 0.85))
  vertebra = _Ellipse(body.center_x, body.center_y + body.radius_y - rng.uniform(0.2, 0.25),
                      rng.uniform(0.08, 0.1), rng.uniform(0.08, 0.1))
  lung_level = rng.uniform(0.05, 0.12)
  tissue_level = rng.uniform(0.45, 0.55)
  lung_depth = tissue_level - lung_level
  vessels = []
  for lung_field in lungs:
    side = _side(lung_field, body.center_x)
    for _ in range(rng.integers(6, 12)):
      center = lung_field.point(side, rng.uniform(-np.pi, np.pi),
                                0.85 * rng.random() ** 0.7)
      sigma = rng.uniform(0.008, 0.018)
      vessels.append(_Blob(*center, sigma, sigma * rng.uniform(1.0, 1.8),
                           lung_depth * rng.uniform(0.25, 0.55)))
  if is_covid:
    findings = _draw_opacities(rng, lungs, body.center_x, CT_OPACITY_ANGLES, lung_depth)
  else:
    findings = _draw_confounders(rng, lungs, body.center_x, lung_depth)
    if rng.random() < 0.4:
      # Dependent density: a faint band along the posterior edges of both lungs.
      level = lung_depth * rng.uniform(0.08, 0.18)
      for lung_field in lungs:
        center = lung_field.point(1.0, 0.5 * np.pi, 0.9)
        findings.append(_Blob(*center, 0.6 * lung_field.radius_x, 0.06, level))
    findings = tuple(findings)
  return _ChestCt(
      body=body, rim_width=rng.uniform(0.04, 0.07), lungs=lungs, mediastinum=mediastinum,
      vertebra=vertebra,
      aorta=_Ellipse(body.center_x + rng.uniform(0.03, 0.1), vertebra.center_y - 0.2,
                     0.07, 0.07),
      background_level=rng.uniform(0.0, 0.04), rim_level=rng.uniform(0.65, 0.75),
      tissue_level=tissue_level, lung_level=lung_level, bone_level=rng.uniform(0.85, 0.95),
      rib_count=int(rng.integers(7, 10)), rib_phase=rng.uniform(0.0, 2 * np.pi),
      vessels=tuple(vessels), findings=findings)


def site(index: int) -> str:
  """The site of the patient numbered `index` within its modality and class."""
  return SITES[index % len(SITES)]


def patient_images(seed: int, modality: str, label: str, index: int,
                   size: int) -> tuple[list[np.ndarray], list[np.ndarray]]:
  """The 2 to 4 8-bit images of one patient, and the density its findings add to each.

  The findings are the opacities of a COVID patient and the normal findings
  of a normal one, in grey levels before noise and texture. Images are drawn
  from the patient's own random stream and carry its site's marker.
  """
  rng = np.random.default_rng([seed, MODALITIES.index(modality), LABELS.index(label), index])
  if modality == 'cxr':
    patient = _draw_chest_xray(rng, label)
  else:
    patient = _draw_chest_ct(rng, label == 'COVID')
  intensity = _draw_intensity(rng)
  margin = max(1, round(MAX_SHIFT * size))
  canvas = size + 2 * margin
  coordinates = (np.arange(canvas) - margin + 0.5) / size * 2.0 - 1.0
  y, x = np.meshgrid(coordinates, coordinates, indexing='ij')
  texture = np.exp(0.3 * _smooth_noise(rng, canvas, 0.025 * size))
  levels = patient.render(x, y, texture)
  findings = _density(patient.findings, x, y)
  images, densities = [], []
  for _ in range(rng.integers(MIN_IMAGES_PER_PATIENT, MAX_IMAGES_PER_PATIENT + 1)):
    top, left = rng.integers(0, 2 * margin + 1, size=2)
    image = levels[top:top + size, left:left + size]
    image = image + intensity.smooth_noise * _smooth_noise(rng, size, 0.06 * size)
    image = np.clip(image, 0.0, 1.0) ** intensity.gamma
    image = intensity.offset + intensity.gain * rng.uniform(0.97, 1.03) * image
    image += intensity.fine_noise * rng.standard_normal((size, size))
    if site(index) == MARKED_SITE:
      start, end = round(MARKER_OFFSET * size), round((MARKER_OFFSET + MARKER_SIZE) * size)
      image[start:end, start:end] = MARKER_LEVEL
    images.append(np.round(np.clip(image, 0.0, 1.0) * 255.0).astype(np.uint8))
    densities.append(findings[top:top + size, left:left + size])
  return images, densities


def _png_bytes(image: np.ndarray) -> bytes:
  buffer = io.BytesIO()
  Image.fromarray(image).save(buffer, format='PNG', optimize=False, compress_level=6)
  return buffer.getvalue()


def generate(root: str, seed: int = 0, patients_per_class: int = 40,
             image_size: int = 128, names: tuple[str, ...] = classes.BINARY) -> str:
  """Writes the synthetic data set of the class `names` under `root` and returns the
  manifest path. With three classes, the chest X-rays gain pneumonia patients.

  Also writes the parameters to `root/synthetic.json`, and returns at once if
  `root` already holds the data set of these parameters.

  Raises:
    ValueError: for bad parameters, or if `root` is not empty and does not hold
      the data set of these parameters.
  """
  if seed < 0:
    raise errors.UserError(f'seed must be a non-negative integer; got {seed}.')
  if patients_per_class < 1:
    raise errors.UserError(f'patients_per_class must be at least 1; got {patients_per_class}.')
  if image_size < MIN_IMAGE_SIZE:
    raise errors.UserError(f'image_size must be at least {MIN_IMAGE_SIZE}; got {image_size}.')
  parameters = {'seed': seed, 'patients_per_class': patients_per_class,
                'image_size': image_size, 'sites': list(SITES)}
  three_classes = len(names) > 2
  if three_classes:  # Two-class data sets written before this field match as they are.
    parameters['classes'] = list(names)
  manifest_path = os.path.join(root, sources.MANIFEST)
  parameters_path = os.path.join(root, PARAMETERS_NAME)
  if os.path.isdir(root) and os.listdir(root):
    existing = None
    if os.path.isfile(manifest_path) and os.path.isfile(parameters_path):
      with open(parameters_path) as f:
        existing = json.load(f)
    if existing == parameters:
      return manifest_path
    raise errors.UserError(
        f'{root} is not empty and does not hold the synthetic data set of '
        f'{parameters} (it holds {existing or "other files"}). Choose an empty '
        'folder, or delete this one.')
  rows = []
  for modality in MODALITIES:
    for label in THREE_CLASS_LABELS[modality] if three_classes else LABELS[:2]:
      os.makedirs(os.path.join(root, modality, label), exist_ok=True)
      for index in range(patients_per_class):
        patient_id = f'{modality}-{label.lower()}-{index:03d}'
        images, _ = patient_images(seed, modality, label, index, image_size)
        for number, image in enumerate(images):
          relpath = f'{modality}/{label}/{patient_id}_{number}.png'
          with open(os.path.join(root, relpath), 'wb') as f:
            f.write(_png_bytes(image))
          rows.append((relpath, label, modality, f'synthetic-{modality}-{site(index)}',
                       patient_id))
  with open(parameters_path, 'w') as f:
    json.dump(parameters, f, sort_keys=True)
  with open(manifest_path, 'w', newline='') as f:
    writer = csv.writer(f, lineterminator='\n')
    writer.writerow(MANIFEST_HEADER)
    writer.writerows(rows)
  return manifest_path
