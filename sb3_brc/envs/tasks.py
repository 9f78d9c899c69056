"""Task resolution: what a task name, Gymnasium id or callable means, and which optional package it needs."""

import difflib
import functools
import importlib
from collections.abc import Callable
from types import ModuleType

import gymnasium as gym
from gymnasium.wrappers import TimeLimit

from sb3_brc.envs.humanoidbench import is_humanoidbench_id, make_humanoidbench
from sb3_brc.envs.scores import atari_game
from sb3_brc.envs.shadowhand import ROTATE_SUFFIX, SHADOWHAND_KIND, is_shadowhand_task, make_shadowhand

#: A task: a Gymnasium id, a DMC short name, a Meta-World task name, or a callable returning an env
TaskSpec = str | Callable[[], gym.Env]

EXTRAS = {"shimmy": "dmc", "dm_control": "dmc", "metaworld": "metaworld", "ale_py": "atari", "cv2": "atari"}

# Packages whose import registers an id namespace with Gymnasium
REGISTERING_MODULES = {"dm_control/": "shimmy", "Meta-World/": "metaworld", "ALE/": "ale_py"}


def require(module: str) -> ModuleType:
    """Import an optional dependency, or explain which extra installs it."""
    try:
        return importlib.import_module(module)
    except ImportError as error:
        extra = EXTRAS.get(module, "all")
        raise ImportError(f"This task needs the optional package {module!r}: pip install 'sb3-brc[{extra}]'") from error


def metaworld_task_names() -> list[str]:
    """Meta-World's v3 task names (empty without the ``metaworld`` extra)."""
    try:
        return list(importlib.import_module("metaworld").ALL_V3_ENVIRONMENTS)
    except ImportError:
        return []


# Suffix of a Meta-World task name that asks for the BRC paper's version of the task
GOAL_OBSERVABLE = "-goal-observable"

# Episode length of Meta-World tasks in the BRC paper (the reference's TimeLimit; Meta-World's own is 500)
PAPER_METAWORLD_STEPS = 200


def make_goal_observable_metaworld(name: str, seed: int | None = None) -> gym.Env:
    """A Meta-World task as the BRC paper trains on it: the goal-observable env (goal position in the last 3 of
    the 39 observation entries) with 200-step episodes, built as the reference's ``jaxrl/envs.py`` builds its
    ``"<name>-v2-goal-observable"`` tasks. The reference used v2 envs, which Meta-World 3 no longer ships: this
    is the v3 version.

    :param name: Meta-World task name (``"reach-v3"``)
    :param seed: Constructor seed: it fixes the goal and initial positions for every episode (Meta-World ignores
        ``reset(seed=...)``); ``None`` draws them from NumPy's global generator
    """
    constructor = require("metaworld").ALL_V3_ENVIRONMENTS_GOAL_OBSERVABLE[name + GOAL_OBSERVABLE]
    return TimeLimit(constructor(seed=seed), PAPER_METAWORLD_STEPS)


def _registered_ids() -> list[str]:
    # Importing these registers their id namespaces (dm_control/*, ALE/*); either may be absent (optional extras)
    for module in ("shimmy", "ale_py"):
        try:
            importlib.import_module(module)
        except ImportError:
            pass
    return list(gym.registry)


def task_kind(name: str) -> str:
    """``"dmc"``, ``"metaworld"``, ``"atari"``, ``"humanoidbench"`` or ``"gym"``: decides the normalised score of a task."""
    if is_humanoidbench_id(name):
        return "humanoidbench"
    if name.startswith("dm_control/") or f"dm_control/{name}-v0" in gym.registry:
        return "dmc"
    if name.startswith("ALE/"):
        return "atari"
    return "metaworld" if name in metaworld_task_names() else "gym"


def _short_name(env_id: str) -> str:
    """Task name of a registered id: DMC's ``"walker-walk"``; an ALE game's name (``"ALE/Pong-v5"``: ``"Pong"``, the
    name its human-normalised score is listed under); otherwise the id itself."""
    if env_id.startswith("dm_control/"):
        return env_id.removeprefix("dm_control/").removesuffix("-v0")
    if env_id.startswith("ALE/"):
        return atari_game(env_id)
    return env_id


def make_registered(env_id: str, **kwargs) -> gym.Env:
    """``gym.make`` that first imports the package registering ``env_id``: a ``SubprocVecEnv`` worker starts
    without the imports of the parent process, so ``dm_control/*``, ``Meta-World/*`` or ``ALE/*`` ids are unknown
    there until that package is imported."""
    for prefix, module in REGISTERING_MODULES.items():
        if env_id.startswith(prefix):
            require(module)
    return gym.make(env_id, **kwargs)


def task_factory(task: TaskSpec, seed: int | None = None) -> tuple[Callable[[], gym.Env], str | None, str]:
    """Resolve a task spec into ``(factory, name, kind)``.

    Accepted: a callable returning an env (name taken from its spec later), a Meta-World task name
    (``"reach-v3"``, an MT1 env; ``"reach-v3-goal-observable"``, the BRC paper's version:
    :func:`make_goal_observable_metaworld`), a HumanoidBench id (``"h1-walk-v0"``,
    :func:`~sb3_brc.envs.humanoidbench.make_humanoidbench`), a ShadowHand id (gymnasium-robotics'
    ``"HandManipulateBlockRotateZ-v1"`` or a BRC object's ``"apple-rotate-v1"``, named ``"apple"``:
    :func:`~sb3_brc.envs.shadowhand.make_shadowhand`), a Gymnasium id (``"HalfCheetah-v5"``,
    ``"dm_control/walker-walk-v0"``), or a DMC short name (``"walker-walk"``).
    """
    if callable(task):
        return task, None, "custom"
    if not isinstance(task, str):
        raise TypeError(f"A task is a Gymnasium id, a task name or a callable returning an env, got {task!r}")
    if is_humanoidbench_id(task):
        # Recognised by its form, so that a missing humanoid_bench gives its install hint, not "unknown task"
        return functools.partial(make_humanoidbench, task), task, "humanoidbench"
    if is_shadowhand_task(task):
        # Before the registry lookup: these ids are registered too, but need the BRC observation (no achieved goal)
        return functools.partial(make_shadowhand, task), task.removesuffix(ROTATE_SUFFIX), SHADOWHAND_KIND
    if task in metaworld_task_names():
        return functools.partial(make_registered, "Meta-World/MT1", env_name=task, seed=seed), task, "metaworld"
    if task.endswith(GOAL_OBSERVABLE) and task.removesuffix(GOAL_OBSERVABLE) in metaworld_task_names():
        return functools.partial(make_goal_observable_metaworld, task.removesuffix(GOAL_OBSERVABLE), seed), task, "metaworld"
    if task.startswith("dm_control/"):
        require("shimmy")
    registered = _registered_ids()
    if task not in registered and f"dm_control/{task}-v0" in registered:
        task = f"dm_control/{task}-v0"
    if task in registered:
        return functools.partial(make_registered, task), _short_name(task), task_kind(task)
    close = difflib.get_close_matches(task, metaworld_task_names() + registered, n=5, cutoff=0.5)
    hint = f" Did you mean {', '.join(repr(c) for c in close)}?" if close else ""
    raise ValueError(f"Unknown task {task!r}.{hint} Run `sb3-brc suites` to list suites and tasks.")
