"""pytest-benchmark suites: `pytest benchmarks --benchmark-enable` (speed is measured here, never asserted).

Each suite includes a baseline case in the same group (a plain forward+backward of the shared backbone), so
results can be reported as ratios measured in the same run on the same machine.
"""

import os

import torch

os.environ.setdefault("SCOREBENCH_LOAD_PLUGINS", "")
# one intra-op thread, as in the tests: stable ratios on a shared 2-core machine
torch.set_num_threads(1)
