"""Runs prediction with Grad-CAM and checks that TensorFlow was never imported.

  python tests/programs/predict_without_tensorflow.py WORKDIR INPUT...
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

from hybridcovid import predict  # pylint: disable=wrong-import-position

predict.predict(sys.argv[1], sys.argv[2:], with_gradcam=True)
assert 'tensorflow' not in sys.modules, 'TensorFlow was imported'
