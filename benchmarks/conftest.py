"""pytest-benchmark suites: `pytest benchmarks --benchmark-enable` (speed is measured here, never asserted).

Each suite includes a baseline case in the same group (a plain forward+backward of the shared backbone), so
results can be reported as ratios measured in the same run on the same machine.
"""

import os

import torch

os.environ.setdefault("SCOREBENCH_LOAD_PLUGINS", "")
torch.set_num_threads(min(2, torch.get_num_threads()))
