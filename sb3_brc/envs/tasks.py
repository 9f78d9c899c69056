"""Task resolution: what a task name, Gymnasium id or callable means, and which optional package it needs."""

import difflib
import functools
import importlib
from collections.abc import Callable

import gymnasium as gym

# A task: a Gymnasium id, a DMC short name, a Meta-World task name, or a callable returning an env
TaskSpec = str | Callable[[], gym.Env]

EXTRAS = {"shimmy": "dmc", "dm_control": "dmc", "metaworld": "metaworld", "ale_py": "atari", "cv2": "atari"}

# Packages whose import registers an id namespace with Gymnasium
REGISTERING_MODULES = {"dm_control/": "shimmy", "Meta-World/": "metaworld", "ALE/": "ale_py"}


def require(module: str) -> object:
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


def _registered_ids() -> list[str]:
    try:
        importlib.import_module("shimmy")  # registers dm_control/* ids
    except ImportError:
        pass
    return list(gym.registry)


def task_kind(name: str) -> str:
    """``"dmc"``, ``"metaworld"`` or ``"gym"``: decides the normalised score of a task."""
    if name.startswith("dm_control/") or f"dm_control/{name}-v0" in gym.registry:
        return "dmc"
    return "metaworld" if name in metaworld_task_names() else "gym"


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
    (``"reach-v3"``, an MT1 env), a Gymnasium id (``"HalfCheetah-v5"``, ``"dm_control/walker-walk-v0"``), or a
    DMC short name (``"walker-walk"``).
    """
    if callable(task):
        return task, None, "custom"
    if not isinstance(task, str):
        raise TypeError(f"A task is a Gymnasium id, a task name or a callable returning an env, got {task!r}")
    if task in metaworld_task_names():
        return functools.partial(make_registered, "Meta-World/MT1", env_name=task, seed=seed), task, "metaworld"
    if task.startswith("dm_control/"):
        require("shimmy")
    registered = _registered_ids()
    if task not in registered and f"dm_control/{task}-v0" in registered:
        task = f"dm_control/{task}-v0"
    if task in registered:
        name = task.removeprefix("dm_control/").removesuffix("-v0") if task.startswith("dm_control/") else task
        return functools.partial(make_registered, task), name, task_kind(task)
    close = difflib.get_close_matches(task, metaworld_task_names() + registered, n=5, cutoff=0.5)
    hint = f" Did you mean {', '.join(repr(c) for c in close)}?" if close else ""
    raise ValueError(f"Unknown task {task!r}.{hint} Run `sb3-brc suites` to list suites and tasks.")
