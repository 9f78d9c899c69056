"""Running a grid: each unfinished run trains in a spawned worker process, with a progress display."""

import functools
import multiprocessing
import os
import time
from collections.abc import Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from typing import Any

import numpy as np
import torch as th
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from stable_baselines3.common.base_class import BaseAlgorithm

from sb3_brc.bench.grid import RunSpec, is_complete
from sb3_brc.envs.vec_env import MultiTaskVecEnv
from sb3_brc.tools.training import per_task_budget, train_and_evaluate, write_json_atomic
from sb3_brc.tools.wandb_logging import open_wandb_run, run_name

# Replay capacity per task of every algorithm of the grid (the run's transitions, up to this many)
BUFFER_SIZE_PER_TASK = 1_000_000


def build_model(spec: RunSpec, env: MultiTaskVecEnv) -> BaseAlgorithm:
    """The algorithm of a run, with the harness's budget settings on top of the registry defaults."""
    settings = spec.settings
    kwargs = dict(spec.algo.kwargs)
    kwargs.update(
        per_task_budget(env.num_tasks, settings.steps_per_task, settings.learning_starts, BUFFER_SIZE_PER_TASK),
        policy_kwargs={**kwargs.get("policy_kwargs", {}), **spec.algo.policy_kwargs(settings.size, settings.width)},
        seed=spec.seed,
        device=settings.device,
        verbose=0,
    )
    if settings.batch_size is not None:
        kwargs["batch_size"] = settings.batch_size
    if settings.gradient_steps is not None:
        kwargs["gradient_steps"] = settings.gradient_steps
    return spec.algo.algo_class()(spec.algo.policy, env, **kwargs)


def _report_progress(queue: Any, key: str, rows: list[dict[str, Any]]) -> None:
    mean_return = float(np.mean([row["mean_return"] for row in rows]))
    queue.put((key, rows[0]["steps_per_task"], f"return {mean_return:.4g}"))


def run_one(spec: RunSpec, queue: Any = None) -> dict[str, Any]:
    """Train and evaluate one run, writing its directory; returns ``{"key", "status", "wall_s"}``.

    :param spec: The run
    :param queue: Optional queue receiving ``(key, steps_per_task_done, note)`` when training starts and after
        each evaluation
    """
    if is_complete(spec):
        return dict(key=spec.key, status="skipped", wall_s=0.0)
    start = time.time()
    settings, tasks = spec.settings, spec.tasks
    os.makedirs(spec.run_dir, exist_ok=True)
    config_path = os.path.join(spec.run_dir, "config.json")
    write_json_atomic(config_path, dict(spec.config(), status="running"))
    env = spec.algo.make_env(tasks.tasks, tasks.task_names, spec.seed, tasks.suite)
    # Separate evaluation envs, seeded away from the training envs
    eval_env = spec.algo.make_env(tasks.tasks, tasks.task_names, spec.seed + 10_000, tasks.suite, training=False)
    if queue is not None:
        queue.put((spec.key, 0, "training"))
    with open_wandb_run(spec.wandb, run_name(spec.algo_name, spec.tasks.label, spec.seed), spec.config(), "bench") as wandb:
        train_and_evaluate(
            env,
            eval_env,
            functools.partial(build_model, spec, env),
            steps_per_task=settings.steps_per_task,
            eval_every=settings.eval_every,
            eval_episodes=settings.eval_episodes,
            eval_csv=os.path.join(spec.run_dir, "evaluations.csv"),  # an unfinished run restarts from scratch
            baseline_json=os.path.join(spec.run_dir, "random.json"),
            seed=spec.seed,
            on_evaluation=None if queue is None else functools.partial(_report_progress, queue, spec.key),
            wandb_run=wandb,
        )
    env.close()
    eval_env.close()
    wall = time.time() - start
    write_json_atomic(config_path, dict(spec.config(), status="complete", wall_s=round(wall, 1)))
    return dict(key=spec.key, status="done", wall_s=wall)


def _init_worker(threads: int) -> None:
    os.environ.setdefault("MUJOCO_GL", "disable")
    th.set_num_threads(threads)


def run_grid(runs: Sequence[RunSpec], workers: int = 1, threads: int = 1, progress: bool = True) -> list[dict[str, Any]]:
    """Run the unfinished runs in ``workers`` spawned processes (``threads`` torch threads each) with a
    progress display; finished ones are skipped. A failing run is reported and does not stop the others.

    :return: One ``{"key", "status", "wall_s"[, "error"]}`` per run, ``status`` in done / skipped / failed
    """
    console = Console(quiet=not progress)
    results = [dict(key=spec.key, status="skipped", wall_s=0.0) for spec in runs if is_complete(spec)]
    pending = [spec for spec in runs if not is_complete(spec)]
    console.print(f"{len(runs)} runs: {len(results)} already complete, {len(pending)} to run on {workers} worker(s)")
    if not pending:
        return results
    context = multiprocessing.get_context("spawn")
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[note]}"))
    with (
        context.Manager() as manager,
        ProcessPoolExecutor(workers, mp_context=context, initializer=_init_worker, initargs=(threads,)) as pool,
        Progress(*columns, TimeElapsedColumn(), console=console, disable=not progress) as bar,
    ):
        queue = manager.Queue()
        overall = bar.add_task("runs", total=len(runs), completed=len(results), note="")
        rows: dict[str, Any] = {}
        futures: dict[Future, RunSpec] = {pool.submit(run_one, spec, queue): spec for spec in pending}
        while futures:
            finished, _ = wait(list(futures), timeout=0.5, return_when=FIRST_COMPLETED)
            while not queue.empty():
                key, steps, note = queue.get()
                if key not in rows:
                    rows[key] = bar.add_task(f"  {key}", total=pending[0].settings.steps_per_task, note="")
                bar.update(rows[key], completed=steps, note=note)
            for future in finished:
                spec = futures.pop(future)
                try:
                    result = future.result()
                except Exception as error:  # report and go on with the grid
                    result = dict(key=spec.key, status="failed", wall_s=0.0, error=f"{type(error).__name__}: {error}")
                results.append(result)
                if spec.key in rows:
                    bar.remove_task(rows.pop(spec.key))
                bar.advance(overall)
                detail = result.get("error") or f"{result['wall_s']:.0f} s"
                bar.console.print(f"{result['status']:>7s}  {spec.key}  ({detail})")
    return results
