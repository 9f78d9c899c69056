"""The package's structure: one task-id encoding and its decoder, the task layout, layers that only point down."""

import ast
import pathlib
import subprocess
import sys

import numpy as np
import pytest
import torch as th
from gymnasium import spaces

from sb3_brc.common.task_layout import (
    TaskLayout,
    check_task_ids,
    map_observation_part,
    split_task_observation,
    tag_observations,
    task_observation_space,
)

PACKAGE = pathlib.Path(__file__).parents[1] / "sb3_brc"
# Each layer may import only the layers listed for it (and itself)
ALLOWED = {
    "common": {"common"},
    "envs": {"common", "envs"},
    "sac": {"common", "sac"},
    "dqn": {"common", "dqn"},
    "tools": {"common", "envs", "sac", "dqn", "tools"},
    "bench": {"common", "envs", "sac", "dqn", "tools", "bench"},
}


def _sb3_brc_imports(path: pathlib.Path) -> list[tuple[str, bool]]:
    """(imported sb3_brc module, whether the import sits inside a function) for each import of the file."""
    tree = ast.parse(path.read_text())
    nested = {id(node) for fn in ast.walk(tree) if isinstance(fn, ast.FunctionDef) for node in ast.walk(fn)}
    found = []
    for node in ast.walk(tree):
        names = [node.module] if isinstance(node, ast.ImportFrom) and node.module else []
        names += [alias.name for alias in node.names] if isinstance(node, ast.Import) else []
        found += [(name, id(node) in nested) for name in names if name.startswith("sb3_brc")]
    return found


@pytest.mark.parametrize("layer", sorted(ALLOWED))
def test_layers_point_down_with_no_hidden_imports(layer):
    for path in (PACKAGE / layer).rglob("*.py"):
        for module, inside_function in _sb3_brc_imports(path):
            target = module.split(".")[1] if "." in module else ""
            assert target in ALLOWED[layer], f"{path.relative_to(PACKAGE)} imports {module} (layer {target!r})"
            assert not inside_function, f"{path.relative_to(PACKAGE)} imports {module} inside a function"


def test_importing_the_package_keeps_the_matplotlib_backend():
    code = (
        "import matplotlib; matplotlib.use('svg'); import sb3_brc, sb3_brc.cli, sb3_brc.bench, sb3_brc.zoo; "
        "assert matplotlib.get_backend() == 'svg', matplotlib.get_backend()"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_task_id_encoding_round_trip():
    tagged = tag_observations(np.zeros((3, 4), np.float32), [5, 6, 7])
    assert tagged["task_id"].dtype == np.int64 and tagged["task_id"].shape == (3, 1)
    space = task_observation_space(spaces.Box(0, 1, (4,), np.float32))
    assert space.contains({"observation": np.zeros(4, np.float32), "task_id": np.array([5])})
    observation, task_ids = split_task_observation({key: th.as_tensor(value) for key, value in tagged.items()})
    assert observation.shape == (3, 4) and task_ids.tolist() == [5, 6, 7] and task_ids.dtype == th.long
    plain, zeros = split_task_observation(th.ones(2, 4))
    assert plain.shape == (2, 4) and zeros.tolist() == [0, 0]  # a plain observation belongs to task 0
    shifted = map_observation_part({"observation": th.ones(2, 3), "task_id": th.tensor([[1], [0]])}, lambda x: x + 1)
    assert th.equal(shifted["observation"], th.full((2, 3), 2.0)) and shifted["task_id"].tolist() == [[1], [0]]

    def tagged(ids):
        return {"observation": th.ones(len(ids), 3), "task_id": th.tensor(ids).reshape(-1, 1)}

    assert check_task_ids(tagged([0, 1]), 2).tolist() == [0, 1]
    assert check_task_ids(tagged([0.0, 1.0]), 2).tolist() == [0, 1]  # whole numbers in a float array are fine
    with pytest.raises(ValueError, match=r"Task ids \[2, 9\] are outside \[0, 2\)"):
        check_task_ids(tagged([0, 2, 9, 2]), 2)


def test_task_layout_window_and_extension():
    layout = TaskLayout(["a", "b", "c"], [(3,), (5,), (2,)], [2, 1, 2], ["gym"] * 3)
    assert layout.num_tasks == 3 and layout.name_of(1) == "b"
    assert layout == TaskLayout(("a", "b", "c"), [[3], [5], [2]], [2, 1, 2], ["gym"] * 3)  # compares by value
    layout.check_window(TaskLayout(["b", "c"], [(5,), (2,)], [1, 2], ["gym"] * 2, first_id=1))
    with pytest.raises(ValueError, match="differ from the model's"):
        layout.check_window(TaskLayout(["b", "c"], [(5,), (2,)], [1, 2], ["gym"] * 2))  # right tasks, wrong ids
    with pytest.raises(ValueError, match="differ from the model's"):
        layout.check_window(TaskLayout(["a"], [(4,)], [2], ["gym"]))  # another observation size
    grown = layout.extended(TaskLayout(["d"], [(1,)], [1], ["dmc"], first_id=3))
    assert grown.names == ("a", "b", "c", "d") and grown.score_kinds[-1] == "dmc" and grown.first_id == 0
    with pytest.raises(ValueError, match="ids start at 0, not at 3"):
        layout.extended(TaskLayout(["d"], [(1,)], [1], ["dmc"]))
    with pytest.raises(ValueError, match="already in the model"):
        layout.extended(TaskLayout(["a"], [(1,)], [1], ["dmc"], first_id=3))
    with pytest.raises(ValueError, match="Continuous and discrete"):
        layout.extended(TaskLayout(["d"], [(1,)], [2], ["gym"], legal_actions=[[0, 1]], first_id=3))
    with pytest.raises(ValueError, match="must be unique"):
        TaskLayout(["a", "a"], [(1,), (1,)], [1, 1], ["gym"] * 2)
    with pytest.raises(ValueError, match="one entry per task"):
        TaskLayout(["a", "b"], [(1,)], [1, 1], ["gym"] * 2)
    with pytest.raises(ValueError, match="out of range"):
        layout.name_of(3)
