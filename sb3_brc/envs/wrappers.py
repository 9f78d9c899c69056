"""Wrappers that fit one task into a multi-task env's shared spaces (padding, action rescaling, union actions), and
one task of a trained multi-task model on its own plain env (:func:`as_task_of`)."""

from collections.abc import Callable
from typing import Any, cast

import gymnasium as gym
import numpy as np
from gymnasium import spaces
from stable_baselines3.common.monitor import Monitor

from sb3_brc.common.task_layout import is_task_observation_space, observation_part, tag_observations


def pad_vector(obs: np.ndarray, size: int, declared: int, task: str) -> np.ndarray:
    """A task's observation flattened to float32 and zero-padded at the end to ``size`` entries, after a clear error
    for an observation of another size than the ``declared`` one of its space (padding would hide a shrinking one)."""
    flat = np.asarray(obs, dtype=np.float32).reshape(-1)
    if flat.size != declared:
        raise ValueError(
            f"Task {task!r} returned an observation of {flat.size} entries, but its observation space declares "
            f"{declared}: fix the env's observation or its observation_space (a multi-task model reads each task at "
            "its declared size)."
        )
    padded = np.zeros(size, np.float32)
    padded[: len(flat)] = flat
    return padded


class PadTask(gym.Wrapper):
    """Pads one task to the shared layout and records success at any step of an episode.

    :param env: The task's env (flat Box observations, bounded Box actions)
    :param obs_dim: Padded observation size
    :param act_dim: Padded action size
    :param name: The task's name (in errors)
    """

    def __init__(self, env: gym.Env, obs_dim: int, act_dim: int, name: str):
        super().__init__(env)
        check_task_spaces(env, name)
        action_space = cast(spaces.Box, env.action_space)  # check_task_spaces: a Box
        self.name = name
        self.task_obs_dim = int(np.prod(cast(spaces.Box, env.observation_space).shape))
        self.task_act_dim = int(np.prod(action_space.shape))
        self._low = action_space.low.astype(np.float64).reshape(-1)
        self._high = action_space.high.astype(np.float64).reshape(-1)
        self.observation_space = spaces.Box(-np.inf, np.inf, (obs_dim,), np.float32)
        self.action_space = spaces.Box(-1.0, 1.0, (act_dim,), np.float32)
        self._success = False

    def _pad(self, obs: np.ndarray) -> np.ndarray:
        return pad_vector(obs, cast(spaces.Box, self.observation_space).shape[0], self.task_obs_dim, self.name)

    def reset(self, **kwargs: Any) -> tuple[np.ndarray, dict]:
        obs, info = self.env.reset(**kwargs)
        self._success = False
        return self._pad(obs), info

    def step(self, action: np.ndarray) -> tuple[np.ndarray, float, bool, bool, dict]:
        # The policy's extra action entries are ignored (they still count in its entropy, as in BRC)
        own = np.clip(np.asarray(action, dtype=np.float64)[: self.task_act_dim], -1.0, 1.0)
        scaled = self._low + 0.5 * (own + 1.0) * (self._high - self._low)
        obs, reward, terminated, truncated, info = self.env.step(scaled.astype(self.env.action_space.dtype))
        success = info.get("success", info.get("is_success", info.get("solved")))
        if success is not None:
            self._success = self._success or bool(success)
            if terminated or truncated:
                info["is_success"] = self._success  # SB3's rollout/success_rate: success at any step
        return self._pad(obs), scalar_reward(reward, self.name), terminated, truncated, info


def scalar_reward(reward: Any, task: str) -> float:
    """A step's reward as a float, after a clear error naming the task for one that is not a single number."""
    if isinstance(reward, bool) or np.ndim(reward) != 0 or not np.issubdtype(np.asarray(reward).dtype, np.number):
        raise TypeError(
            f"Task {task!r} returned the reward {reward!r} ({type(reward).__name__}); a reward is a single number: "
            "fix the env's step() (a 1-element array: return float(reward))."
        )
    return float(reward)


def check_task_spaces(env: gym.Env, name: str) -> None:
    """Clear errors for task spaces a padded continuous-control layout cannot hold."""
    if not isinstance(env.action_space, spaces.Box):
        raise TypeError(
            f"Task {name!r} has a {type(env.action_space).__name__} action space; MultiTaskVecEnv needs Box actions."
        )
    if not (np.isfinite(env.action_space.low).all() and np.isfinite(env.action_space.high).all()):
        raise ValueError(
            f"Task {name!r} has unbounded actions {env.action_space}; wrap it with gymnasium.wrappers.ClipAction."
        )
    if (env.action_space.high <= env.action_space.low).any():
        raise ValueError(
            f"Task {name!r} has action bounds with high <= low ({env.action_space}): no action can vary there. Fix the "
            "env's action_space."
        )
    if not isinstance(env.observation_space, spaces.Box) or len(env.observation_space.shape) != 1:
        raise TypeError(
            f"Task {name!r} has observation space {env.observation_space}; MultiTaskVecEnv needs flat Box or Dict of Box."
        )


class UnionActions(gym.Wrapper):
    """One discrete task inside a shared ``Discrete(n_actions)`` space: union action ``legal[k]`` is the task's
    action ``k``; any other action is illegal and raises (mask it out with ``action_masks()``). Vector
    observations are zero-padded to ``obs_dim`` (float32); image observations pass through unchanged.

    :param env: The task's env (``Discrete`` actions)
    :param legal: Union ids of the task's actions, in the task's own order
    :param n_actions: Size of the union action space
    :param obs_dim: Padded size of vector observations (``None`` for images)
    :param name: The task's name (in errors)
    """

    def __init__(self, env: gym.Env, legal: list[int], n_actions: int, obs_dim: int | None, name: str):
        super().__init__(env)
        self.name = name
        self.task_obs_dim = int(np.prod(env.observation_space.shape or ()))
        self.legal = list(legal)
        self._task_action = {union: own for own, union in enumerate(self.legal)}
        self.action_space = spaces.Discrete(n_actions)
        self.obs_dim = obs_dim
        if obs_dim is not None:
            self.observation_space = spaces.Box(-np.inf, np.inf, (obs_dim,), np.float32)

    def _pad(self, obs: np.ndarray) -> np.ndarray:
        return obs if self.obs_dim is None else pad_vector(obs, self.obs_dim, self.task_obs_dim, self.name)

    def reset(self, **kwargs: Any) -> tuple[np.ndarray, dict]:
        obs, info = self.env.reset(**kwargs)
        return self._pad(obs), info

    def step(self, action: Any) -> tuple[np.ndarray, float, bool, bool, dict]:
        union = int(np.asarray(action).reshape(()))
        if union not in self._task_action:
            raise ValueError(
                f"Action {union} is illegal in task {self.name!r}: its legal union "
                f"actions are {self.legal}. Choose actions with the env's action_masks() (BRCDQN does)."
            )
        obs, reward, terminated, truncated, info = self.env.step(self._task_action[union])
        return self._pad(obs), scalar_reward(reward, self.name), terminated, truncated, info


def _is_monitored(env: gym.Env) -> bool:
    while isinstance(env, gym.Wrapper):
        if isinstance(env, Monitor):
            return True
        env = env.env
    return False


def flatten_dict_observation(env: gym.Env) -> gym.Env:
    """Dict observations (e.g. DMC's) flattened into one vector; other envs unchanged."""
    return gym.wrappers.FlattenObservation(env) if isinstance(env.observation_space, spaces.Dict) else env


def padded_continuous_task(make: Callable[[], gym.Env], obs_dim: int, act_dim: int, name: str) -> gym.Env:
    """A continuous task of a ``MultiTaskVecEnv``: flattened, padded, rescaled, its raw returns monitored."""
    return Monitor(PadTask(flatten_dict_observation(make()), obs_dim, act_dim, name))


def union_discrete_task(
    make: Callable[[], gym.Env], legal: list[int], n_actions: int, obs_dim: int | None, name: str
) -> gym.Env:
    """A discrete task of a ``DiscreteMultiTaskVecEnv``: its actions mapped into the union space, its returns
    monitored (Atari envs monitor whole games inside their life-loss wrapper already)."""
    env = make()
    return UnionActions(env if _is_monitored(env) else Monitor(env), legal, n_actions, obs_dim, name)


class TaskOfModel(gym.ObservationWrapper):
    """One task of a multi-task model on its own plain env: observations carry the task's id next to the padded
    observation, as the model's multi-task env gave them. Built by :func:`as_task_of`.

    :param env: The task's env, already padded and mapped to the model's action space
    :param task_id: The task's id in the model
    :param observation_space: The model's ``Dict(observation, task_id)`` space
    """

    def __init__(self, env: gym.Env, task_id: int, observation_space: spaces.Dict):
        super().__init__(env)
        self.task_id = task_id
        self.observation_space = observation_space

    def observation(self, observation: Any) -> dict[str, np.ndarray]:
        batch = tag_observations(np.asarray(observation)[None], [self.task_id])  # the vector env's encoding, one row
        return {key: value[0] for key, value in batch.items()}


def as_task_of(env: gym.Env, model: Any, task: str | int) -> TaskOfModel:
    """``env`` laid out as ``task`` of a multi-task ``model``, so that ``model.predict(obs)`` (or an exported
    policy's) acts on it and SB3's tools (``evaluate_policy``) run it: observations flattened, zero-padded and tagged
    with the task's id; actions taken in the model's space (continuous: its ``[-1, 1]`` box, the task's own entries
    rescaled to its bounds; discrete: the union space, the task's legal actions). The env must be the task as the
    model trained on it (same observation and action sizes; Atari: the same preprocessing).

    A wrapper rather than a ``task=`` argument of ``predict()``: the action comes back in the env's own space, so
    the user's loop (``obs, _ = env.reset()`` ... ``env.step(model.predict(obs)[0])``) stays SB3's.

    :param env: A plain Gymnasium env of one of the model's tasks
    :param model: A multi-task ``BRCSAC`` / ``BRCDQN`` (or an exported policy): anything with ``task_layout``,
        ``observation_space`` and ``action_space``
    :param task: The task's name (``model.task_names``) or id
    """
    layout = getattr(model, "task_layout", None)
    if layout is None or not is_task_observation_space(model.observation_space):
        raise ValueError(
            f"{type(model).__name__} was not trained on a multi-task env (it takes plain observations): use the env as it is."
        )
    if isinstance(task, str):
        if task not in layout.names:
            raise ValueError(f"Unknown task {task!r}; the model's tasks: {list(layout.names)}")
        index = layout.names.index(task)
    else:
        index = int(task) - layout.first_id
        if not 0 <= index < layout.num_tasks:
            last = layout.first_id + layout.num_tasks - 1
            raise ValueError(f"Task id {task} is not one of the model's ({layout.first_id}..{last})")
    name = layout.names[index]
    observation_shape = observation_part(model.observation_space).shape or ()
    obs_dim = observation_shape[0] if len(observation_shape) == 1 else None
    if obs_dim is not None:
        env = flatten_dict_observation(env)
    own_shape = tuple(env.observation_space.shape or ())
    own_size = int(np.prod(own_shape)) if obs_dim is not None else own_shape
    expected = int(np.prod(layout.observation_shapes[index])) if obs_dim is not None else layout.observation_shapes[index]
    if layout.legal_actions is not None:
        own_actions = int(getattr(env.action_space, "n", -1))
        inner: gym.Env = UnionActions(env, list(layout.legal_actions[index]), int(model.action_space.n), obs_dim, name)
    else:
        own_actions = int(np.prod(env.action_space.shape or ()))
        inner = PadTask(env, cast(int, obs_dim), int(np.prod(model.action_space.shape)), name)
    if own_size != expected or own_actions != layout.action_sizes[index]:
        raise ValueError(
            f"This env is not the model's task {name!r}: its observation size is {own_size} and its action size "
            f"{own_actions}, the task's were {expected} and {layout.action_sizes[index]}. Pass the env the model "
            "trained on for that task (the same id and wrappers)."
        )
    return TaskOfModel(inner, layout.first_id + index, model.observation_space)
