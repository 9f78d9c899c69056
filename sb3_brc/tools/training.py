"""The training driver shared by ``sb3-brc train`` and the benchmark harness.

One run: the random policy's per-task returns on the evaluation env (the baseline of every score) -> the model
-> per-task evaluations every ``eval_every`` env steps per task during ``learn()`` -> a final evaluation when the
schedule did not land on the last step. What differs between its users is a parameter: how the model is built
(or restored from a checkpoint, ``resume``), extra callbacks (checkpoints), a hook on each evaluation
(the harness's progress display) and an optional W&B run (:mod:`sb3_brc.tools.wandb_logging`).
"""

import copy
import json
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypedDict, cast

import numpy as np
import torch as th
from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.buffers import ReplayBuffer
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.logger import configure
from stable_baselines3.common.off_policy_algorithm import OffPolicyAlgorithm
from stable_baselines3.common.utils import configure_logger

from sb3_brc.common.policies import SIZE_PRESETS
from sb3_brc.common.task_layout import is_task_observation_space, observation_part, tag_observations
from sb3_brc.common.utils import atomic_file, remaining_updates
from sb3_brc.envs.vec_env import BaseMultiTaskVecEnv
from sb3_brc.tools.evaluation import MultiTaskEvalCallback, evaluate_tasks, write_eval_rows
from sb3_brc.tools.report import read_eval_csv
from sb3_brc.tools.wandb_logging import WandbRun

EvalRows = list[dict[str, Any]]


def brc_sac_policy_kwargs(size: str, width: int | None) -> dict[str, Any]:
    """BRCSAC's network size: a :data:`SIZE_PRESETS` name, or critic blocks ``[width, width]`` when ``width`` is set."""
    if width is not None:
        return dict(net_arch=dict(pi=[min(width, 256)], qf=[width, width]))
    return dict(net_arch=SIZE_PRESETS[size])


def brc_dqn_policy_kwargs(size: str, width: int | None) -> dict[str, Any]:
    """BRCDQN's BroNet head: the size preset's critic blocks, or ``[width, width]``."""
    return dict(net_arch=[width, width] if width is not None else SIZE_PRESETS[size]["qf"])


class PerTaskBudget(TypedDict):
    """Keyword arguments of an off-policy algorithm for a run's tasks (:func:`per_task_budget`)."""

    learning_starts: int
    buffer_size: int


def per_task_budget(
    num_tasks: int, steps_per_task: int, learning_starts_per_task: int, buffer_size_per_task: int
) -> PerTaskBudget:
    """``learning_starts`` and ``buffer_size`` keyword arguments for ``num_tasks`` tasks given per-task numbers
    (the replay buffer never holds more than the run's transitions)."""
    return PerTaskBudget(
        learning_starts=learning_starts_per_task * num_tasks,
        buffer_size=min(buffer_size_per_task, steps_per_task) * num_tasks,
    )


def write_json_atomic(path: str, data: Any) -> None:
    """Write ``data`` as JSON; a process killed mid-write leaves the previous file, never half of one."""
    with atomic_file(path, "w") as file:
        json.dump(data, file, indent=2)


def read_json_file(path: str, what: str) -> Any:
    """The content of a JSON file a run wrote, after a clear error naming the file when it is missing or damaged.

    :param what: What to do about it, appended to the error
    """
    if not os.path.exists(path):
        raise FileNotFoundError(f"{path} not found: {what}")
    try:
        with open(path) as file:
            return json.load(file)
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise ValueError(f"{path} is damaged (not valid JSON: {error}): {what}") from error


def seconds_per_update(model: OffPolicyAlgorithm, updates: int = 2) -> float:
    """Seconds one gradient update of ``model`` takes on this machine, timed through ``model.train()`` on a
    throwaway buffer of random transitions after untimed warm-up updates (compilation, CUDA graph capture). The
    model is left as it was: parameters, optimisers, update count, logger and torch's and numpy's random states are
    restored and its own replay buffer is not touched."""
    n_envs, batch = model.n_envs, model.batch_size
    rows = -(-2 * batch // n_envs) + 16  # vector steps: two batches' worth, and room for n-step returns
    buffer = cast(type[ReplayBuffer], model.replay_buffer_class)(
        rows * n_envs, model.observation_space, model.action_space, device=model.device, n_envs=n_envs,
        **(model.replay_buffer_kwargs or {}),
    )  # fmt: skip
    spaces_ = [copy.deepcopy(observation_part(model.observation_space)), copy.deepcopy(model.action_space)]
    for i, space in enumerate(spaces_):
        space.seed(i)  # copies: the model's own spaces (warm-up actions) keep their random streams
    observation_space, action_space = spaces_
    task_ids = np.arange(n_envs) % getattr(model, "num_tasks", 1)

    def observations() -> Any:
        batch_ = np.stack([observation_space.sample() for _ in range(n_envs)])
        return tag_observations(batch_, task_ids) if is_task_observation_space(model.observation_space) else batch_

    rng = np.random.default_rng(0)
    for _ in range(rows):
        actions = np.stack([action_space.sample() for _ in range(n_envs)])
        infos: list[dict[str, Any]] = [{} for _ in range(n_envs)]
        buffer.add(observations(), observations(), actions, rng.standard_normal(n_envs), np.zeros(n_envs), infos)
    saved: dict[str, Any] = copy.deepcopy(model.get_parameters())
    log_ent_coef = getattr(model, "log_ent_coef", None)
    saved_log_ent_coef = None if log_ent_coef is None else log_ent_coef.detach().clone()
    torch_rng, numpy_rng = th.random.get_rng_state(), np.random.get_state()  # (replay sampling draws from numpy's)
    cuda_rng = th.cuda.get_rng_state_all() if th.cuda.is_available() else None
    replay_buffer, n_updates, custom_logger = model.replay_buffer, model._n_updates, model._custom_logger
    logger = getattr(model, "_logger", None)
    try:
        model.replay_buffer = buffer
        model.set_logger(configure(folder=None, format_strings=[]))
        model.train(gradient_steps=4 if getattr(model, "cuda_graph", False) else 1, batch_size=batch)  # warm-up
        if model.device.type == "cuda":
            th.cuda.synchronize()
        start = time.perf_counter()
        model.train(gradient_steps=updates, batch_size=batch)
        if model.device.type == "cuda":
            th.cuda.synchronize()
        return (time.perf_counter() - start) / updates
    finally:
        model.replay_buffer, model._n_updates, model._custom_logger = replay_buffer, n_updates, custom_logger
        if logger is None:
            del model._logger
        else:
            model._logger = logger
        model.set_parameters(saved, exact_match=True)
        if log_ent_coef is not None:
            with th.no_grad():
                log_ent_coef.copy_(saved_log_ent_coef)
        th.random.set_rng_state(torch_rng)
        np.random.set_state(numpy_rng)
        if cuda_rng is not None:
            th.cuda.set_rng_state_all(cuda_rng)


def training_estimate(model: OffPolicyAlgorithm, total_timesteps: int) -> str:
    """What training ``model`` to ``total_timesteps`` costs in gradient updates on this machine (a few timed here),
    with the faster settings of its device when that is more than an hour. It never refuses."""
    updates = remaining_updates(model, total_timesteps)
    seconds = seconds_per_update(model)
    text = (
        f"{updates:,} gradient updates of batch {model.batch_size} at {_duration(seconds)} each on {model.device} "
        f"(timed here): about {_duration(updates * seconds)} of updates, plus env steps and evaluations."
    )
    if updates * seconds > 3600:
        if model.device.type == "cuda":
            faster = "--cuda-graph (cuda_graph=True) and TF32 matmuls (torch.set_float32_matmul_precision('high'))"
        else:
            faster = "a GPU (--device cuda)" if th.cuda.is_available() else "a GPU"
            faster += ", or a smaller --size (tiny, small) or --compile-update on this CPU"
        text += f" Faster: {faster}."
    return text


def _duration(seconds: float) -> str:
    units = (("days", 86400.0), ("hours", 3600.0), ("minutes", 60.0), ("s", 1.0))
    unit, size = next(((unit, size) for unit, size in units if seconds >= size), ("ms", 1e-3))
    value = seconds / size
    return f"{value:,.0f} {unit}" if value >= 100 else f"{value:.3g} {unit}"


class _EvalCallback(MultiTaskEvalCallback):
    """:class:`MultiTaskEvalCallback` that hands each evaluation's rows to ``on_evaluation``."""

    def __init__(self, *args: Any, on_evaluation: Callable[[EvalRows], None] | None = None, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.on_evaluation = on_evaluation

    def evaluate(self) -> EvalRows:
        rows = super().evaluate()
        if self.on_evaluation is not None:
            self.on_evaluation(rows)
        return rows


def _keep_evaluations_until(eval_csv: str, timesteps: int) -> None:
    # Rows written between the checkpoint and a crash: the resumed run evaluates those steps again
    if os.path.exists(eval_csv):
        write_eval_rows(eval_csv, [row for row in read_eval_csv(eval_csv) if row["timesteps"] <= timesteps], append=False)


@dataclass
class TrainingResult:
    """What :func:`train_and_evaluate` leaves besides its files.

    :param model: The trained model
    :param random_baseline: The random policy's evaluation rows, one per task
    :param final: The rows of the last evaluation (at ``steps_per_task``), one per task
    """

    model: BaseAlgorithm
    random_baseline: EvalRows
    final: EvalRows


def train_and_evaluate(
    env: BaseMultiTaskVecEnv,
    eval_env: BaseMultiTaskVecEnv,
    make_model: Callable[[], BaseAlgorithm],
    *,
    steps_per_task: int,
    eval_every: int,
    eval_episodes: int,
    eval_csv: str,
    baseline_json: str,
    seed: int,
    resume: bool = False,
    callbacks: Sequence[BaseCallback] = (),
    on_evaluation: Callable[[EvalRows], None] | None = None,
    progress_bar: bool = False,
    wandb_run: WandbRun | None = None,
) -> TrainingResult:
    """Train a model on ``env`` for ``steps_per_task`` env steps per task, evaluating it on ``eval_env``.

    :param env: The training env (one sub-env per task)
    :param eval_env: A separate evaluation env with the same tasks
    :param make_model: Builds the model on ``env`` (``resume``: restores it from a checkpoint)
    :param steps_per_task: Env steps per task to train for in all (a resumed model continues from its step count)
    :param eval_every: Env steps per task between evaluations
    :param eval_episodes: Deterministic episodes per task and evaluation (also for the random baseline)
    :param eval_csv: Evaluation CSV (:data:`sb3_brc.tools.evaluation.CSV_FIELDS` rows); a fresh run replaces it
    :param baseline_json: The random baseline's rows: written by a fresh run, read by a resumed one
    :param seed: Seed of the random baseline's actions
    :param resume: Continue a run: keep its baseline and the evaluations up to the restored model's step
    :param callbacks: Further callbacks of ``learn()`` (checkpoints)
    :param on_evaluation: Called with the rows of each evaluation
    :param progress_bar: Show SB3's progress bar during ``learn()``
    :param wandb_run: Also log to this W&B run (the caller finishes it): the logger's keys (those tensorboard gets)
        during ``learn()`` and the evaluations, the model's algorithm and tasks in the config, then the last
        evaluation's per-task table and the report's plots
    """
    if resume:
        baseline = read_json_file(baseline_json, "the random baseline of the run; rerun it without resuming")
    else:
        baseline = evaluate_tasks(None, eval_env, eval_episodes, seed=seed)
        write_json_atomic(baseline_json, baseline)
        if os.path.exists(eval_csv):
            os.remove(eval_csv)
    model = make_model()
    if resume:
        _keep_evaluations_until(eval_csv, model.num_timesteps)
    evaluation = _EvalCallback(eval_env, eval_every, eval_episodes, log_path=eval_csv, on_evaluation=on_evaluation)
    if wandb_run is not None:
        wandb_run.update_config(dict(algorithm=type(model).__name__, task_names=list(env.task_names)))
        callbacks = [*callbacks, wandb_run.callback()]
    total = steps_per_task * env.num_tasks
    if model.num_timesteps < total:
        model.learn(
            total - model.num_timesteps,
            callback=[evaluation, *callbacks],
            progress_bar=progress_bar,
            reset_num_timesteps=not resume,
        )
    rows = read_eval_csv(eval_csv) if os.path.exists(eval_csv) else []
    if not rows or rows[-1]["steps_per_task"] != steps_per_task:
        # The schedule evaluates on the last step; this covers envs that count steps otherwise and a run resumed
        # from its final checkpoint without the final evaluation
        evaluation.init_callback(model)
        evaluation.num_timesteps = model.num_timesteps  # set by on_step during learn(), which did not run
        if getattr(model, "_logger", None) is None:  # a loaded model gets its logger in learn()
            model.set_logger(configure_logger(model.verbose, model.tensorboard_log, type(model).__name__, False))
        if wandb_run is not None:
            wandb_run.attach(model)
        rows += evaluation.evaluate()
    if wandb_run is not None:
        wandb_run.log_evaluations(model, rows, baseline)
    return TrainingResult(model, baseline, rows[-env.num_tasks :])
