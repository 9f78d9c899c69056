"""HumanoidBench tasks (Sferrazza et al. 2024, ``carlosferrazza/humanoid-bench``) as the BRC paper trains on them.

The upstream ``humanoid_bench`` package is not on the package index and pins an older stack (gymnasium 0.29,
mujoco 3.1, torch 2.3, jax): install it with ``pip install --no-deps``. :func:`import_humanoidbench` makes the
unmodified package work with this package's stack (gymnasium 1.4, mujoco 3.3, dm_control 1.0.28, no jax), and
:func:`make_humanoidbench` builds a task headless with clear errors for tasks that cannot load.
"""

import difflib
import importlib
import importlib.util
import re
import sys
import types

import gymnasium as gym

INSTALL_HINT = "pip install --no-deps git+https://github.com/carlosferrazza/humanoid-bench"

# The robots upstream registers ids for (`humanoid_bench/env.py` ROBOTS): ids read "<robot>-<task>-v0"
ROBOTS = ("h1", "h1hand", "h1simplehand", "h1strong", "h1touch", "g1")
_TASK_ID = re.compile(rf"({'|'.join(ROBOTS)})-[a-z_]+-v0")

# The BRC paper's HumanoidBench tasks: the 9 locomotion tasks without hands (reference `jaxrl/env_names.py`)
H1_TASKS = [f"h1-{name}-v0" for name in ("walk", "stand", "run", "stair", "crawl", "pole", "slide", "hurdle", "maze")]
# ... and the 28 tasks with hands of its released results (`results/` of the reference repository)
H1HAND_TASKS = [
    f"h1hand-{name}-v0"
    for name in (
        "balance_hard",
        "balance_simple",
        "basketball",
        "bookshelf_hard",
        "bookshelf_simple",
        "cabinet",
        "crawl",
        "cube",
        "door",
        "hurdle",
        "insert_normal",
        "insert_small",
        "maze",
        "pole",
        "powerlift",
        "push",
        "reach",
        "room",
        "run",
        "sit_hard",
        "sit_simple",
        "slide",
        "spoon",
        "stair",
        "stand",
        "truck",
        "walk",
        "window",
    )
]

# Upstream's `humanoid_bench/mjx/flax_to_torch.py` imports jax at module level, and `humanoid_bench/wrappers.py`,
# `envs/push.py`, `envs/reach.py`, `envs/package.py` import it, so `import humanoid_bench` needs jax although only
# the hierarchical `policy_type="reach_*"` option uses that module
_FLAX_TO_TORCH = "humanoid_bench.mjx.flax_to_torch"


class _NeedsJax:
    """Stands in for ``TorchModel`` / ``TorchPolicy`` of ``humanoid_bench.mjx.flax_to_torch`` when jax is absent."""

    def __init__(self, *args, **kwargs):
        raise ImportError(
            "HumanoidBench's hierarchical policy_type='reach_*' option needs jax (humanoid_bench.mjx.flax_to_torch); "
            "install jax to use it. The flat tasks of the BRC paper do not need it."
        )


def is_humanoidbench_id(name: str) -> bool:
    """Whether ``name`` reads as a HumanoidBench id (``"h1-walk-v0"``, ``"h1hand-push-v0"``)."""
    return _TASK_ID.fullmatch(name) is not None


def import_humanoidbench() -> types.ModuleType:
    """Import ``humanoid_bench`` (which registers its ids with Gymnasium), working around what the unmodified
    upstream package needs that this stack lacks.

    :raises ImportError: ``humanoid_bench`` is not installed (the message says how to install it)
    """
    if importlib.util.find_spec("humanoid_bench") is None:
        raise ImportError(f"HumanoidBench tasks need the humanoid_bench package (not on the package index): {INSTALL_HINT}")
    if importlib.util.find_spec("jax") is None and _FLAX_TO_TORCH not in sys.modules:
        stub = types.ModuleType(_FLAX_TO_TORCH, "humanoid_bench's jax-based reach policies, unavailable without jax")
        vars(stub).update(TorchModel=_NeedsJax, TorchPolicy=_NeedsJax)
        sys.modules[_FLAX_TO_TORCH] = stub
    module = importlib.import_module("humanoid_bench")
    # Upstream's `humanoid_bench/dmc_deps/dmc_index.py` reads an old copy of dm_control's size table
    # (`dmc_deps/dmc_sizes.py`) that names mjModel fields newer MuJoCo no longer has (`flex_xvert0`): every env
    # fails at make. dm_control's own table matches the installed MuJoCo; dmc_index looks `sizes` up at call time
    dmc_index = importlib.import_module("humanoid_bench.dmc_deps.dmc_index")
    vars(dmc_index)["sizes"] = importlib.import_module("dm_control.mujoco.wrapper.mjbindings.sizes")
    return module


def make_humanoidbench(env_id: str, **kwargs) -> gym.Env:
    """A HumanoidBench task as the reference's ``jaxrl/envs.py`` builds it (``gym.make(env_id)`` after
    ``import humanoid_bench``): upstream's own episode length (1000 steps for h1 locomotion, 500 or 1000 with
    hands), float64 observations, actions in ``[-1, 1]``.

    :param env_id: HumanoidBench id (``"h1-walk-v0"``)
    :param kwargs: Passed to ``gym.make``; ``render_mode`` defaults to ``None``
    :raises FileNotFoundError: The installed ``humanoid_bench`` lacks the task's assets
    :raises RuntimeError: MuJoCo rejects the task's upstream model
    """
    import_humanoidbench()
    if env_id not in gym.registry:
        close = difflib.get_close_matches(env_id, [name for name in gym.registry if is_humanoidbench_id(name)], n=3)
        hint = f" Did you mean {', '.join(repr(name) for name in close)}?" if close else ""
        raise ValueError(f"Unknown HumanoidBench task {env_id!r}.{hint}")
    # Upstream's `humanoid_bench/env.py` defaults render_mode to "rgb_array", which opens an offscreen renderer
    # at construction and fails without a display: training needs no frames
    kwargs.setdefault("render_mode", None)
    try:
        return gym.make(env_id, **kwargs)
    except OSError as error:
        # Gymnasium's MujocoEnv raises OSError for a model file that is not there (a partial install)
        raise FileNotFoundError(
            f"HumanoidBench task {env_id!r}: its assets are missing from the installed humanoid_bench ({error}). "
            f"Install the full package: {INSTALL_HINT}"
        ) from error
    except ValueError as error:
        if not str(error).startswith("XML Error"):
            raise
        # e.g. h1hand-kitchen: upstream's `assets/kitchen/.../kettle_asset.xml` has a top-level named default
        # class, which MuJoCo 3.3 refuses
        reason = str(error).splitlines()[0]
        raise RuntimeError(
            f"HumanoidBench task {env_id!r} cannot be built: MuJoCo rejects its upstream model ({reason})"
        ) from error
