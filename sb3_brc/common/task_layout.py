"""Which task a sample belongs to: the one task-id encoding, its one decoder, and the task layout.

Every multi-task env of this package (continuous or discrete actions) gives ``Dict`` observations::

    {"observation": the task's own observation (padded to a shared shape), "task_id": int64 array of shape (1,)}

so the task id travels next to the observation through SB3's vector envs, ``DictReplayBuffer`` and
``predict()`` (as HER's goals do), and replay samples carry the task id of every transition as the reference
carries ``batch.task_ids``. A plain (single-task) observation belongs to task 0.
"""

from collections.abc import Sequence
from dataclasses import dataclass, fields
from typing import Any, TypeGuard

import numpy as np
import torch as th
from gymnasium import spaces

OBSERVATION_KEY = "observation"
TASK_ID_KEY = "task_id"
# Task ids are stored exactly (int64). The space does not bound them by the task count, so a model's spaces stay
# the same when tasks are added to it (transfer); models check the range themselves (check_task_ids).
TASK_ID_SPACE = spaces.Box(0, np.iinfo(np.int32).max, (1,), np.int64)


def task_observation_space(observation_space: spaces.Space) -> spaces.Dict:
    """The observation space of a multi-task env whose tasks share ``observation_space``."""
    return spaces.Dict({OBSERVATION_KEY: observation_space, TASK_ID_KEY: TASK_ID_SPACE})


def is_task_observation_space(space: spaces.Space) -> TypeGuard[spaces.Dict]:
    """Whether ``space`` is a multi-task env's ``Dict(observation, task_id)``."""
    return isinstance(space, spaces.Dict) and set(space.spaces) == {OBSERVATION_KEY, TASK_ID_KEY}


def observation_part(space: spaces.Space) -> spaces.Space:
    """The space of what networks encode: the ``observation`` entry of a multi-task space, else the space itself."""
    return space[OBSERVATION_KEY] if is_task_observation_space(space) else space


def tag_observations(observations: Any, task_ids: Sequence[int] | np.ndarray) -> dict[str, Any]:
    """Encode: a batch of observations (one row per task id) with their task ids, as multi-task envs give them."""
    column = np.asarray(task_ids, dtype=np.int64).reshape(-1, 1)
    return {OBSERVATION_KEY: observations, TASK_ID_KEY: column}


def split_task_observation(obs: Any) -> tuple[Any, th.Tensor]:
    """Decode: ``(observation part, task ids as a (batch,) long tensor)``; plain observations belong to task 0."""
    if isinstance(obs, dict) and TASK_ID_KEY in obs:
        return obs[OBSERVATION_KEY], obs[TASK_ID_KEY].reshape(-1).long()
    first = next(iter(obs.values())) if isinstance(obs, dict) else obs
    return obs, th.zeros(first.shape[0], dtype=th.long, device=first.device)


def map_observation_part(obs: Any, function: Any) -> Any:
    """``obs`` with ``function`` applied to its observation part (e.g. an image augmentation), task ids kept."""
    if isinstance(obs, dict) and TASK_ID_KEY in obs:
        return {**obs, OBSERVATION_KEY: function(obs[OBSERVATION_KEY])}
    return function(obs)


def legal_action_masks(legal_actions: Sequence[Sequence[int]], n_actions: int) -> np.ndarray:
    """``(tasks, n_actions)`` booleans, True where an action of the union space is legal in the task.

    :param legal_actions: Per task, the union-space ids of its actions
    :param n_actions: Size of the union action space
    """
    masks = np.zeros((len(legal_actions), n_actions), dtype=bool)
    for task, legal in enumerate(legal_actions):
        masks[task, list(legal)] = True
    return masks


def check_task_observation(observation: Any, space: spaces.Space) -> None:
    """A clear error for a plain observation given to a model of a multi-task env (whose observations are
    ``Dict(observation, task_id)``): SB3 would fail deep inside with an ``IndexError``."""
    if is_task_observation_space(space) and not (isinstance(observation, dict) and TASK_ID_KEY in observation):
        raise ValueError(
            "This model was trained on a multi-task env: it takes observations {'observation': ..., 'task_id': ...}, "
            f"got a plain {type(observation).__name__}. To run one of its tasks on its own env, wrap the env: "
            "env = sb3_brc.as_task_of(env, model, 'task name'); model.predict(obs) then acts on that env."
        )


def check_task_ids(obs: Any, num_tasks: int) -> th.Tensor:
    """The task ids of ``obs`` (:func:`split_task_observation`), after a clear error for ids that are not whole
    numbers (the decoder would truncate 0.7 to task 0) or that a model with ``num_tasks`` tasks has no embedding for.
    It reads the ids on the host: for acting, not inside the update."""
    if isinstance(obs, dict) and TASK_ID_KEY in obs and obs[TASK_ID_KEY].is_floating_point():
        raw = obs[TASK_ID_KEY]
        fractional = raw != raw.round()
        if bool(fractional.any()):
            raise ValueError(
                f"Task ids must be whole numbers, got {sorted(set(raw[fractional].tolist()))}: the task_id entry of an "
                "observation is the task's index in the model's tasks (model.task_names)."
            )
    task_ids = split_task_observation(obs)[1]
    outside = (task_ids < 0) | (task_ids >= num_tasks)
    if bool(outside.any()):
        raise ValueError(
            f"Task ids {sorted(set(task_ids[outside].tolist()))} are outside [0, {num_tasks}) of this model. Observations "
            "must come from the multi-task env the model was trained on (or, after add_tasks, from new_task_env(model))."
        )
    return task_ids


@dataclass(frozen=True)
class TaskLayout:
    """The tasks of a multi-task env, in task-id order: what a model trained on it depends on (saved with it).

    :param names: Unique task names
    :param observation_shapes: Each task's own observation shape (before padding)
    :param action_sizes: Each task's own action size (``Box``: its dimension; ``Discrete``: its number of actions)
    :param score_kinds: How each task's score is normalised (``"dmc"``, ``"metaworld"``, ``"atari"``, ``"gym"``, ...)
    :param legal_actions: Discrete tasks: the union-space ids of each task's actions, in the task's own order
    :param first_id: Id of the first task (a window of a larger model's tasks, e.g. the new tasks of a transfer)
    """

    names: tuple[str, ...]
    observation_shapes: tuple[tuple[int, ...], ...]
    action_sizes: tuple[int, ...]
    score_kinds: tuple[str, ...]
    legal_actions: tuple[tuple[int, ...], ...] | None = None
    first_id: int = 0

    def __post_init__(self) -> None:
        # Tuples all the way down: layouts compare by value and cannot be changed by accident
        set_ = object.__setattr__
        set_(self, "names", tuple(self.names))
        set_(self, "observation_shapes", tuple(tuple(int(d) for d in shape) for shape in self.observation_shapes))
        set_(self, "action_sizes", tuple(int(size) for size in self.action_sizes))
        set_(self, "score_kinds", tuple(self.score_kinds))
        if self.legal_actions is not None:
            set_(self, "legal_actions", tuple(tuple(int(a) for a in legal) for legal in self.legal_actions))
        per_task = [f.name for f in fields(self) if f.name != "first_id" and getattr(self, f.name) is not None]
        if len({len(getattr(self, name)) for name in per_task}) != 1:
            raise ValueError(f"A TaskLayout needs one entry per task in each of {per_task}")
        if len(set(self.names)) != len(self.names):
            raise ValueError(f"Task names must be unique, got {list(self.names)}; pass task_names=[...] to tell them apart.")

    @property
    def num_tasks(self) -> int:
        """Number of tasks."""
        return len(self.names)

    def name_of(self, task_id: int) -> str:
        """Name of task ``task_id``."""
        if not self.first_id <= task_id < self.first_id + self.num_tasks:
            raise ValueError(
                f"Task id {task_id} is out of range: these are tasks {self.first_id}..{self.first_id + self.num_tasks - 1}"
            )
        return self.names[task_id - self.first_id]

    def _per_task(self) -> dict[str, tuple]:
        return {f.name: getattr(self, f.name) for f in fields(self) if f.name not in ("first_id", "score_kinds")}

    def extended(self, new: "TaskLayout") -> "TaskLayout":
        """This layout followed by the tasks of ``new``, whose ids must continue this layout's (transfer)."""
        if new.first_id != self.first_id + self.num_tasks:
            raise ValueError(f"The new tasks' ids start at {new.first_id}, not at {self.first_id + self.num_tasks}.")
        overlap = set(new.names) & set(self.names)
        if overlap:
            raise ValueError(f"Tasks {sorted(overlap)} are already in the model; add only new tasks.")
        if (self.legal_actions is None) != (new.legal_actions is None):
            raise ValueError("Continuous and discrete tasks cannot share one model.")
        joined = {key: tuple(value) + tuple(getattr(new, key)) for key, value in self._per_task().items() if value is not None}
        return TaskLayout(**joined, score_kinds=self.score_kinds + new.score_kinds, first_id=self.first_id)

    def check_window(self, found: "TaskLayout") -> None:
        """Raise unless ``found`` (an env's layout) is a contiguous run of these tasks with the same ids and sizes."""
        start = found.first_id - self.first_id
        window = {
            key: None if value is None else value[start : start + found.num_tasks] for key, value in self._per_task().items()
        }
        if start < 0 or window != found._per_task():
            raise ValueError(
                f"The env's tasks {list(found.names)} (ids from {found.first_id}, observation shapes "
                f"{list(found.observation_shapes)}, action sizes {list(found.action_sizes)}) differ from the model's "
                f"{list(self.names)} (observation shapes {list(self.observation_shapes)}, action sizes "
                f"{list(self.action_sizes)}). Build the env with the same tasks in the same order (e.g. the same "
                "make_suite name); new tasks go through sb3_brc.add_tasks(model, env)."
            )


def task_layout_of(env: Any) -> TaskLayout | None:
    """The :class:`TaskLayout` of a multi-task env (``None`` for any other env)."""
    layout = getattr(env, "layout", None)
    return layout if isinstance(layout, TaskLayout) else None


def num_tasks_of(env: Any) -> int:
    """Number of tasks an env carries (1 for a plain env)."""
    layout = task_layout_of(env)
    return layout.num_tasks if layout is not None else 1
