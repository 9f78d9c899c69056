"""The training driver shared by ``sb3-brc train`` and the benchmark harness.

One run: the random policy's per-task returns on the evaluation env (the baseline of every score) -> the model
-> per-task evaluations every ``eval_every`` env steps per task during ``learn()`` -> a final evaluation when the
schedule did not land on the last step. What differs between its users is a parameter: how the model is built
(or restored from a checkpoint, ``resume``), extra callbacks (checkpoints), a hook on each evaluation
(the harness's progress display) and an optional W&B run (:mod:`sb3_brc.tools.wandb_logging`).
"""

import json
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypedDict

from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.utils import configure_logger

from sb3_brc.common.utils import atomic_file
from sb3_brc.envs.vec_env import BaseMultiTaskVecEnv
from sb3_brc.sac.policies import SIZE_PRESETS
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
