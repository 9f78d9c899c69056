"""Benchmark harness: a grid of algorithms x tasks x seeds, run in parallel processes, aggregated with rliable.

Each run trains one algorithm on one task (or, for a multi-task algorithm, on all tasks of a suite at once),
evaluates it deterministically every ``eval_every`` env steps per task and writes, into
``OUT/<algo>/<task-or-suite>/seed<k>/``:

- ``evaluations.csv``: :data:`sb3_brc.tools.evaluation.CSV_FIELDS` rows, one per task and evaluation;
- ``random.json``: the random policy's per-task returns on the same evaluation env (the baseline of the score);
- ``config.json``: the run's settings and ``status`` (``"complete"`` once finished). A complete run with the same
  settings is skipped when the grid is run again, so an interrupted grid resumes where it stopped.

Then the grid is scored and aggregated (IQM, mean and median with stratified-bootstrap 95% CIs, performance
profiles, probability of improvement of a reference algorithm over each other one, IQM sample-efficiency
curves) into ``OUT/aggregate.md`` and PNGs next to it.

Scores: a task's own normalised score where BRC defines one (DMC return / 1000, Meta-World success rate,
Atari human-normalised score);
otherwise min-max normalisation per task, ``(R - R_random) / (R_best - R_random)`` with ``R_random`` the
random policy's mean return and ``R_best`` the best evaluation return any run of the grid reached on that task
(so min-max scores are relative to this grid, not absolute). ``aggregate.md`` lists which one each task used.

Algorithms live in :data:`ALGOS`, name -> :class:`BenchAlgo`; adding one is one entry (:func:`register_algo`).
``brc_dqn`` (BRCDQN, discrete actions) runs on the Atari suites (``atari-2``, ``atari-5``) and other discrete
tasks; its evaluation envs play whole games and its scores are human-normalised.
"""

from __future__ import annotations

import argparse
import functools
import importlib
import json
import math
import multiprocessing
import os
import shlex
import sys
import time
import warnings
from collections import defaultdict
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from dataclasses import asdict, dataclass, field
from typing import Any

import gymnasium as gym
import matplotlib
import numpy as np

from sb3_brc.envs.vec_env import DiscreteMultiTaskVecEnv, MultiTaskVecEnv, TaskSpec
from sb3_brc.sac.policies import SIZE_PRESETS
from sb3_brc.tools.evaluation import MultiTaskEvalCallback, evaluate_tasks
from sb3_brc.tools.report import read_eval_csv

matplotlib.use("Agg")  # headless
import matplotlib.pyplot as plt

# ---------------------------------------------------------------------------------------------------------------------
# Algorithms


def brc_policy_kwargs(size: str, width: int | None) -> dict[str, Any]:
    """BRC network size: a :data:`SIZE_PRESETS` name, or critic blocks ``[width, width]`` when ``width`` is set."""
    if width is not None:
        return dict(net_arch=dict(pi=[min(width, 256)], qf=[width, width]))
    return dict(net_arch=SIZE_PRESETS[size])


def mlp_policy_kwargs(size: str, width: int | None) -> dict[str, Any]:
    """SB3 baselines: their own default networks, or two hidden layers of ``width`` when it is set."""
    return {} if width is None else dict(net_arch=[width, width])


def crossq_policy_kwargs(size: str, width: int | None) -> dict[str, Any]:
    """CrossQ: its default networks (critic 2 x 1024 with batch norm), or both at ``[width, width]``."""
    return {} if width is None else dict(net_arch=dict(pi=[width, width], qf=[width, width]))


def make_multi_task_env(
    tasks: Sequence[TaskSpec], task_names: Sequence[str] | None, seed: int, suite: str | None = None, training: bool = True
):
    """The default env builder of the harness: a :class:`MultiTaskVecEnv` of the tasks (one task for a
    single-task run: the task id column it appends is then a constant 0). ``suite`` builds a named suite with
    :func:`sb3_brc.envs.suites.make_suite` instead (Meta-World and Atari suites only exist as such); ``training=False``
    builds evaluation envs (Atari: whole games instead of episodes ending at a lost life)."""
    if suite is not None:
        from sb3_brc.envs.suites import make_suite

        return make_suite(suite, seed=seed, training=training)
    return MultiTaskVecEnv(list(tasks), task_names=list(task_names) if task_names else None, seed=seed)


def discrete_multi_task_env(
    tasks: Sequence[TaskSpec], task_names: Sequence[str] | None, seed: int, suite: str | None = None, training: bool = True
):
    """Env builder of discrete-action algorithms: a suite (Atari) or a :class:`DiscreteMultiTaskVecEnv`."""
    if suite is not None:
        return make_multi_task_env(tasks, task_names, seed, suite, training)
    return DiscreteMultiTaskVecEnv(list(tasks), task_names=list(task_names) if task_names else None, seed=seed)


def dqn_policy_kwargs(size: str, width: int | None) -> dict[str, Any]:
    """BRCDQN's BroNet head: the size preset's critic blocks, or ``[width, width]``."""
    return dict(net_arch=[width, width] if width is not None else SIZE_PRESETS[size]["qf"])


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
        needs (``training=False``: the evaluation env)
    :param description: One line for ``--help``

    The entry travels to spawned worker processes, so its functions must be picklable (module-level, no lambdas).
    """

    cls: type | str
    policy: str = "MlpPolicy"
    kwargs: dict[str, Any] = field(default_factory=dict)
    multi_task: bool = False
    policy_kwargs: Callable[[str, int | None], dict[str, Any]] = mlp_policy_kwargs
    make_env: Callable[..., Any] = make_multi_task_env
    description: str = ""

    def algo_class(self) -> type:
        """The algorithm class (imported now if given as ``"module:Class"``)."""
        if isinstance(self.cls, str):
            module, _, name = self.cls.partition(":")
            return getattr(importlib.import_module(module), name)
        return self.cls


ALGOS: dict[str, BenchAlgo] = {
    "brc_sac": BenchAlgo(
        "sb3_brc.sac.sac:BRCSAC",
        multi_task=True,
        policy_kwargs=brc_policy_kwargs,
        description="BRC (sb3_brc.BRCSAC); a suite is one multi-task run",
    ),
    "brc_sac_st": BenchAlgo(
        "sb3_brc.sac.sac:BRCSAC",
        multi_task=False,
        policy_kwargs=brc_policy_kwargs,
        description="single-task BRC: sb3_brc.BRCSAC trained separately on each task of a suite",
    ),
    "brc_dqn": BenchAlgo(
        "sb3_brc.dqn.dqn:BRCDQN",
        "CnnPolicy",
        multi_task=True,
        policy_kwargs=dqn_policy_kwargs,
        make_env=discrete_multi_task_env,
        description="BRC for discrete actions (sb3_brc.BRCDQN): Atari suites, CartPole, ...",
    ),
    "sac": BenchAlgo("stable_baselines3:SAC", description="SB3 SAC, its default hyperparameters"),
    "tqc": BenchAlgo("sb3_contrib:TQC", description="sb3-contrib TQC, its default hyperparameters"),
    "crossq": BenchAlgo(
        "sb3_contrib:CrossQ", policy_kwargs=crossq_policy_kwargs, description="sb3-contrib CrossQ, its default hyperparameters"
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


# ---------------------------------------------------------------------------------------------------------------------
# Tasks


def _pendulum(g: float) -> gym.Env:
    return gym.make("Pendulum-v1", g=g)


# Suites that exist only for benchmarking (CPU-sized); sb3_brc.envs.suites.SUITES are accepted as well
BENCH_SUITES: dict[str, list[tuple[str, TaskSpec]]] = {
    "pendulum-gravity": [(f"pendulum-g{g}", functools.partial(_pendulum, float(g))) for g in (6, 9, 12)],
}


@dataclass(frozen=True)
class TaskSet:
    """What ``--tasks`` names: a single task, or a suite (several tasks)."""

    label: str
    tasks: tuple[TaskSpec, ...]
    task_names: tuple[str, ...]
    suite: str | None = None  # build with make_suite (suites that only exist as one vector env, e.g. Meta-World)

    @property
    def is_suite(self) -> bool:
        return len(self.tasks) > 1 or self.suite is not None


def resolve_task_set(name: str) -> TaskSet:
    """Resolve a ``--tasks`` entry: a :data:`BENCH_SUITES` or :data:`sb3_brc.envs.suites.SUITES` name, a Gymnasium id,
    a DMC short name or a Meta-World task name."""
    from sb3_brc.envs.suites import SUITES, task_factory

    if name in BENCH_SUITES:
        names, specs = zip(*BENCH_SUITES[name], strict=True)
        return TaskSet(name, tuple(specs), tuple(names))
    if name in SUITES:
        suite = SUITES[name]
        if suite.atari:
            from sb3_brc.envs.atari import atari_game

            names = tuple(atari_game(game) for game in suite.tasks)
            return TaskSet(name, names, names, suite=name)
        if suite.metaworld is not None:
            from sb3_brc.envs.suites import make_suite

            env = make_suite(name)
            names = tuple(env.task_names)
            env.close()
            return TaskSet(name, names, names, suite=name)
        names = tuple(task_factory(task)[1] or task for task in suite.tasks)
        return TaskSet(name, tuple(suite.tasks), names)
    resolved = task_factory(name)[1] or name
    return TaskSet(resolved, (name,), (resolved,))


# ---------------------------------------------------------------------------------------------------------------------
# Runs


@dataclass(frozen=True)
class BenchSettings:
    """Budget and sizes shared by every run of a grid (saved in each run's ``config.json``)."""

    steps_per_task: int = 5000
    eval_every: int = 1000
    eval_episodes: int = 5
    learning_starts: int = 1000  # per task
    batch_size: int | None = None  # None: each algorithm's default
    gradient_steps: int | None = None  # None: each algorithm's default (BRC 2, SAC/TQC/CrossQ 1)
    size: str = "tiny"
    width: int | None = None
    device: str = "auto"
    threads: int = 1

    def check(self) -> None:
        """Reject budgets that cannot produce the evaluation schedule."""
        if self.steps_per_task < 1 or self.eval_every < 1 or self.eval_episodes < 1:
            raise ValueError("steps_per_task, eval_every and eval_episodes must be >= 1")
        if self.steps_per_task % self.eval_every != 0:
            raise ValueError(f"steps_per_task ({self.steps_per_task}) must be a multiple of eval_every ({self.eval_every})")
        if self.size not in SIZE_PRESETS:
            raise ValueError(f"Unknown size {self.size!r}; presets: {list(SIZE_PRESETS)}")


@dataclass(frozen=True)
class RunSpec:
    """One run of the grid: an algorithm on a task (or, multi-task, a suite) with one seed."""

    algo_name: str
    algo: BenchAlgo
    task_set: TaskSet
    seed: int
    settings: BenchSettings
    out: str

    @property
    def key(self) -> str:
        return f"{self.algo_name}/{self.task_set.label}/seed{self.seed}"

    @property
    def run_dir(self) -> str:
        return os.path.join(self.out, self.algo_name, self.task_set.label.replace("/", "_"), f"seed{self.seed}")

    def config(self) -> dict[str, Any]:
        """What a finished run must match to be skipped."""
        cls = self.algo.cls
        return dict(
            algo=self.algo_name,
            algo_class=cls if isinstance(cls, str) else f"{cls.__module__}:{cls.__name__}",
            task_set=self.task_set.label,
            task_names=list(self.task_set.task_names),
            seed=self.seed,
            **asdict(self.settings),
        )


def grid(out: str, algos: Sequence[str], tasks: Sequence[str], seeds: Sequence[int], settings: BenchSettings) -> list[RunSpec]:
    """The runs of a grid: multi-task algorithms take a suite as one run, the others one run per task."""
    settings.check()
    unknown = [name for name in algos if name not in ALGOS]
    if unknown:
        raise ValueError(f"Unknown algorithm(s) {unknown}; registered: {sorted(ALGOS)}")
    task_sets = [resolve_task_set(name) for name in tasks]
    runs = []
    for name in algos:
        algo = ALGOS[name]
        for task_set in task_sets:
            if algo.multi_task or not task_set.is_suite:
                parts = [task_set]
            else:
                parts = [TaskSet(n, (spec,), (n,)) for spec, n in zip(task_set.tasks, task_set.task_names, strict=True)]
            runs += [RunSpec(name, algo, part, seed, settings, out) for part in parts for seed in seeds]
    return runs


def _read_json(path: str) -> dict[str, Any] | None:
    try:
        with open(path) as file:
            return json.load(file)
    except (OSError, json.JSONDecodeError):
        return None


def _write_json(path: str, data: Any) -> None:
    tmp = f"{path}.tmp"
    with open(tmp, "w") as file:
        json.dump(data, file, indent=2)
    os.replace(tmp, path)  # a run killed mid-write leaves the previous file, never half of one


def is_complete(spec: RunSpec) -> bool:
    """A finished run with the same settings (its evaluations are reused)."""
    saved = _read_json(os.path.join(spec.run_dir, "config.json"))
    if saved is None or saved.get("status") != "complete":
        return False
    return {k: v for k, v in saved.items() if k not in ("status", "wall_s")} == spec.config()


class _ReportingEval(MultiTaskEvalCallback):
    """Evaluation callback that also tells the parent process about each evaluation (progress display)."""

    def __init__(self, *args: Any, queue: Any = None, key: str = "", **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.queue, self.key = queue, key

    def evaluate(self) -> list[dict[str, Any]]:
        rows = super().evaluate()
        if self.queue is not None:
            mean_return = float(np.mean([row["mean_return"] for row in rows]))
            self.queue.put((self.key, rows[0]["steps_per_task"], f"return {mean_return:.4g}"))
        return rows


def build_model(spec: RunSpec, env: Any) -> Any:
    """The algorithm of a run, with the harness's budget settings on top of the registry defaults."""
    settings = spec.settings
    num_tasks = env.num_envs
    kwargs = dict(spec.algo.kwargs)
    kwargs.update(
        learning_starts=settings.learning_starts * num_tasks,
        buffer_size=min(settings.steps_per_task, 1_000_000) * num_tasks,
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


def run_one(spec: RunSpec, queue: Any = None) -> dict[str, Any]:
    """Train and evaluate one run, writing its directory; returns ``{"key", "status", "wall_s"}``.

    :param spec: The run
    :param queue: Optional queue receiving ``(key, steps_per_task_done, note)`` after each evaluation
    """
    if is_complete(spec):
        return dict(key=spec.key, status="skipped", wall_s=0.0)
    start = time.time()
    settings = spec.settings
    os.makedirs(spec.run_dir, exist_ok=True)
    config_path = os.path.join(spec.run_dir, "config.json")
    csv_path = os.path.join(spec.run_dir, "evaluations.csv")
    _write_json(config_path, dict(spec.config(), status="running"))
    if os.path.exists(csv_path):
        os.remove(csv_path)  # an unfinished run restarts from scratch
    task_set = spec.task_set
    env = spec.algo.make_env(task_set.tasks, task_set.task_names, spec.seed, task_set.suite)
    # Separate evaluation envs, seeded away from the training envs
    eval_env = spec.algo.make_env(task_set.tasks, task_set.task_names, spec.seed + 10_000, task_set.suite, training=False)
    random_rows = evaluate_tasks(None, eval_env, settings.eval_episodes, seed=spec.seed)
    _write_json(os.path.join(spec.run_dir, "random.json"), random_rows)
    model = build_model(spec, env)
    if queue is not None:
        queue.put((spec.key, 0, "training"))
    evaluation = _ReportingEval(
        eval_env, settings.eval_every, settings.eval_episodes, log_path=csv_path, queue=queue, key=spec.key
    )
    model.learn(settings.steps_per_task * env.num_envs, callback=evaluation)
    done = [row for row in evaluation.history if row["steps_per_task"] == settings.steps_per_task]
    if not done:  # the schedule hits steps_per_task on the last step; this covers envs that count otherwise
        evaluation.evaluate()
    env.close()
    eval_env.close()
    wall = time.time() - start
    _write_json(config_path, dict(spec.config(), status="complete", wall_s=round(wall, 1)))
    return dict(key=spec.key, status="done", wall_s=wall)


def _init_worker(threads: int) -> None:
    import torch as th

    os.environ.setdefault("MUJOCO_GL", "disable")
    th.set_num_threads(threads)


def run_grid(runs: Sequence[RunSpec], workers: int = 1, threads: int = 1, progress: bool = True) -> list[dict[str, Any]]:
    """Run the unfinished runs in ``workers`` spawned processes (``threads`` torch threads each) with a
    progress display; finished ones are skipped. A failing run is reported and does not stop the others.

    :return: One ``{"key", "status", "wall_s"[, "error"]}`` per run, ``status`` in done / skipped / failed
    """
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

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


# ---------------------------------------------------------------------------------------------------------------------
# Scores and aggregation


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
    ``(runs, tasks, points)`` over the evaluation points ``steps``; a "run" is one seed (covering all tasks)."""

    algos: list[str]
    tasks: list[str]
    steps: list[int]
    final: dict[str, np.ndarray]
    curves: dict[str, np.ndarray]
    norms: dict[str, Normalization]
    returns: dict[str, dict[str, list[float]]]  # algo -> task -> final mean return per seed
    wall_s: dict[str, float]


def load_grid(runs: Sequence[RunSpec]) -> GridData:
    """Read the complete runs of a grid and score them (runs that did not finish are left out)."""
    table: dict[tuple[str, int, str], dict[int, dict[str, Any]]] = defaultdict(dict)
    random_returns: dict[str, list[float]] = defaultdict(list)
    all_rows: list[dict[str, Any]] = []
    wall: dict[str, float] = defaultdict(float)
    for spec in runs:
        if not is_complete(spec):
            continue
        rows = read_eval_csv(os.path.join(spec.run_dir, "evaluations.csv"))
        for row in _read_json(os.path.join(spec.run_dir, "random.json")) or []:
            random_returns[row["task"]].append(row["mean_return"])
        for row in rows:
            table[(spec.algo_name, spec.seed, row["task"])][row["steps_per_task"]] = row
        all_rows += rows
        wall[spec.algo_name] += float(_read_json(os.path.join(spec.run_dir, "config.json")).get("wall_s", 0.0))
    if not table:
        raise ValueError("No complete runs to aggregate")
    norms = task_normalizations(all_rows, random_returns)
    algos = list(dict.fromkeys(spec.algo_name for spec in runs if any(k[0] == spec.algo_name for k in table)))
    tasks = sorted({task for (_, _, task) in table})
    # Tasks and evaluation points every algorithm has, so that all score matrices line up
    tasks = [t for t in tasks if all(any(k[0] == a and k[2] == t for k in table) for a in algos)]
    if not tasks:
        raise ValueError(f"No task has complete runs of every algorithm ({algos}); nothing to compare")
    steps = sorted(set.intersection(*(set(points) for points in table.values())))
    final, curves, returns = {}, {}, {}
    for algo in algos:
        seeds = sorted({s for (a, s, t) in table if a == algo and all((algo, s, task) in table for task in tasks)})
        cells = [[[table[(algo, s, t)][p] for p in steps] for t in tasks] for s in seeds]
        curve = np.array(
            [
                [[norms[t].score(r["mean_return"], r["score"]) for r in row] for t, row in zip(tasks, seed_rows, strict=True)]
                for seed_rows in cells
            ]
        )
        curves[algo], final[algo] = curve, curve[:, :, -1]
        returns[algo] = {t: [table[(algo, s, t)][steps[-1]]["mean_return"] for s in seeds] for t in tasks}
    return GridData(algos, tasks, steps, final, curves, norms, returns, dict(wall))


def aggregate(data: GridData, out: str, reference: str | None = None, reps: int = 2000, seed: int = 0) -> dict[str, Any]:
    """rliable aggregates of a grid, with PNGs written into ``out``.

    :param data: Scores from :func:`load_grid`
    :param out: Directory for ``intervals.png``, ``performance_profile.png``, ``sample_efficiency.png`` and
        ``probability_of_improvement.png``
    :param reference: Algorithm compared with each other one by probability of improvement (default: the first)
    :param reps: Bootstrap resamples
    :param seed: Seed of the bootstrap
    :return: ``{"point": {algo: [IQM, mean, median]}, "ci": {algo: [[lo, hi] x 3]}, "poi": {pair: (p, lo, hi)},
        "curves": {algo: (iqm per point, ci (2, points))}, "plots": [file names]}``
    """
    try:
        from rliable import library as rly
        from rliable import metrics, plot_utils
    except ImportError as error:
        raise ImportError("Aggregation needs rliable: pip install 'sb3-brc[bench]'") from error

    def rng() -> np.random.RandomState:
        # rliable's stratified bootstrap draws its resamples from numpy's global RNG (the random_state it takes
        # does not reach them): seed that too, for reproducible CIs; the caller's global state is restored below
        np.random.seed(seed)
        return np.random.RandomState(seed)

    global_state = np.random.get_state()
    try:
        return _aggregate(data, out, reference, reps, rng, rly, metrics, plot_utils)
    finally:
        np.random.set_state(global_state)


def _aggregate(
    data: GridData, out: str, reference: str | None, reps: int, rng: Callable, rly: Any, metrics: Any, plot_utils: Any
) -> dict[str, Any]:
    """The body of :func:`aggregate` (its seeded bootstrap RNG and rliable modules passed in)."""
    warnings.filterwarnings("ignore", message="random_state is deprecated", category=FutureWarning)

    def summary(scores: np.ndarray) -> np.ndarray:
        return np.array([metrics.aggregate_iqm(scores), metrics.aggregate_mean(scores), metrics.aggregate_median(scores)])

    point, ci = rly.get_interval_estimates(data.final, summary, reps=reps, random_state=rng())
    result: dict[str, Any] = dict(
        point={a: point[a].tolist() for a in data.algos}, ci={a: ci[a].T.tolist() for a in data.algos}, plots=[]
    )
    colors = dict(zip(data.algos, plt.get_cmap("tab10").colors, strict=False))

    # Metric names carry the unit: rliable places its x label in figure coordinates, over the ticks in short plots
    axes = plot_utils.plot_interval_estimates(
        point, ci, metric_names=["IQM score", "Mean score", "Median score"], algorithms=data.algos, colors=colors, xlabel=""
    )
    _save(axes, os.path.join(out, "intervals.png"), result)

    everything = np.concatenate([scores.ravel() for scores in data.final.values()])
    taus = np.linspace(min(0.0, float(everything.min())), max(1.0, float(everything.max())), 101)
    rng()
    profiles, profile_cis = rly.create_performance_profile(data.final, taus, reps=reps)
    _, ax = plt.subplots(figsize=(6, 4))
    plot_utils.plot_performance_profiles(
        profiles,
        taus,
        performance_profile_cis=profile_cis,
        colors=colors,
        ax=ax,
        xlabel=r"normalised score $\tau$",
        ylabel=r"fraction of runs with score $> \tau$",
        labelsize="medium",
        ticklabelsize="small",
    )
    _legend(ax, data.algos, colors)
    _save(ax, os.path.join(out, "performance_profile.png"), result)

    def iqm_per_point(scores: np.ndarray) -> np.ndarray:
        return np.array([metrics.aggregate_iqm(scores[..., i]) for i in range(scores.shape[-1])])

    curve_point, curve_ci = rly.get_interval_estimates(data.curves, iqm_per_point, reps=reps, random_state=rng())
    ax = plot_utils.plot_sample_efficiency_curve(
        np.array(data.steps),
        curve_point,
        curve_ci,
        algorithms=data.algos,
        colors=colors,
        figsize=(6, 4),
        xlabel="env steps per task",
        ylabel="IQM normalised score",
        labelsize="medium",
        ticklabelsize="small",
    )
    _legend(ax, data.algos, colors)
    _save(ax, os.path.join(out, "sample_efficiency.png"), result)
    result["curves"] = {a: (curve_point[a].tolist(), curve_ci[a].tolist()) for a in data.algos}

    reference = reference if reference in data.algos else data.algos[0]
    others = [a for a in data.algos if a != reference]
    result["reference"], result["poi"] = reference, {}
    if others:
        pairs = {f"{reference},{other}": [data.final[reference], data.final[other]] for other in others}
        poi, poi_ci = rly.get_interval_estimates(pairs, metrics.probability_of_improvement, reps=reps, random_state=rng())
        result["poi"] = {pair: (float(poi[pair]), *map(float, np.ravel(poi_ci[pair]))) for pair in pairs}
        ax = plot_utils.plot_probability_of_improvement(poi, poi_ci, figsize=(5, 0.6 + 0.5 * len(pairs)))
        _save(ax, os.path.join(out, "probability_of_improvement.png"), result)
    return result


def _legend(ax: Any, algos: list[str], colors: dict[str, Any]) -> None:
    # One line per algorithm (rliable's plots draw a line and a CI band each: a plain legend() would pair them up)
    ax.legend([plt.Line2D([0], [0], color=colors[a]) for a in algos], algos, fontsize=8)


def _save(axes: Any, path: str, result: dict[str, Any]) -> None:
    figure = (axes[0] if isinstance(axes, np.ndarray | list | tuple) else axes).get_figure()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # tight_layout cannot always fit rliable's layouts; bbox does
        figure.tight_layout()
    figure.savefig(path, dpi=100, bbox_inches="tight")
    plt.close(figure)
    result["plots"].append(os.path.basename(path))


def _ci(value: float, interval: Sequence[float]) -> str:
    return f"{value:.3f} [{interval[0]:.3f}, {interval[1]:.3f}]"


def render_markdown(data: GridData, result: dict[str, Any], settings: BenchSettings, image_prefix: str = "") -> str:
    """Markdown tables and plot links of an aggregated grid (no heading; ``image_prefix`` leads plot paths)."""
    lines = [
        f"Budget: {settings.steps_per_task} env steps per task, deterministic evaluation ({settings.eval_episodes} "
        f"episodes) every {settings.eval_every} steps per task, warm-up {settings.learning_starts} steps per task; "
        f"BRC size `{settings.size}`"
        + (f", width {settings.width}" if settings.width else "")
        + (f", batch {settings.batch_size}" if settings.batch_size else ", each algorithm's default batch")
        + (f", {settings.gradient_steps} gradient steps per env step" if settings.gradient_steps else "")
        + f"; device `{settings.device}`, {settings.threads} torch thread(s) per run.",
        "",
        "Score normalisation per task: `native` = the task's own score (DMC return / 1000, Meta-World success rate, "
        "Atari human-normalised); "
        "`min-max` = (return - random) / (best - random), with the random policy's return and the best evaluation "
        "return of any run in this grid (relative to this grid only).",
        "",
        "| task | normalisation | random return | best return | " + " | ".join(data.algos) + " |",
        "|---|---|---|---|" + "---|" * len(data.algos),
    ]
    for task in data.tasks:
        norm = data.norms[task]
        cells = [f"{np.mean(data.returns[a][task]):.1f} ± {np.std(data.returns[a][task]):.1f}" for a in data.algos]
        head = f"| {task} | {norm.method} | {norm.random_return:.1f} | {norm.best_return:.1f} | "
        lines.append(head + " | ".join(cells) + " |")
    lines += [
        "",
        "Algorithm columns: final evaluation return, mean ± std over seeds.",
        "",
        f"Aggregate normalised score at the last evaluation over {len(data.tasks)} task(s), stratified bootstrap 95% CIs:",
        "",
        "| algorithm | runs (seeds) | IQM | mean | median | wall time (all runs) |",
        "|---|---|---|---|---|---|",
    ]
    for algo in data.algos:
        point, ci = result["point"][algo], result["ci"][algo]
        lines.append(
            f"| {algo} | {data.final[algo].shape[0]} | {_ci(point[0], ci[0])} | {_ci(point[1], ci[1])} | "
            f"{_ci(point[2], ci[2])} | {data.wall_s.get(algo, 0.0) / 60:.1f} min |"
        )
    if result["poi"]:
        lines += ["", "| X | Y | P(X > Y) [95% CI] |", "|---|---|---|"]
        for pair, (p, lo, hi) in result["poi"].items():
            x, y = pair.split(",")
            lines.append(f"| {x} | {y} | {_ci(p, (lo, hi))} |")
    lines += ["", "IQM normalised score over evaluation points:", ""]
    lines += ["| algorithm | " + " | ".join(str(s) for s in data.steps) + " |", "|---|" + "---|" * len(data.steps)]
    for algo in data.algos:
        lines.append(f"| {algo} | " + " | ".join(f"{v:.2f}" for v in result["curves"][algo][0]) + " |")
    lines.append("")
    lines += [f"![{name.removesuffix('.png')}]({image_prefix}{name})" for name in result["plots"]]
    return "\n".join(lines) + "\n"


def replace_section(path: str, title: str, body: str) -> None:
    """Write ``## title`` + ``body`` into a Markdown file: replace that section if present, else append it."""
    text = open(path).read() if os.path.exists(path) else ""
    heading = f"## {title}"
    lines = text.splitlines()
    section = [heading, "", *body.rstrip("\n").splitlines()]
    if heading in lines:
        start = lines.index(heading)
        end = next((i for i in range(start + 1, len(lines)) if lines[i].startswith("## ")), len(lines))
        lines[start:end] = [*section, ""] if end < len(lines) else section
    else:
        lines += ["", *section] if lines else section
    with open(path, "w") as file:
        file.write("\n".join(lines).rstrip("\n") + "\n")


# ---------------------------------------------------------------------------------------------------------------------
# Entry point (benchmarks/run.py and `sb3-brc bench`)


def run_benchmark(
    out: str,
    algos: Sequence[str],
    tasks: Sequence[str],
    seeds: Sequence[int],
    settings: BenchSettings,
    workers: int = 1,
    reference: str | None = "brc_sac",
    reps: int = 2000,
    results_md: str | None = None,
    results_title: str | None = None,
    command: str | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Run (or resume) a grid, aggregate it and write ``OUT/aggregate.md`` and the plots.

    :param out: Output directory
    :param algos: Names in :data:`ALGOS`
    :param tasks: Tasks or suites (see :func:`resolve_task_set`)
    :param seeds: Seeds
    :param settings: Budget and sizes
    :param workers: Parallel processes
    :param reference: Algorithm compared by probability of improvement with each other one
    :param reps: Bootstrap resamples
    :param results_md: Markdown file in which to write (or replace) a section with the results and the command
    :param results_title: Heading of that section (default: from the grid)
    :param command: The command line to record (default: ``sys.argv``)
    :param progress: Show the progress display
    :return: ``{"runs": per-run status, "data": GridData, "aggregate": rliable results, "markdown": text}``
    """
    runs = grid(out, algos, tasks, seeds, settings)
    os.makedirs(out, exist_ok=True)
    statuses = run_grid(runs, workers=workers, threads=settings.threads, progress=progress)
    failed = [s for s in statuses if s["status"] == "failed"]
    data = load_grid(runs)
    result = aggregate(data, out, reference=reference, reps=reps)
    if command is None:
        command = ("python " if sys.argv[0].endswith(".py") else "") + shlex.join(sys.argv)
    title = results_title or f"Benchmark: {', '.join(algos)} on {', '.join(tasks)}"

    def section(image_prefix: str) -> str:
        text = f"```\n{command}\n```\n\n" + render_markdown(data, result, settings, image_prefix)
        if failed:
            text += "\nFailed runs (left out above): " + "; ".join(f"{s['key']}: {s['error']}" for s in failed) + "\n"
        return text

    body = section("")
    with open(os.path.join(out, "aggregate.md"), "w") as file:
        file.write(f"# {title}\n\n{body}")
    if results_md is not None:
        # Plot links relative to the Markdown file
        prefix = os.path.relpath(os.path.abspath(out), os.path.dirname(os.path.abspath(results_md))) + "/"
        replace_section(results_md, title, section(prefix))
    return dict(runs=statuses, data=data, aggregate=result, markdown=body)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The harness's command-line flags (shared by ``benchmarks/run.py`` and ``sb3-brc bench``)."""
    defaults = BenchSettings()
    algos = ", ".join(f"{name} ({algo.description})" for name, algo in ALGOS.items())
    parser.add_argument("--algos", nargs="+", default=["brc_sac", "sac", "tqc", "crossq"], help=f"from: {algos}")
    parser.add_argument(
        "--tasks",
        nargs="+",
        default=["Pendulum-v1", "InvertedPendulum-v5"],
        help=f"Gymnasium ids, task names, or suites (sb3-brc suites; also {', '.join(BENCH_SUITES)})",
    )
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--out", default="runs/bench", help="output directory (runs are resumed from it)")
    parser.add_argument("--steps-per-task", type=int, default=defaults.steps_per_task)
    parser.add_argument("--eval-every", type=int, default=defaults.eval_every, help="env steps per task between evaluations")
    parser.add_argument("--eval-episodes", type=int, default=defaults.eval_episodes)
    parser.add_argument("--learning-starts", type=int, default=defaults.learning_starts, help="random steps per task")
    parser.add_argument("--batch-size", type=int, default=None, help="all algorithms (default: each one's own)")
    parser.add_argument("--gradient-steps", type=int, default=None, help="all algorithms (default: each one's own)")
    parser.add_argument("--size", choices=list(SIZE_PRESETS), default=defaults.size, help="BRC size preset")
    parser.add_argument("--width", type=int, default=None, help="critic width for all algorithms (overrides --size)")
    parser.add_argument("--device", default=defaults.device)
    parser.add_argument("--workers", type=int, default=1, help="parallel run processes")
    parser.add_argument("--threads", type=int, default=defaults.threads, help="torch threads per run process")
    parser.add_argument("--reference", default="brc_sac", help="algorithm compared with each other one (P(X > Y))")
    parser.add_argument("--reps", type=int, default=2000, help="bootstrap resamples")
    parser.add_argument("--results-md", default=None, help="Markdown file to write (or replace) a results section in")
    parser.add_argument("--results-title", default=None, help="heading of that section")
    parser.add_argument("--no-progress", action="store_true")


def run_from_args(args: argparse.Namespace, command: str | None = None) -> dict[str, Any]:
    """Run the harness from parsed :func:`add_arguments` flags."""
    settings = BenchSettings(
        steps_per_task=args.steps_per_task,
        eval_every=args.eval_every,
        eval_episodes=args.eval_episodes,
        learning_starts=args.learning_starts,
        batch_size=args.batch_size,
        gradient_steps=args.gradient_steps,
        size=args.size,
        width=args.width,
        device=args.device,
        threads=args.threads,
    )
    result = run_benchmark(
        args.out,
        args.algos,
        args.tasks,
        args.seeds,
        settings,
        workers=args.workers,
        reference=args.reference,
        reps=args.reps,
        results_md=args.results_md,
        results_title=args.results_title,
        command=command,
        progress=not args.no_progress,
    )
    print(result["markdown"])
    print(f"Written: {os.path.join(args.out, 'aggregate.md')} and {', '.join(result['aggregate']['plots'])}")
    return result


def main(argv: list[str] | None = None) -> None:
    """``python benchmarks/run.py ...``"""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_arguments(parser)
    args = parser.parse_args(argv)
    os.environ.setdefault("MUJOCO_GL", "disable")
    run_from_args(args)
