import os

os.environ.setdefault("MUJOCO_GL", "disable")
# One torch thread in the CLI subprocesses too (read when torch is imported): `pytest -n 2` already runs one test
# per core, and two threads per test oversubscribe the cores (a zoo test ran 3x slower)
os.environ.setdefault("OMP_NUM_THREADS", "1")

import pytest
import torch as th
from stable_baselines3.common.logger import Logger

# Small networks everywhere: the suite must stay fast on 2 CPU cores
TINY_POLICY = dict(net_arch=dict(pi=[16], qf=[16, 16]), n_atoms=11)
TINY_DQN = dict(net_arch=[16, 16], n_atoms=11)


class RecordingLogger(Logger):
    """An SB3 logger that keeps the last value recorded under each key in ``records`` (and writes nothing)."""

    def __init__(self):
        super().__init__(folder=None, output_formats=[])
        self.records = {}

    def record(self, key, value, exclude=None):
        self.records[key] = value


@pytest.hookimpl(tryfirst=True)  # before `-m` deselects
def pytest_collection_modifyitems(items):
    """The notebooks (nbmake items) are long runs: ``slow``, like the longer learning checks."""
    for item in items:
        if item.path.suffix == ".ipynb":
            item.add_marker(pytest.mark.slow)


@pytest.fixture(autouse=True)
def _one_thread():
    th.set_num_threads(1)
    yield
