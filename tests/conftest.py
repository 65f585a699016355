import os
import sys
from pathlib import Path

import pytest
import torch

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
