"""Transfer: continue a trained multi-task model (BRCSAC or BRCDQN) on new tasks.

The value network's task-embedding tables (online and target) grow by one row per new task; every network weight
and existing row is kept, and the return normaliser tracks the new tasks. Then call ``model.learn()``.
"""

from collections.abc import Iterable
from typing import Any, cast

from gymnasium import spaces
from stable_baselines3.common.buffers import ReplayBuffer
from stable_baselines3.common.type_aliases import GymEnv

from sb3_brc.common.buffers import ReplayWithPrevious
from sb3_brc.common.multitask import MultiTaskAlgorithm
from sb3_brc.common.task_layout import observation_part, task_layout_of
from sb3_brc.envs.vec_env import BaseMultiTaskVecEnv, DiscreteMultiTaskVecEnv, MultiTaskVecEnv


def new_task_env(model: MultiTaskAlgorithm, tasks: list[Any], **kwargs: Any) -> BaseMultiTaskVecEnv:
    """A multi-task env of new ``tasks`` laid out to continue ``model`` (ids after its tasks, its padded sizes).

    :param model: A trained multi-task model
    :param tasks: The new tasks (ids, names or callables, as for ``MultiTaskVecEnv``)
    :param kwargs: Passed to the env (``seed``, ``vec_env_cls``, ...)
    """
    observation_shape = observation_part(model.observation_space).shape or ()
    if model.task_layout is not None and model.task_layout.legal_actions is not None:
        # Images are not padded: new image tasks must have the model's image shape
        obs_dim = observation_shape[0] if len(observation_shape) == 1 else None
        n_actions = int(cast(spaces.Discrete, model.action_space).n)
        return DiscreteMultiTaskVecEnv(tasks, first_task_id=model.num_tasks, obs_dim=obs_dim, n_actions=n_actions, **kwargs)
    act_dim = (model.action_space.shape or ())[0]
    return MultiTaskVecEnv(tasks, first_task_id=model.num_tasks, obs_dim=observation_shape[0], act_dim=act_dim, **kwargs)


def add_tasks(
    model: MultiTaskAlgorithm,
    env: GymEnv,
    keep_replay: bool = False,
    freeze: Iterable[str] = (),
    new_rows: str = "mean",
    learning_starts: int | None = None,
) -> None:
    """Continue training ``model`` on the new tasks of ``env`` (then call ``model.learn()``). Works after ``load()``.

    :param model: A multi-task model (trained with task embeddings on >= 2 tasks)
    :param env: A multi-task env holding only the new tasks, built by :func:`new_task_env`
    :param keep_replay: ``True``: "data transfer", old tasks' transitions keep being replayed next to the new
        ones (uniform over tasks); ``False``: "model transfer", a fresh buffer with the new tasks only
    :param freeze: Parts not to train any more (``model.freezable``: BRCSAC ``"actor"``, ``"critic"``; BRCDQN
        ``"q_net"``); the task embeddings always train, so new tasks can be placed
    :param new_rows: Start of the new embedding rows: ``"mean"`` of the existing rows (the "average task", so a
        new task starts from what the network learned across tasks) or ``"random"``
    :param learning_starts: Random-action warm-up (transitions) on the new tasks; default the algorithm's per task
    """
    layout = task_layout_of(env)
    if model.num_tasks < 2 or model.task_layout is None:
        raise ValueError("add_tasks needs a multi-task model (one trained with task embeddings on >= 2 tasks).")
    if layout is None:
        raise TypeError(f"add_tasks takes a multi-task env of the new tasks, got {type(env).__name__}")
    hint = "build it with sb3_brc.tools.transfer.new_task_env(model, tasks)"
    if env.observation_space != model.observation_space or env.action_space != model.action_space:
        raise ValueError(
            f"The new tasks' padded spaces {env.observation_space}, {env.action_space} differ from the model's "
            f"{model.observation_space}, {model.action_space}: {hint}."
        )
    unknown = set(freeze) - set(model.freezable)
    if unknown:
        raise ValueError(f"freeze takes {list(model.freezable)} for {type(model).__name__}, got {sorted(unknown)}")
    try:
        extended = model.task_layout.extended(layout)
    except ValueError as error:
        raise ValueError(f"{error} ({hint})") from error
    old_tasks, count = model.num_tasks, layout.num_tasks
    model._grow_tasks(layout, new_rows)
    model.task_layout = extended
    if model.return_normalizer is not None:
        model.return_normalizer.add_tasks(count)
    model._task_episodes = model._task_successes = None  # per-task rollout stats, rebuilt for the new task count
    model.frozen_parts = tuple(part for part in model.freezable if part in model.frozen_parts or part in freeze)
    model._apply_frozen_parts()  # and again whenever the networks are built (load(), resume)
    per_task_capacity = max(model.buffer_size // old_tasks, 1)
    previous = model.replay_buffer
    assert previous is not None and model.replay_buffer_class is not None  # both set by the model's _setup_model
    model.n_envs = count  # SB3's set_env insists on an unchanged count; the new buffer below matches it
    model.set_env(env)
    model.buffer_size = per_task_capacity * count
    new_buffer: ReplayBuffer = model.replay_buffer_class(
        model.buffer_size,
        model.observation_space,
        model.action_space,
        device=model.device,
        n_envs=count,
        **model.replay_buffer_kwargs,
    )
    model.replay_buffer = ReplayWithPrevious(new_buffer, previous, old_tasks) if keep_replay else new_buffer
    model.learning_starts = model.learning_starts_per_task * count if learning_starts is None else learning_starts
