"""A forward pass of an EfficientNetB0 classifier that must not import TensorFlow.
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

import jax  # pylint: disable=wrong-import-position
import jax.numpy as jnp  # pylint: disable=wrong-import-position

from hybridcovid import models  # pylint: disable=wrong-import-position

model = models.HybridClassifier(backbones=('efficientnetb0',))
images = jnp.zeros((1, 32, 32, 3), jnp.uint8)
jax.jit(model.apply)(models.initialize(model, jax.random.key(0), images), images)
assert 'tensorflow' not in sys.modules, 'TensorFlow was imported'
