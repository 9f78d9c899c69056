"""The harness's algorithms: :data:`ALGOS`, name -> :class:`BenchAlgo`; adding one is :func:`register_algo`."""

import importlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from stable_baselines3.common.callbacks import BaseCallback

from sb3_brc.common.normalization_callback import ReturnNormalizationCallback
from sb3_brc.envs.suites import make_suite
from sb3_brc.envs.tasks import TaskSpec
from sb3_brc.envs.vec_env import BaseMultiTaskVecEnv, DiscreteMultiTaskVecEnv, DropTaskIds, MultiTaskVecEnv
from sb3_brc.tools.training import brc_dqn_policy_kwargs, brc_sac_policy_kwargs


def mlp_policy_kwargs(size: str, width: int | None) -> dict[str, Any]:
    """SB3 baselines: their own default networks, or two hidden layers of ``width`` when it is set."""
    return {} if width is None else dict(net_arch=[width, width])


def crossq_policy_kwargs(size: str, width: int | None) -> dict[str, Any]:
    """CrossQ: its default networks (critic 2 x 1024 with batch norm), or both at ``[width, width]``."""
    return {} if width is None else dict(net_arch=dict(pi=[width, width], qf=[width, width]))


def make_multi_task_env(
    tasks: Sequence[TaskSpec],
    task_names: Sequence[str] | None,
    seed: int,
    suite: str | None = None,
    training: bool = True,
    step_timeout: float | None = None,
    vec_env_class: type[MultiTaskVecEnv] | type[DiscreteMultiTaskVecEnv] = MultiTaskVecEnv,
) -> BaseMultiTaskVecEnv:
    """The default env builder of the harness: a :class:`MultiTaskVecEnv` (or ``vec_env_class``) of the tasks (one
    task for a single-task run: its task id is then a constant 0). ``suite`` builds a named suite with
    :func:`sb3_brc.envs.suites.make_suite` instead (Meta-World and Atari suites only exist as such); ``training=False``
    builds evaluation envs (Atari: whole games instead of episodes ending at a lost life); ``step_timeout``: each task
    in its own process, a step or reset slower than that many seconds raises
    :class:`~sb3_brc.envs.subproc.EnvStepTimeout`."""
    if suite is not None:
        return make_suite(suite, seed=seed, training=training, step_timeout=step_timeout)
    names = list(task_names) if task_names else None
    return vec_env_class(list(tasks), task_names=names, seed=seed, step_timeout=step_timeout)


def task_free_env(
    tasks: Sequence[TaskSpec],
    task_names: Sequence[str] | None,
    seed: int,
    suite: str | None = None,
    training: bool = True,
    step_timeout: float | None = None,
) -> DropTaskIds:
    """Env builder of algorithms without task input (SB3's SAC, TQC, CrossQ): :func:`make_multi_task_env` with plain
    observations (single-task runs)."""
    return DropTaskIds(make_multi_task_env(tasks, task_names, seed, suite, training, step_timeout))


def discrete_multi_task_env(
    tasks: Sequence[TaskSpec],
    task_names: Sequence[str] | None,
    seed: int,
    suite: str | None = None,
    training: bool = True,
    step_timeout: float | None = None,
) -> BaseMultiTaskVecEnv:
    """Env builder of discrete-action algorithms: a suite (Atari) or a :class:`DiscreteMultiTaskVecEnv`."""
    return make_multi_task_env(tasks, task_names, seed, suite, training, step_timeout, DiscreteMultiTaskVecEnv)


@dataclass(frozen=True)
class BenchAlgo:
    """One algorithm of the harness.

    :param cls: The algorithm class (SB3 constructor ``cls(policy, env, **kwargs)``) or ``"module:Class"``, imported
        in the worker process (so registering an algorithm does not import its dependencies)
    :param policy: Policy name passed to the constructor
    :param kwargs: Default constructor keyword arguments (the harness adds ``seed``, ``device``,
        ``learning_starts``, ``buffer_size``, ``policy_kwargs`` and, when given, ``batch_size`` / ``gradient_steps``)
    :param multi_task: ``True``: a suite is one run on all its tasks; ``False``: one run per task of the suite
    :param policy_kwargs: ``(size, width) -> policy_kwargs`` from the ``--size`` / ``--width`` flags
    :param make_env: ``(tasks, task_names, seed, suite, training) -> VecEnv`` with the interface ``evaluate_tasks``
        needs (``training=False``: the evaluation env); it also gets ``step_timeout=`` when the grid runs with
        ``--step-timeout``
    :param callbacks: Factories of callbacks its runs train with besides the harness's own (e.g.
        :class:`~sb3_brc.common.normalization_callback.ReturnNormalizationCallback`); part of a run's settings
    :param description: One line for ``--help``

    The entry travels to spawned worker processes, so its functions must be picklable (module-level, no lambdas).
    """

    cls: type | str
    policy: str = "MlpPolicy"
    kwargs: dict[str, Any] = field(default_factory=dict)
    multi_task: bool = False
    policy_kwargs: Callable[[str, int | None], dict[str, Any]] = mlp_policy_kwargs
    make_env: Callable[..., Any] = make_multi_task_env
    callbacks: tuple[Callable[[], BaseCallback], ...] = ()
    description: str = ""

    def algo_class(self) -> type:
        """The algorithm class (imported now if given as ``"module:Class"``)."""
        if isinstance(self.cls, str):
            module, _, name = self.cls.partition(":")
            return getattr(importlib.import_module(module), name)
        return self.cls

    def class_path(self) -> str:
        """``"module:Class"`` of the algorithm (recorded in each run's ``config.json``)."""
        return self.cls if isinstance(self.cls, str) else f"{self.cls.__module__}:{self.cls.__name__}"


#: The harness's algorithms by name (``--algos``); :func:`register_algo` adds one.
#: :meta hide-value:
ALGOS: dict[str, BenchAlgo] = {
    "brc_sac": BenchAlgo(
        "sb3_brc.sac.sac:BRCSAC",
        multi_task=True,
        policy_kwargs=brc_sac_policy_kwargs,
        description="BRC (sb3_brc.BRCSAC); a suite is one multi-task run",
    ),
    "brc_sac_st": BenchAlgo(
        "sb3_brc.sac.sac:BRCSAC",
        multi_task=False,
        policy_kwargs=brc_sac_policy_kwargs,
        description="single-task BRC: sb3_brc.BRCSAC trained separately on each task of a suite",
    ),
    "brc_dqn": BenchAlgo(
        "sb3_brc.dqn.dqn:BRCDQN",
        "MlpPolicy",  # BRCDQN's MlpPolicy picks NatureCNN for images (Atari) and a flatten for vectors (CartPole)
        multi_task=True,
        policy_kwargs=brc_dqn_policy_kwargs,
        make_env=discrete_multi_task_env,
        description="BRC for discrete actions (sb3_brc.BRCDQN): Atari suites, CartPole, ...",
    ),
    "sac": BenchAlgo("stable_baselines3:SAC", make_env=task_free_env, description="SB3 SAC, its default hyperparameters"),
    "sac_norm": BenchAlgo(
        "stable_baselines3:SAC",
        make_env=task_free_env,
        callbacks=(ReturnNormalizationCallback,),
        description="SB3 SAC with BRC's return normalisation (ReturnNormalizationCallback)",
    ),
    "tqc": BenchAlgo("sb3_contrib:TQC", make_env=task_free_env, description="sb3-contrib TQC, its default hyperparameters"),
    "crossq": BenchAlgo(
        "sb3_contrib:CrossQ",
        policy_kwargs=crossq_policy_kwargs,
        make_env=task_free_env,
        description="sb3-contrib CrossQ, its default hyperparameters",
    ),
}


def register_algo(name: str, algo: BenchAlgo, overwrite: bool = False) -> None:
    """Add an algorithm to :data:`ALGOS` (the grid's ``--algos`` names).

    :param name: Name used on the command line and as the output directory
    :param algo: How to build and run it
    :param overwrite: Replace an existing entry of that name
    """
    if name in ALGOS and not overwrite:
        raise ValueError(f"Algorithm {name!r} is already registered; pass overwrite=True to replace it")
    ALGOS[name] = algo
