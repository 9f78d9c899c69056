"""Scores of a grid and their rliable aggregates.

A task's score is its own normalised score where BRC defines one (:func:`sb3_brc.envs.scores.normalized_score`: DMC
return / 1000, Meta-World and ShadowHand success rate, Atari human-normalised, HumanoidBench success-normalised);
otherwise min-max normalisation per task, ``(R - R_random) / (R_best - R_random)``
with ``R_random`` the random policy's mean return and ``R_best`` the best evaluation return any run of the grid
reached on that task (so min-max scores are relative to this grid, not absolute).
"""

import math
import os
import warnings
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any

import numpy as np

from sb3_brc.bench.grid import RunSpec, read_json, saved_status
from sb3_brc.tools.report import read_eval_csv


def rliable() -> tuple[ModuleType, ModuleType, ModuleType]:
    """rliable's ``library``, ``metrics`` and ``plot_utils`` (an optional dependency: the ``bench`` extra)."""
    try:
        from rliable import library, metrics, plot_utils
    except ImportError as error:
        raise ImportError("Aggregation needs rliable: pip install 'sb3-brc[bench]'") from error
    return library, metrics, plot_utils


@dataclass(frozen=True)
class Normalization:
    """How a task's returns become scores: ``"native"`` (the task's own score column) or ``"min-max"``."""

    method: str
    random_return: float
    best_return: float

    def score(self, mean_return: float, native_score: float | None) -> float:
        """Normalised score of one evaluation."""
        if self.method == "native":
            if native_score is None:
                raise ValueError("A task normalised natively has an evaluation without a score")
            return float(native_score)
        span = self.best_return - self.random_return
        # A task on which no run beat the random policy has no scale: every score is 0 there
        return 0.0 if span <= 0 else (mean_return - self.random_return) / span


def task_normalizations(rows: Sequence[dict[str, Any]], random_returns: dict[str, list[float]]) -> dict[str, Normalization]:
    """Choose each task's normalisation from all evaluation rows of the grid.

    :param rows: Evaluation rows (``task``, ``mean_return``, ``score``) of every run and evaluation point
    :param random_returns: Per task, the random policy's mean return measured by each run that has the task
    :return: Per task: native where every row has a score (DMC, Meta-World), else min-max between the random
        return (mean over the runs) and the best evaluation return of the grid
    """
    by_task: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for row in rows:
        by_task[row["task"]].append(row)
    norms = {}
    for task, task_rows in by_task.items():
        random = float(np.mean(random_returns[task])) if random_returns.get(task) else math.nan
        best = max(row["mean_return"] for row in task_rows)
        native = all(row["score"] is not None for row in task_rows)
        norms[task] = Normalization("native" if native else "min-max", random, best)
    return norms


@dataclass
class GridData:
    """Scores of a grid: ``final[algo]`` is ``(runs, tasks)`` at the last evaluation, ``curves[algo]`` is
    ``(runs, tasks, points)`` over the evaluation points ``steps``, ``return_curves[algo]`` the same shape in mean
    evaluation returns (not normalised); a "run" is one seed (covering all tasks)."""

    algos: list[str]
    tasks: list[str]
    steps: list[int]
    final: dict[str, np.ndarray]
    curves: dict[str, np.ndarray]
    norms: dict[str, Normalization]
    return_curves: dict[str, np.ndarray]
    wall_s: dict[str, float]
    cpu_s: dict[str, float]  # process CPU seconds of all runs (runs recorded before CPU time was: 0)
    unfinished: list[str] = field(default_factory=list)  # keys of the unfinished runs read (``load_grid(unfinished=True)``)

    def final_returns(self, algo: str, task: str) -> np.ndarray:
        """Mean evaluation return of each run (seed) of ``algo`` on ``task`` at the last evaluation point."""
        return self.return_curves[algo][:, self.tasks.index(task), -1]


def load_grid(runs: Sequence[RunSpec], unfinished: bool = False) -> GridData:
    """Read the complete runs of a grid and score them.

    :param runs: The grid's runs
    :param unfinished: Also read the runs that started and did not finish yet (an interim look at a long grid); the
        scores then stop at the last evaluation every run read has reached. Otherwise those runs are left out.
    """
    table: dict[tuple[str, int, str], dict[int, dict[str, Any]]] = defaultdict(dict)
    random_returns: dict[str, list[float]] = defaultdict(list)
    all_rows: list[dict[str, Any]] = []
    wall: dict[str, float] = defaultdict(float)
    cpu: dict[str, float] = defaultdict(float)
    unfinished_keys = []
    for spec in runs:
        status, evaluations = saved_status(spec), os.path.join(spec.run_dir, "evaluations.csv")
        if status == "complete":
            rows = read_eval_csv(evaluations)
        elif status == "running" and unfinished:
            rows = read_eval_csv(evaluations) if os.path.exists(evaluations) else []
            if not rows:
                continue  # started, not evaluated yet
            unfinished_keys.append(spec.key)
        else:
            continue
        for row in read_json(os.path.join(spec.run_dir, "random.json")) or []:
            random_returns[row["task"]].append(row["mean_return"])
        for row in rows:
            table[(spec.algo_name, spec.seed, row["task"])][row["steps_per_task"]] = row
        all_rows += rows
        times = read_json(os.path.join(spec.run_dir, "config.json"))
        wall[spec.algo_name] += float(times.get("wall_s", 0.0))
        cpu[spec.algo_name] += float(times.get("cpu_s", 0.0))
    if not table:
        why = "nor unfinished runs with an evaluation" if unfinished else "a run that failed is listed above with its error"
        raise ValueError(f"No complete runs to aggregate ({why})")
    norms = task_normalizations(all_rows, random_returns)
    algos = list(dict.fromkeys(spec.algo_name for spec in runs if any(k[0] == spec.algo_name for k in table)))
    tasks = sorted({task for (_, _, task) in table})
    # Tasks and evaluation points every algorithm has, so that all score matrices line up
    tasks = [t for t in tasks if all(any(k[0] == a and k[2] == t for k in table) for a in algos)]
    if not tasks:
        raise ValueError(f"No task has complete runs of every algorithm ({algos}); nothing to compare")
    steps = sorted(set.intersection(*(set(points) for points in table.values())))
    final, curves, return_curves = {}, {}, {}
    for algo in algos:
        seeds = sorted({s for (a, s, t) in table if a == algo and all((algo, s, task) in table for task in tasks)})
        if not seeds:
            have = sorted((s, t) for (a, s, t) in table if a == algo)
            raise ValueError(
                f"No seed of {algo} has runs on all tasks {tasks} (it has (seed, task) {have}); rerun the failed runs "
                "(the grid resumes them) or leave the incomplete tasks or seeds out"
            )
        cells = [[[table[(algo, s, t)][p] for p in steps] for t in tasks] for s in seeds]
        curve = np.array(
            [
                [[norms[t].score(r["mean_return"], r["score"]) for r in row] for t, row in zip(tasks, seed_rows, strict=True)]
                for seed_rows in cells
            ]
        )
        curves[algo], final[algo] = curve, curve[:, :, -1]
        return_curves[algo] = np.array([[[r["mean_return"] for r in row] for row in seed_rows] for seed_rows in cells])
    return GridData(algos, tasks, steps, final, curves, norms, return_curves, dict(wall), dict(cpu), unfinished_keys)


def aggregate(data: GridData, reference: str | None = None, reps: int = 2000, seed: int = 0) -> dict[str, Any]:
    """rliable aggregates of a grid, with stratified-bootstrap 95% CIs.

    :param data: Scores from :func:`load_grid`
    :param reference: Algorithm compared with each other one by probability of improvement (default: the first)
    :param reps: Bootstrap resamples
    :param seed: Seed of the bootstrap
    :return: ``{"point": {algo: [IQM, mean, median]}, "ci": {algo: [[lo, hi] x 3]}, "poi": {pair: (p, lo, hi)},
        "reference": algo, "curves": {algo: (iqm per point, ci (2, points))}, "profile": (taus, {algo: fraction
        of runs above each tau}, {algo: its CI})}``
    """
    library, metrics, _ = rliable()

    def rng() -> np.random.RandomState:
        # rliable's stratified bootstrap draws its resamples from numpy's global RNG (the random_state it takes
        # does not reach them): seed that too, for reproducible CIs; the caller's global state is restored below
        np.random.seed(seed)
        return np.random.RandomState(seed)

    def summary(scores: np.ndarray) -> np.ndarray:
        return np.array([metrics.aggregate_iqm(scores), metrics.aggregate_mean(scores), metrics.aggregate_median(scores)])

    def iqm_per_point(scores: np.ndarray) -> np.ndarray:
        return np.array([metrics.aggregate_iqm(scores[..., i]) for i in range(scores.shape[-1])])

    global_state = np.random.get_state()
    warnings.filterwarnings("ignore", message="random_state is deprecated", category=FutureWarning)
    try:
        point, ci = library.get_interval_estimates(data.final, summary, reps=reps, random_state=rng())
        result: dict[str, Any] = dict(point={a: point[a].tolist() for a in data.algos})
        result["ci"] = {a: ci[a].T.tolist() for a in data.algos}

        everything = np.concatenate([scores.ravel() for scores in data.final.values()])
        taus = np.linspace(min(0.0, float(everything.min())), max(1.0, float(everything.max())), 101)
        rng()
        result["profile"] = (taus, *library.create_performance_profile(data.final, taus, reps=reps))

        curve_point, curve_ci = library.get_interval_estimates(data.curves, iqm_per_point, reps=reps, random_state=rng())
        result["curves"] = {a: (curve_point[a].tolist(), curve_ci[a].tolist()) for a in data.algos}

        # The one asked for (its runs may all have failed), else brc_sac, else the first
        reference = next(a for a in (reference, "brc_sac", data.algos[0]) if a in data.algos)
        others = [a for a in data.algos if a != reference]
        result["reference"], result["poi"] = reference, {}
        if others:
            pairs = {f"{reference},{other}": [data.final[reference], data.final[other]] for other in others}
            improvement = metrics.probability_of_improvement
            poi, poi_ci = library.get_interval_estimates(pairs, improvement, reps=reps, random_state=rng())
            result["poi"] = {pair: (float(poi[pair]), *map(float, np.ravel(poi_ci[pair]))) for pair in pairs}
        return result
    finally:
        np.random.set_state(global_state)
