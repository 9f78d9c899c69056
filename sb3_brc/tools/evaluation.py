"""Per-task evaluation of multi-task agents (BRC protocol: deterministic, N episodes per task)."""

import csv
import os
import warnings
from typing import Any

import numpy as np
from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.callbacks import BaseCallback

from sb3_brc.common.multitask import MultiTaskAlgorithm
from sb3_brc.envs.vec_env import BaseMultiTaskVecEnv

#: Steps after which an evaluation episode that has not ended is stopped (far above the suites' time limits: DMC
#: 1000, Meta-World 200, Atari 27k)
MAX_EVAL_EPISODE_STEPS = 100_000
#: Columns of the evaluation CSV (``eval.csv``, ``evaluations.csv``), one row per task and evaluation.
CSV_FIELDS = ["timesteps", "steps_per_task", "task", "mean_return", "std_return", "success_rate", "score", "episodes"]


def write_eval_rows(path: str, rows: list[dict[str, Any]], append: bool) -> None:
    """Write evaluation rows to a CSV file (header included when the file is new or rewritten)."""
    header = not (append and os.path.exists(path))
    with open(path, "a" if append else "w", newline="") as file:
        writer = csv.DictWriter(file, fieldnames=CSV_FIELDS)
        if header:
            writer.writeheader()
        writer.writerows(rows)


def check_evaluation_env(model: BaseAlgorithm | None, env: BaseMultiTaskVecEnv) -> None:
    """The one check of :func:`evaluate_tasks` and :class:`MultiTaskEvalCallback`: a multi-task model is evaluated on
    its own tasks in its own order (or a contiguous run of them, as ``new_task_env`` builds after ``add_tasks``); a
    clear error otherwise, instead of scores filed under the wrong task names."""
    if isinstance(model, MultiTaskAlgorithm):
        model._check_same_tasks(env)


def evaluation_actions(model: BaseAlgorithm, obs: Any, deterministic: bool) -> np.ndarray:
    """The actions an evaluation takes: with ``deterministic``, the algorithm's evaluation protocol
    (:meth:`~sb3_brc.common.multitask.MultiTaskAlgorithm.evaluation_predict`: BRCDQN's evaluation epsilon), else
    ``predict()``'s sampled actions; SB3's algorithms: ``predict(obs, deterministic)``."""
    if deterministic and isinstance(model, MultiTaskAlgorithm):
        return model.evaluation_predict(obs)
    return model.predict(obs, deterministic=deterministic)[0]


def evaluate_tasks(
    model: BaseAlgorithm | None,
    env: BaseMultiTaskVecEnv,
    n_eval_episodes: int = 10,
    deterministic: bool = True,
    seed: int | None = None,
    max_episode_steps: int = MAX_EVAL_EPISODE_STEPS,
) -> list[dict[str, Any]]:
    """Run ``n_eval_episodes`` complete episodes of every task and report each task separately.

    All tasks step together; a task that has its episodes keeps stepping but is no longer counted (the
    reference's evaluation kept adding successes there). Success is "success at any step of the episode". A task
    whose episode runs ``max_episode_steps`` steps without ending (no time limit) stops there, with a warning naming
    it: that episode's return so far counts, as do its earlier episodes, and no more are run for it.

    :param model: The agent, or ``None`` for uniformly random actions (the random baseline)
    :param env: The evaluation env (a separate instance from the training env)
    :param n_eval_episodes: Episodes per task
    :param deterministic: The evaluation protocol: the mean action (BRCSAC), epsilon-greedy with the evaluation
        epsilon (BRCDQN); ``False``: the actions ``predict()`` samples
    :param seed: Seed for the random baseline's actions (``model=None``), for a reproducible baseline
    :param max_episode_steps: Steps after which an episode that has not ended stops being evaluated
    :return: One dict per task: ``task``, ``mean_return``, ``std_return``, ``success_rate`` (``None`` if the
        task reports no success), ``score`` (normalised, ``None`` if undefined), ``episodes``
    """
    if n_eval_episodes < 1:
        raise ValueError(f"n_eval_episodes must be >= 1, got {n_eval_episodes}")
    check_evaluation_env(model, env)
    returns: list[list[float]] = [[] for _ in range(env.num_tasks)]
    successes: list[list[float]] = [[] for _ in range(env.num_tasks)]
    episode_steps, episode_return = np.zeros(env.num_tasks, dtype=np.int64), np.zeros(env.num_tasks)
    cut: list[str] = []  # tasks whose episode did not end within max_episode_steps
    if seed is not None:
        env.action_space.seed(seed)
    obs = env.reset()
    while any(len(r) < n_eval_episodes and name not in cut for r, name in zip(returns, env.task_names, strict=True)):
        if model is None:
            actions = env.sample_actions()
        else:
            actions = evaluation_actions(model, obs, deterministic)
        obs, rewards, dones, infos = env.step(actions)
        episode_steps += 1
        episode_return += rewards
        for task, (done, info, name) in enumerate(zip(dones, infos, env.task_names, strict=True)):
            counted = len(returns[task]) < n_eval_episodes and name not in cut
            if done and counted:
                returns[task].append(float(info["episode"]["r"]))
                if "is_success" in info:
                    successes[task].append(float(info["is_success"]))
            elif counted and episode_steps[task] >= max_episode_steps:
                returns[task].append(float(episode_return[task]))
                cut.append(name)
            if done:
                episode_steps[task], episode_return[task] = 0, 0.0
    if cut:
        warnings.warn(
            f"Evaluation episodes of {cut} did not end within {max_episode_steps} steps: each was stopped there and its "
            "return so far counted. Give such a task a time limit (gymnasium.wrappers.TimeLimit).",
            stacklevel=2,
        )
    results = []
    for task, name in enumerate(env.task_names):
        success_rate = float(np.mean(successes[task])) if successes[task] else None
        mean_return = float(np.mean(returns[task]))
        results.append(
            dict(
                task=name,
                mean_return=mean_return,
                std_return=float(np.std(returns[task])),
                success_rate=success_rate,
                score=env.normalized_score(task, mean_return, success_rate),
                episodes=len(returns[task]),
            )
        )
    return results


class MultiTaskEvalCallback(BaseCallback):
    """Evaluate every task every ``eval_freq`` env steps per task; log to the logger and a CSV file.

    Logger keys: ``eval/<task>/mean_reward``, ``eval/<task>/success_rate``, ``eval/<task>/score`` and
    ``eval/mean_score`` (mean over tasks with a defined score).

    :param eval_env: A separate ``MultiTaskVecEnv`` with the same tasks as the training env
    :param eval_freq: Evaluate every ``eval_freq`` vector steps (= env steps per task)
    :param n_eval_episodes: Episodes per task
    :param log_path: CSV file to append results to (``None``: no file)
    :param deterministic: Deterministic actions (BRC default)
    :param verbose: Print a line per task when 1
    """

    def __init__(
        self,
        eval_env: BaseMultiTaskVecEnv,
        eval_freq: int = 10_000,
        n_eval_episodes: int = 10,
        log_path: str | None = None,
        deterministic: bool = True,
        verbose: int = 0,
    ):
        super().__init__(verbose)
        if eval_freq < 1 or n_eval_episodes < 1:
            raise ValueError(f"eval_freq and n_eval_episodes must be >= 1, got {eval_freq} and {n_eval_episodes}")
        self.eval_env = eval_env
        self.eval_freq = eval_freq
        self.n_eval_episodes = n_eval_episodes
        self.log_path = log_path
        self.deterministic = deterministic
        self.history: list[dict[str, Any]] = []

    def _init_callback(self) -> None:
        check_evaluation_env(self.model, self.eval_env)
        if self.log_path is not None and os.path.dirname(self.log_path):
            os.makedirs(os.path.dirname(self.log_path), exist_ok=True)

    def _on_step(self) -> bool:
        # Scheduled on the step count, not on calls, so a resumed run keeps the same schedule
        if (self.num_timesteps // self.training_env.num_envs) % self.eval_freq == 0:
            self.evaluate()
        return True

    def evaluate(self) -> list[dict[str, Any]]:
        """Evaluate now, record and return the per-task rows."""
        results = evaluate_tasks(self.model, self.eval_env, self.n_eval_episodes, self.deterministic)
        steps_per_task = self.num_timesteps // self.training_env.num_envs
        rows = [dict(timesteps=self.num_timesteps, steps_per_task=steps_per_task, **result) for result in results]
        self.history.extend(rows)
        for row in rows:
            self.logger.record(f"eval/{row['task']}/mean_reward", row["mean_return"])
            if row["success_rate"] is not None:
                self.logger.record(f"eval/{row['task']}/success_rate", row["success_rate"])
            if row["score"] is not None:
                self.logger.record(f"eval/{row['task']}/score", row["score"])
            if self.verbose:
                print(f"eval {steps_per_task} steps/task  {row['task']:28s} return {row['mean_return']:9.2f}")
        scores = [row["score"] for row in rows if row["score"] is not None]
        if scores:
            self.logger.record("eval/mean_score", float(np.mean(scores)))
        self.logger.dump(self.num_timesteps)
        if self.log_path is not None:
            write_eval_rows(self.log_path, rows, append=True)
        return rows
