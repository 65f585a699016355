import os

# idle OpenMP threads sleep instead of spinning (2 shared cores; subprocesses inherit it); set before torch loads
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import sys  # noqa: E402
from pathlib import Path

import pytest  # noqa: E402
import torch  # noqa: E402

# tests import their helpers (tests/golden.py) as top-level modules
sys.path.insert(0, str(Path(__file__).parent))

torch.set_num_threads(int(os.environ.get("GVC_TEST_THREADS", "2")))


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs CUDA")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)
