"""MultiTaskVecEnv: many tasks with different spaces in one SB3 VecEnv, as in BRC's ``ParallelEnv``.

One sub-env per task, all stepped once per vector step (equal env steps per task). Each sub-env is wrapped,
innermost first, by ``FlattenObservation`` (Dict observations, e.g. DMC), :class:`PadTask` (float32
observations zero-padded at the end to the largest size; actions in ``Box(-1, 1, (max_act_dim,))`` of which
the task uses its own first ``act_dim`` entries, rescaled to its bounds) and ``Monitor`` (raw returns).
The wrapper then appends the task id as the last observation entry, ``terminal_observation`` included.
"""

import functools
from collections.abc import Callable, Sequence
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces
from stable_baselines3.common.monitor import Monitor
from stable_baselines3.common.vec_env import DummyVecEnv, SubprocVecEnv, VecEnvWrapper
from stable_baselines3.common.vec_env.base_vec_env import VecEnvObs, VecEnvStepReturn

TaskSpec = str | Callable[[], gym.Env]


def pad_vector(obs: np.ndarray, size: int) -> np.ndarray:
    """A task's observation flattened to float32 and zero-padded at the end to ``size`` entries."""
    flat = np.asarray(obs, dtype=np.float32).reshape(-1)
    padded = np.zeros(size, np.float32)
    padded[: len(flat)] = flat
    return padded


class PadTask(gym.Wrapper):
    """Pads one task to the shared layout and records success at any step of an episode.

    :param env: The task's env (flat Box observations, bounded Box actions)
    :param obs_dim: Padded observation size
    :param act_dim: Padded action size
    """

    def __init__(self, env: gym.Env, obs_dim: int, act_dim: int):
        super().__init__(env)
        check_task_spaces(env, "task")
        self.task_obs_dim = int(np.prod(env.observation_space.shape))
        self.task_act_dim = int(np.prod(env.action_space.shape))
        self._low = env.action_space.low.astype(np.float64).reshape(-1)
        self._high = env.action_space.high.astype(np.float64).reshape(-1)
        self.observation_space = spaces.Box(-np.inf, np.inf, (obs_dim,), np.float32)
        self.action_space = spaces.Box(-1.0, 1.0, (act_dim,), np.float32)
        self._success = False

    def _pad(self, obs: np.ndarray) -> np.ndarray:
        return pad_vector(obs, self.observation_space.shape[0])

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
        return self._pad(obs), float(reward), terminated, truncated, info


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
    if not isinstance(env.observation_space, spaces.Box) or len(env.observation_space.shape) != 1:
        raise TypeError(
            f"Task {name!r} has observation space {env.observation_space}; MultiTaskVecEnv needs flat Box or Dict of Box."
        )


def _flatten(env: gym.Env) -> gym.Env:
    return gym.wrappers.FlattenObservation(env) if isinstance(env.observation_space, spaces.Dict) else env


def _resolve_tasks(
    tasks: Sequence[TaskSpec],
    task_names: Sequence[str] | None,
    task_kinds: Sequence[str] | None,
    seed: int | None,
    transform: Callable[[gym.Env], gym.Env] = lambda env: env,
) -> tuple[list[Callable[[], gym.Env]], list[gym.Env], list[str], list[str]]:
    """Factories, one built instance (probe) of each task, unique names and score kinds."""
    from sb3_brc.envs.suites import task_factory  # suites import this module

    if isinstance(tasks, str) or len(tasks) == 0:
        raise ValueError(f"A multi-task env needs a non-empty list of tasks, got {tasks!r}")
    factories, names, kinds = zip(*(task_factory(task, seed) for task in tasks), strict=True)
    for given, what in ((task_names, "task names"), (task_kinds, "task kinds")):
        if given is not None and len(given) != len(factories):
            raise ValueError(f"{len(factories)} tasks but {len(given)} {what}")
    # Build each task once to read its spaces (and keep it, for in-process vectorisation)
    probes = [transform(factory()) for factory in factories]
    if task_names is None:
        task_names = [
            name or getattr(env.spec, "id", None) or f"task{i}"
            for i, (name, env) in enumerate(zip(names, probes, strict=True))
        ]
    if len(set(task_names)) != len(task_names):
        raise ValueError(f"Task names must be unique, got {list(task_names)}; pass task_names=[...] to tell them apart.")
    return list(factories), probes, list(task_names), list(task_kinds) if task_kinds is not None else list(kinds)


def _vectorize(
    probes: list[gym.Env],
    factories: list[Callable[[], gym.Env]],
    build: Callable[[Callable[[], gym.Env], int], gym.Env],
    vec_env_cls: type[DummyVecEnv] | type[SubprocVecEnv],
    vec_env_kwargs: dict[str, Any] | None,
) -> DummyVecEnv | SubprocVecEnv:
    """One sub-env per task, ``build(make, task_index)`` wrapping the task that ``make()`` returns. In-process the
    probes are reused; subprocesses rebuild their task from its factory (``build`` must then be picklable)."""
    in_process = vec_env_cls is DummyVecEnv
    makers = [(lambda env=env: env) if in_process else make for env, make in zip(probes, factories, strict=True)]
    env_fns = [functools.partial(build, make, index) for index, make in enumerate(makers)]
    probes.clear()  # in-process the sub-envs now hold them; subprocess runs do not need them any more
    return vec_env_cls(env_fns, **(vec_env_kwargs or {}))


class MultiTaskVecEnv(VecEnvWrapper):
    """Many tasks in one SB3 VecEnv: sub-env ``i`` runs task ``i``, observations carry the task id.

    Observation: ``Box(max_obs_dim + 1)``, float32; entries ``[0, obs_dim_i)`` hold task ``i``'s (flattened)
    observation, zeros up to ``max_obs_dim``, then the task id at index ``task_id_index = max_obs_dim``.
    Action: ``Box(-1, 1, (max_act_dim,))``; task ``i`` uses the first ``act_dim_i`` entries, rescaled to its
    own bounds. ``infos[i]`` gets ``task_id``, ``task_name``, SB3's ``TimeLimit.truncated``, ``episode``
    (raw return, from ``Monitor``) and ``is_success`` (success at any step) where the task reports success.

    :param tasks: Gymnasium ids (e.g. ``"dm_control/walker-walk-v0"``), suite task names (``"reach-v3"``),
        or callables returning an env, one per task
    :param task_names: Names for the tasks (default: derived from the ids; must be unique)
    :param task_kinds: ``"dmc"``, ``"metaworld"``, ``"gym"`` or ``"custom"`` per task, for normalised scores
        (default: derived from the ids)
    :param vec_env_cls: ``DummyVecEnv`` (default) or ``SubprocVecEnv`` (one process per task)
    :param vec_env_kwargs: Keyword arguments of ``vec_env_cls``
    :param seed: Seed of the sub-envs (task ``i`` gets ``seed + i``)
    :param obs_dim: Pad observations to this size instead of the largest task's (to fit a trained model)
    :param act_dim: Pad actions to this size instead of the largest task's
    :param first_task_id: Id of the first task (ids continue a trained model's when adding tasks to it)
    """

    def __init__(
        self,
        tasks: Sequence[TaskSpec],
        task_names: Sequence[str] | None = None,
        task_kinds: Sequence[str] | None = None,
        vec_env_cls: type[DummyVecEnv] | type[SubprocVecEnv] = DummyVecEnv,
        vec_env_kwargs: dict[str, Any] | None = None,
        seed: int | None = None,
        obs_dim: int | None = None,
        act_dim: int | None = None,
        first_task_id: int = 0,
    ):
        factories, probes, task_names, kinds = _resolve_tasks(tasks, task_names, task_kinds, seed, _flatten)
        for env, name in zip(probes, task_names, strict=True):
            check_task_spaces(env, name)
        self.task_names: list[str] = task_names
        self.task_kinds: list[str] = kinds
        self.obs_dims = [int(np.prod(env.observation_space.shape)) for env in probes]
        self.act_dims = [int(np.prod(env.action_space.shape)) for env in probes]
        self.max_obs_dim, self.max_act_dim = max(self.obs_dims), max(self.act_dims)
        for given, largest, what in ((obs_dim, self.max_obs_dim, "observation"), (act_dim, self.max_act_dim, "action")):
            if given is not None and given < largest:
                raise ValueError(
                    f"A task's {what} size ({largest}) exceeds the padded size {given}: these tasks do not fit that "
                    "layout (a model trained on it cannot take them)."
                )
        self.max_obs_dim, self.max_act_dim = obs_dim or self.max_obs_dim, act_dim or self.max_act_dim
        self.first_task_id = first_task_id
        self.task_id_index = self.max_obs_dim

        max_obs_dim, max_act_dim = self.max_obs_dim, self.max_act_dim  # plain values: factories go to subprocesses

        def build(make: Callable[[], gym.Env], _: int) -> gym.Env:
            return Monitor(PadTask(_flatten(make()), max_obs_dim, max_act_dim))

        venv = _vectorize(probes, factories, build, vec_env_cls, vec_env_kwargs)
        observation_space = spaces.Box(-np.inf, np.inf, (self.max_obs_dim + 1,), np.float32)
        super().__init__(venv, observation_space=observation_space)
        self._task_column = np.arange(first_task_id, first_task_id + self.num_tasks, dtype=np.float32)[:, None]
        if seed is not None:
            self.seed(seed)

    @property
    def num_tasks(self) -> int:
        return self.num_envs

    @property
    def layout(self) -> dict[str, Any]:
        """What a model trained on this env depends on: task order, names and sizes (saved with the model)."""
        return dict(
            task_names=list(self.task_names),
            obs_dims=list(self.obs_dims),
            act_dims=list(self.act_dims),
            first_task_id=self.first_task_id,
        )

    def normalized_score(self, index: int, mean_return: float, success_rate: float | None) -> float | None:
        """BRC's score of the ``index``-th task: DMC return / 1000, Meta-World success rate; ``None`` where no
        scale is defined."""
        kind = self.task_kinds[index]
        if kind == "dmc":
            return mean_return / 1000.0
        if kind == "metaworld":
            return success_rate
        return None

    def task_id(self, name: str) -> int:
        """Index of the task called ``name``."""
        if name not in self.task_names:
            raise ValueError(f"Unknown task {name!r}; this env has {self.task_names}")
        return self.first_task_id + self.task_names.index(name)

    def task_name(self, task_id: int) -> str:
        """Name of task ``task_id``."""
        last = self.first_task_id + self.num_tasks - 1
        if not self.first_task_id <= task_id <= last:
            raise ValueError(f"Task id {task_id} is out of range: this env has tasks {self.first_task_id}..{last}")
        return self.task_names[task_id - self.first_task_id]

    def tag(self, obs: np.ndarray, task_ids: np.ndarray | None = None) -> np.ndarray:
        """Append the task id column to padded observations (all tasks in order, or ``task_ids``)."""
        column = self._task_column if task_ids is None else np.asarray(task_ids, np.float32).reshape(-1, 1)
        return np.concatenate([np.asarray(obs, np.float32).reshape(len(column), -1), column], axis=1)

    def reset(self) -> VecEnvObs:
        return self.tag(self.venv.reset())

    def step_wait(self) -> VecEnvStepReturn:
        obs, rewards, dones, infos = self.venv.step_wait()
        for index, info in enumerate(infos):
            info["task_id"] = self.first_task_id + index
            info["task_name"] = self.task_names[index]
            if "terminal_observation" in info:
                info["terminal_observation"] = self._tag_one(info["terminal_observation"], info["task_id"])
        return self.tag(obs), rewards, dones, infos

    def _tag_one(self, obs: np.ndarray, task_id: int) -> Any:
        return self.tag(obs, [task_id])[0]

    def sample_actions(self) -> np.ndarray:
        """One uniformly random action per task (the random baseline of evaluations)."""
        return np.stack([self.action_space.sample() for _ in range(self.num_envs)])


class UnionActions(gym.Wrapper):
    """One discrete task inside a shared ``Discrete(n_actions)`` space: union action ``legal[k]`` is the task's
    action ``k``; any other action is illegal and raises (mask it out with ``action_masks()``). Vector
    observations are zero-padded to ``obs_dim`` (float32); image observations pass through unchanged.

    :param env: The task's env (``Discrete`` actions)
    :param legal: Union ids of the task's actions, in the task's own order
    :param n_actions: Size of the union action space
    :param obs_dim: Padded size of vector observations (``None`` for images)
    """

    def __init__(self, env: gym.Env, legal: list[int], n_actions: int, obs_dim: int | None):
        super().__init__(env)
        self.legal = list(legal)
        self._task_action = {union: own for own, union in enumerate(self.legal)}
        self.action_space = spaces.Discrete(n_actions)
        self.obs_dim = obs_dim
        if obs_dim is not None:
            self.observation_space = spaces.Box(-np.inf, np.inf, (obs_dim,), np.float32)

    def _pad(self, obs: np.ndarray) -> np.ndarray:
        return obs if self.obs_dim is None else pad_vector(obs, self.obs_dim)

    def reset(self, **kwargs: Any) -> tuple[np.ndarray, dict]:
        obs, info = self.env.reset(**kwargs)
        return self._pad(obs), info

    def step(self, action: Any) -> tuple[np.ndarray, float, bool, bool, dict]:
        union = int(np.asarray(action).reshape(()))
        if union not in self._task_action:
            raise ValueError(
                f"Action {union} is illegal in task {self.env.spec.id if self.env.spec else self.env}: its legal union "
                f"actions are {self.legal}. Choose actions with the env's action_masks() (BRCDQN does)."
            )
        obs, reward, terminated, truncated, info = self.env.step(self._task_action[union])
        return self._pad(obs), float(reward), terminated, truncated, info


def _is_monitored(env: gym.Env) -> bool:
    while isinstance(env, gym.Wrapper):
        if isinstance(env, Monitor):
            return True
        env = env.env
    return False


class DiscreteMultiTaskVecEnv(MultiTaskVecEnv):
    """Many discrete-action tasks (e.g. Atari games) in one SB3 VecEnv, one sub-env per task.

    Observation: ``Dict(obs=..., task_id=Box(1,))``. ``obs`` holds the task's observation: vector observations
    zero-padded to the largest size (float32), image observations (e.g. ``(4, 84, 84)`` uint8 frame stacks)
    unchanged, which must then have one shape for all tasks. Action: ``Discrete(n_actions)``, the union of the
    tasks' actions (Atari: ALE's 18 actions, each game's minimal set mapped in by name; other tasks: ``0..n-1``).
    :meth:`action_masks` gives each sub-env's legal actions (the sb3-contrib ``MaskablePPO`` convention).

    :param tasks: Callables returning an env, or Gymnasium ids, one per task (``Discrete`` actions)
    :param task_names: Names for the tasks (default: from the ids)
    :param task_kinds: ``"atari"`` (human-normalised score) or ``"gym"``/``"custom"`` per task
    :param vec_env_cls: ``DummyVecEnv`` (default) or ``SubprocVecEnv``
    :param vec_env_kwargs: Keyword arguments of ``vec_env_cls``
    :param seed: Seed of the sub-envs (task ``i`` gets ``seed + i``)
    :param first_task_id: Id of the first task
    """

    def __init__(
        self,
        tasks: Sequence[TaskSpec],
        task_names: Sequence[str] | None = None,
        task_kinds: Sequence[str] | None = None,
        vec_env_cls: type[DummyVecEnv] | type[SubprocVecEnv] = DummyVecEnv,
        vec_env_kwargs: dict[str, Any] | None = None,
        seed: int | None = None,
        first_task_id: int = 0,
    ):
        from sb3_brc.envs.atari import legal_union_actions

        factories, probes, task_names, kinds = _resolve_tasks(tasks, task_names, task_kinds, seed)
        shapes = []
        for env, name in zip(probes, task_names, strict=True):
            if not isinstance(env.action_space, spaces.Discrete):
                raise TypeError(
                    f"Task {name!r} has a {type(env.action_space).__name__} action space; DiscreteMultiTaskVecEnv needs "
                    "Discrete actions (continuous tasks go into MultiTaskVecEnv)."
                )
            if not isinstance(env.observation_space, spaces.Box):
                raise TypeError(f"Task {name!r} has observation space {env.observation_space}; a Box is needed.")
            shapes.append(tuple(env.observation_space.shape))
        images = [len(shape) > 1 for shape in shapes]
        if any(images) and (not all(images) or len(set(shapes)) > 1):
            raise ValueError(
                f"Image tasks must all have one observation shape (no padding for images), got {shapes} for {task_names}."
            )
        self.task_names, self.task_kinds = task_names, kinds
        self.obs_shapes = [list(shape) for shape in shapes]
        legal_and_sizes = [legal_union_actions(env) for env in probes]
        self.legal_actions = [legal for legal, _ in legal_and_sizes]
        self.n_actions = max(size for _, size in legal_and_sizes)
        self.first_task_id = first_task_id
        obs_dim = None if images[0] else max(int(np.prod(shape)) for shape in shapes)
        n_actions, legal_actions = self.n_actions, self.legal_actions

        def build(make: Callable[[], gym.Env], index: int) -> gym.Env:
            env = make()
            return UnionActions(env if _is_monitored(env) else Monitor(env), legal_actions[index], n_actions, obs_dim)

        venv = _vectorize(probes, factories, build, vec_env_cls, vec_env_kwargs)
        last_id = first_task_id + venv.num_envs - 1
        observation_space = spaces.Dict(obs=venv.observation_space, task_id=spaces.Box(0, max(last_id, 1), (1,), np.float32))
        VecEnvWrapper.__init__(self, venv, observation_space=observation_space)
        self._task_column = np.arange(first_task_id, last_id + 1, dtype=np.float32)[:, None]
        self._masks = np.zeros((self.num_tasks, self.n_actions), dtype=bool)
        for row, legal in enumerate(self.legal_actions):
            self._masks[row, legal] = True
        if seed is not None:
            self.seed(seed)

    @property
    def layout(self) -> dict[str, Any]:
        return dict(
            task_names=list(self.task_names),
            obs_shapes=[list(s) for s in self.obs_shapes],
            legal_actions=[list(a) for a in self.legal_actions],
            first_task_id=self.first_task_id,
        )

    def action_masks(self) -> np.ndarray:
        """``(num_envs, n_actions)`` booleans: the legal union actions of each sub-env's task."""
        return self._masks.copy()

    def sample_actions(self) -> np.ndarray:
        """One uniformly random legal action per task."""
        rng = self.action_space.np_random
        return np.array([legal[rng.integers(len(legal))] for legal in self.legal_actions])

    def normalized_score(self, index: int, mean_return: float, success_rate: float | None) -> float | None:
        """Atari: human-normalised score ``(R - random) / (human - random)``; otherwise as ``MultiTaskVecEnv``."""
        if self.task_kinds[index] == "atari":
            from sb3_brc.envs.atari import ATARI_SCORES, atari_game, human_normalized_score

            game = atari_game(self.task_names[index])
            return human_normalized_score(game, mean_return) if game in ATARI_SCORES else None
        return super().normalized_score(index, mean_return, success_rate)

    def tag(self, obs: Any, task_ids: np.ndarray | None = None) -> dict[str, np.ndarray]:
        column = self._task_column if task_ids is None else np.asarray(task_ids, np.float32).reshape(-1, 1)
        return {"obs": np.asarray(obs).reshape(len(column), *self.venv.observation_space.shape), "task_id": column}

    def _tag_one(self, obs: np.ndarray, task_id: int) -> dict[str, np.ndarray]:
        return {key: value[0] for key, value in self.tag(np.asarray(obs)[None], [task_id]).items()}
