import os

os.environ.setdefault("MUJOCO_GL", "disable")

import pytest
import torch as th

# Small networks everywhere: the suite must stay fast on 2 CPU cores
TINY_POLICY = dict(net_arch=dict(pi=[16], qf=[16, 16]), n_atoms=11)
TINY_DQN = dict(net_arch=[16, 16], n_atoms=11)


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
