"""Many tasks with different spaces in one SB3 VecEnv, as in BRC's ``ParallelEnv``.

One sub-env per task, all stepped once per vector step (equal env steps per task). Observations are
``Dict(observation=<the task's observation in the shared shape>, task_id=<int64 (1,)>)`` for both env families
(``sb3_brc.common.task_layout``); ``env.layout`` describes the tasks.

- :class:`MultiTaskVecEnv`: continuous control. Observations flattened and zero-padded to the largest task's
  size, actions in ``Box(-1, 1, (max_act_dim,))`` of which each task uses its own first entries.
- :class:`DiscreteMultiTaskVecEnv`: discrete actions (Atari). Vector observations padded, images unchanged,
  actions in the union of the tasks' action sets with per-task ``action_masks()``.
"""

import contextlib
import functools
from collections.abc import Callable, Iterator, Sequence
from typing import Any, cast

import gymnasium as gym
import numpy as np
from gymnasium import spaces
from stable_baselines3.common.vec_env import DummyVecEnv, SubprocVecEnv, VecEnvWrapper
from stable_baselines3.common.vec_env.base_vec_env import VecEnv, VecEnvObs, VecEnvStepReturn

from sb3_brc.common.task_layout import (
    OBSERVATION_KEY,
    TaskLayout,
    legal_action_masks,
    tag_observations,
    task_observation_space,
)
from sb3_brc.envs.atari import legal_union_actions
from sb3_brc.envs.scores import normalized_score
from sb3_brc.envs.subproc import (
    ReportErrors,
    TimeoutSubprocVecEnv,
    check_step_timeout,
    dead_worker_error,
    raise_worker_errors,
    wait_for_answers,
)
from sb3_brc.envs.tasks import TaskSpec, task_factory
from sb3_brc.envs.wrappers import check_task_spaces, flatten_dict_observation, padded_continuous_task, union_discrete_task

VecEnvClass = type[DummyVecEnv] | type[SubprocVecEnv]


def _resolve_tasks(
    tasks: Sequence[TaskSpec],
    task_names: Sequence[str] | None,
    task_kinds: Sequence[str] | None,
    seed: int | None,
    transform: Callable[[gym.Env], gym.Env] = lambda env: env,
) -> tuple[list[Callable[[], gym.Env]], list[gym.Env], list[str], list[str]]:
    """Factories, one built instance (probe) of each task, names and score kinds."""
    if isinstance(tasks, str) or len(tasks) == 0:
        raise ValueError(f"A multi-task env needs a non-empty list of tasks, got {tasks!r}")
    factories, names, kinds = zip(*(task_factory(task, seed) for task in tasks), strict=True)
    for given, what in ((task_names, "task names"), (task_kinds, "task kinds")):
        if given is not None and len(given) != len(factories):
            raise ValueError(f"{len(factories)} tasks but {len(given)} {what}")
    # Build each task once to read its spaces (and keep it, for in-process vectorisation)
    probes: list[gym.Env] = []
    with _closed_on_error(probes):
        probes += [transform(factory()) for factory in factories]
    if task_names is None:
        task_names = [
            name or getattr(env.spec, "id", None) or f"task{i}"
            for i, (name, env) in enumerate(zip(names, probes, strict=True))
        ]
    return list(factories), probes, list(task_names), list(task_kinds) if task_kinds is not None else list(kinds)


@contextlib.contextmanager
def _closed_on_error(envs: list[gym.Env]) -> Iterator[None]:
    """Close ``envs`` (the probes) if the block raises: a refused task list leaves no env (or process) open."""
    try:
        yield
    except BaseException:
        for env in envs:
            env.close()
        raise


def _vec_env_class(vec_env_cls: VecEnvClass | None, step_timeout: float | None) -> VecEnvClass:
    """The vector env class to build: ``DummyVecEnv`` by default, :class:`TimeoutSubprocVecEnv` with a step
    timeout (which needs subprocesses: a step running in this process cannot be interrupted)."""
    if step_timeout is None:
        return vec_env_cls or DummyVecEnv
    check_step_timeout(step_timeout)
    if vec_env_cls is None or vec_env_cls is SubprocVecEnv:
        return TimeoutSubprocVecEnv
    if isinstance(vec_env_cls, type) and issubclass(vec_env_cls, TimeoutSubprocVecEnv):
        return vec_env_cls
    raise ValueError(
        f"step_timeout needs subprocess envs (vec_env_cls=SubprocVecEnv, or leave vec_env_cls out), got "
        f"{getattr(vec_env_cls, '__name__', vec_env_cls)}: a step running in the training process cannot be interrupted "
        "safely (see sb3_brc.envs.subproc)."
    )


def _vectorize(
    probes: list[gym.Env],
    factories: list[Callable[[], gym.Env]],
    build: Callable[..., gym.Env],
    per_task: list[dict[str, Any]],
    vec_env_cls: VecEnvClass,
    vec_env_kwargs: dict[str, Any] | None,
    names: list[str],
    step_timeout: float | None,
) -> VecEnv:
    """One sub-env per task, ``build(make, **per_task[i])`` wrapping the task that ``make()`` returns. In-process
    the probes are reused; subprocesses rebuild their task from its factory (``build`` must be picklable)."""
    in_process = vec_env_cls is DummyVecEnv
    makers = [(lambda env=env: env) if in_process else make for env, make in zip(probes, factories, strict=True)]
    env_fns: list[Callable[[], gym.Env]] = [
        functools.partial(build, make, **kwargs) for make, kwargs in zip(makers, per_task, strict=True)
    ]
    if not in_process:
        # A task's exception comes back with its traceback (EnvWorkerError), not as a broken pipe
        env_fns = [functools.partial(_reporting_errors, make) for make in env_fns]
        for env in probes:  # the subprocesses build their own
            env.close()
    probes.clear()  # in-process the sub-envs now hold them
    kwargs = dict(vec_env_kwargs or {})
    if issubclass(vec_env_cls, TimeoutSubprocVecEnv):
        kwargs.setdefault("env_names", names)  # errors name the task
        if step_timeout is not None:
            kwargs["step_timeout"] = step_timeout
    return vec_env_cls(env_fns, **kwargs)


def _reporting_errors(make: Callable[[], gym.Env]) -> gym.Env:
    return ReportErrors(make())


class BaseMultiTaskVecEnv(VecEnvWrapper):
    """What both multi-task env families share: the layout, task ids in the observations and the infos.

    ``infos[i]`` gets ``task_id``, ``task_name``, SB3's ``TimeLimit.truncated``, ``episode`` (raw return, from
    ``Monitor``) and ``is_success`` where the task reports success; ``terminal_observation`` is tagged too.

    :param venv: One sub-env per task, in task-id order
    :param layout: The tasks
    :param seed: Seed of the sub-envs (task ``i`` gets ``seed + i``)
    """

    def __init__(self, venv: VecEnv, layout: TaskLayout, seed: int | None):
        super().__init__(venv, observation_space=task_observation_space(venv.observation_space))
        self.layout = layout
        self._task_ids = np.arange(layout.first_id, layout.first_id + layout.num_tasks)
        if seed is not None:
            self.seed(seed)

    @property
    def num_tasks(self) -> int:
        """Number of tasks (one sub-env each)."""
        return self.layout.num_tasks

    @property
    def task_names(self) -> list[str]:
        """Names of the tasks, in task-id order."""
        return list(self.layout.names)

    @property
    def first_task_id(self) -> int:
        """Task id of the first sub-env (0 unless the env continues a trained model's tasks)."""
        return self.layout.first_id

    def normalized_score(self, index: int, mean_return: float, success_rate: float | None) -> float | None:
        """BRC's score of the ``index``-th task (``sb3_brc.envs.scores``); ``None`` where no scale is defined."""
        return normalized_score(self.layout.score_kinds[index], self.layout.names[index], mean_return, success_rate)

    def reset(self) -> VecEnvObs:
        with self._worker_errors():
            obs = self.venv.reset()
        raise_worker_errors(getattr(self.venv, "reset_infos", [{}] * self.num_envs), self.layout.names)
        return tag_observations(obs, self._task_ids)

    def step_wait(self) -> VecEnvStepReturn:
        with self._worker_errors():
            if isinstance(self.venv, SubprocVecEnv) and not isinstance(self.venv, TimeoutSubprocVecEnv):
                wait_for_answers(self.venv, self.layout.names)  # (a TimeoutSubprocVecEnv waits so itself)
            obs, rewards, dones, infos = self.venv.step_wait()
        raise_worker_errors(infos, self.layout.names)
        raise_worker_errors(getattr(self.venv, "reset_infos", [{}] * self.num_envs), self.layout.names)
        for task_id, name, info in zip(self._task_ids, self.layout.names, infos, strict=True):
            info["task_id"], info["task_name"] = int(task_id), name
            if "terminal_observation" in info:
                tagged = tag_observations(np.asarray(info["terminal_observation"])[None], [int(task_id)])
                info["terminal_observation"] = {key: value[0] for key, value in tagged.items()}
        return tag_observations(obs, self._task_ids), rewards, dones, infos

    @contextlib.contextmanager
    def _worker_errors(self) -> Iterator[None]:
        """A pipe to a subprocess task broken by its death becomes an error naming the task."""
        try:
            yield
        except (EOFError, BrokenPipeError, ConnectionResetError) as error:
            named = dead_worker_error(self.venv, self.layout.names)
            if named is None:
                raise
            raise named from error

    def sample_actions(self) -> np.ndarray:
        """One uniformly random action per task (the random baseline of evaluations)."""
        return np.stack([self.action_space.sample() for _ in range(self.num_envs)])


class MultiTaskVecEnv(BaseMultiTaskVecEnv):
    """Many continuous-control tasks in one SB3 VecEnv: sub-env ``i`` runs task ``i``.

    Observation: ``Dict(observation=Box(max_obs_dim), task_id)``; entries ``[0, obs_dim_i)`` of ``observation``
    hold task ``i``'s (flattened) observation, zeros after them. Action: ``Box(-1, 1, (max_act_dim,))``; task
    ``i`` uses the first ``act_dim_i`` entries, rescaled to its own bounds.

    :param tasks: Gymnasium ids (e.g. ``"dm_control/walker-walk-v0"``), suite task names (``"reach-v3"``),
        or callables returning an env, one per task
    :param task_names: Names for the tasks (default: derived from the ids; must be unique)
    :param task_kinds: ``"dmc"``, ``"metaworld"``, ``"gym"`` or ``"custom"`` per task, for normalised scores
        (default: derived from the ids)
    :param vec_env_cls: ``DummyVecEnv`` (default; with ``step_timeout``: ``TimeoutSubprocVecEnv``) or
        ``SubprocVecEnv`` (one process per task)
    :param vec_env_kwargs: Keyword arguments of ``vec_env_cls``
    :param step_timeout: Seconds a task's ``step()`` or ``reset()`` may take; longer is a fault that raises
        :class:`~sb3_brc.envs.subproc.EnvStepTimeout` naming the task and the step, after ending its worker.
        Runs each task in its own process (:class:`~sb3_brc.envs.subproc.TimeoutSubprocVecEnv`); an in-process
        ``vec_env_cls`` (``DummyVecEnv``) is refused, as a step in the training process cannot be interrupted
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
        vec_env_cls: VecEnvClass | None = None,
        vec_env_kwargs: dict[str, Any] | None = None,
        seed: int | None = None,
        obs_dim: int | None = None,
        act_dim: int | None = None,
        first_task_id: int = 0,
        step_timeout: float | None = None,
    ):
        vec_env_cls = _vec_env_class(vec_env_cls, step_timeout)
        factories, probes, names, kinds = _resolve_tasks(tasks, task_names, task_kinds, seed, flatten_dict_observation)
        with _closed_on_error(probes):
            for env, name in zip(probes, names, strict=True):
                check_task_spaces(env, name)
            obs_dims = [int(np.prod(env.observation_space.shape or ())) for env in probes]
            act_dims = [int(np.prod(env.action_space.shape or ())) for env in probes]
            for given, sizes, what in ((obs_dim, obs_dims, "observation"), (act_dim, act_dims, "action")):
                if given is not None and given < max(sizes):
                    raise ValueError(
                        f"A task's {what} size ({max(sizes)}) exceeds the padded size {given}: these tasks do not fit that "
                        "layout (a model trained on it cannot take them)."
                    )
            layout = TaskLayout(
                tuple(names), tuple((size,) for size in obs_dims), tuple(act_dims), tuple(kinds), first_id=first_task_id
            )
            padded = dict(obs_dim=obs_dim or max(obs_dims), act_dim=act_dim or max(act_dims))
            per_task = [dict(padded, name=name) for name in names]
            venv = _vectorize(
                probes, factories, padded_continuous_task, per_task, vec_env_cls, vec_env_kwargs, names, step_timeout
            )
        super().__init__(venv, layout, seed)


class DiscreteMultiTaskVecEnv(BaseMultiTaskVecEnv):
    """Many discrete-action tasks (e.g. Atari games) in one SB3 VecEnv, one sub-env per task.

    Observation: ``Dict(observation=..., task_id)``. ``observation`` holds the task's observation: vector
    observations zero-padded to the largest size (float32), image observations (e.g. ``(4, 84, 84)`` uint8 frame
    stacks) unchanged, which must then have one shape for all tasks. Action: ``Discrete(n_actions)``, the union of
    the tasks' actions (Atari: ALE's 18 actions, each game's minimal set mapped in by name; other tasks:
    ``0..n-1``). :meth:`action_masks` gives each sub-env's legal actions (the sb3-contrib ``MaskablePPO``
    convention); ``layout.legal_actions`` lists them.

    :param tasks: Callables returning an env, or Gymnasium ids, one per task (``Discrete`` actions)
    :param task_names: Names for the tasks (default: from the ids)
    :param task_kinds: ``"atari"`` (human-normalised score) or ``"gym"``/``"custom"`` per task
    :param vec_env_cls: ``DummyVecEnv`` (default; with ``step_timeout``: ``TimeoutSubprocVecEnv``) or
        ``SubprocVecEnv``
    :param vec_env_kwargs: Keyword arguments of ``vec_env_cls``
    :param step_timeout: Seconds a task's ``step()`` or ``reset()`` may take (subprocess envs, as in
        :class:`MultiTaskVecEnv`)
    :param seed: Seed of the sub-envs (task ``i`` gets ``seed + i``)
    :param first_task_id: Id of the first task (ids continue a trained model's when adding tasks to it)
    :param obs_dim: Pad vector observations to this size instead of the largest task's (to fit a trained model)
    :param n_actions: Size of the union action space instead of the tasks' own (to fit a trained model)
    """

    def __init__(
        self,
        tasks: Sequence[TaskSpec],
        task_names: Sequence[str] | None = None,
        task_kinds: Sequence[str] | None = None,
        vec_env_cls: VecEnvClass | None = None,
        vec_env_kwargs: dict[str, Any] | None = None,
        seed: int | None = None,
        first_task_id: int = 0,
        obs_dim: int | None = None,
        n_actions: int | None = None,
        step_timeout: float | None = None,
    ):
        vec_env_cls = _vec_env_class(vec_env_cls, step_timeout)
        factories, probes, names, kinds = _resolve_tasks(tasks, task_names, task_kinds, seed)
        with _closed_on_error(probes):
            for env, name in zip(probes, names, strict=True):
                if not isinstance(env.action_space, spaces.Discrete):
                    raise TypeError(
                        f"Task {name!r} has a {type(env.action_space).__name__} action space; DiscreteMultiTaskVecEnv needs "
                        "Discrete actions (continuous tasks go into MultiTaskVecEnv)."
                    )
                if not isinstance(env.observation_space, spaces.Box):
                    raise TypeError(f"Task {name!r} has observation space {env.observation_space}; a Box is needed.")
            shapes = [tuple(env.observation_space.shape or ()) for env in probes]
            images = [len(shape) > 1 for shape in shapes]
            if any(images) and (not all(images) or len(set(shapes)) > 1):
                raise ValueError(
                    f"Image tasks must all have one observation shape (no padding for images), got {shapes} for {names}."
                )
            legal_and_sizes = [legal_union_actions(env) for env in probes]
            legal_actions = [legal for legal, _ in legal_and_sizes]
            sizes = tuple(len(legal) for legal in legal_actions)
            legal_sets = tuple(map(tuple, legal_actions))
            layout = TaskLayout(tuple(names), tuple(shapes), sizes, tuple(kinds), legal_sets, first_task_id)
            largest_obs = None if images[0] else max(int(np.prod(shape)) for shape in shapes)
            largest_action = max(max(legal) + 1 for legal in legal_actions)
            for given, largest, what in ((obs_dim, largest_obs, "observation"), (n_actions, largest_action, "action")):
                if given is not None and (largest is None or given < largest):
                    raise ValueError(
                        f"The tasks' {what} sizes do not fit the padded size {given}: a model trained on it cannot take them."
                    )
            n_actions = n_actions or max(size for _, size in legal_and_sizes)
            obs_dim = obs_dim or largest_obs
            per_task = [
                dict(legal=legal, n_actions=n_actions, obs_dim=obs_dim, name=name)
                for legal, name in zip(legal_actions, names, strict=True)
            ]
            venv = _vectorize(
                probes, factories, union_discrete_task, per_task, vec_env_cls, vec_env_kwargs, names, step_timeout
            )
        super().__init__(venv, layout, seed)
        self._masks = legal_action_masks(legal_actions, n_actions)

    def action_masks(self) -> np.ndarray:
        """``(num_envs, n_actions)`` booleans: the legal union actions of each sub-env's task."""
        return self._masks.copy()

    def sample_actions(self) -> np.ndarray:
        """One uniformly random legal action per task."""
        rng = self.action_space.np_random
        assert self.layout.legal_actions is not None  # a discrete layout
        return np.array([legal[rng.integers(len(legal))] for legal in self.layout.legal_actions])


class DropTaskIds(VecEnvWrapper):
    """A multi-task env seen without its task ids: plain ``observation`` arrays, for algorithms that take no task
    input (e.g. SB3's SAC as a single-task baseline on one task of a suite). The layout, scores and infos stay the
    wrapped env's.

    :param venv: A multi-task env
    """

    def __init__(self, venv: BaseMultiTaskVecEnv):
        super().__init__(venv, observation_space=cast(spaces.Dict, venv.observation_space)[OBSERVATION_KEY])

    def reset(self) -> VecEnvObs:
        return cast(dict, self.venv.reset())[OBSERVATION_KEY]

    def step_wait(self) -> VecEnvStepReturn:
        obs, rewards, dones, infos = self.venv.step_wait()
        for info in infos:
            if "terminal_observation" in info:
                info["terminal_observation"] = info["terminal_observation"][OBSERVATION_KEY]
        return cast(dict, obs)[OBSERVATION_KEY], rewards, dones, infos
