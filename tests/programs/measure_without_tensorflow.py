"""One inference measurement of the step-speed benchmark, which must import neither
TensorFlow nor h5py (neither is installed on the GPU machines).
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

from configs import default  # pylint: disable=wrong-import-position
from hybridcovid.benchmark import step_speed  # pylint: disable=wrong-import-position

config = default.experiment(('efficientnetb0',), ('cxr',))
config.data.image_size = 32
config.benchmark.steps = 1
step_speed.measure(config, 'inference', 2, 'float32')
assert not {'tensorflow', 'h5py'} & set(sys.modules), 'TensorFlow or h5py imported'
