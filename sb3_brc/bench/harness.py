"""Benchmark harness: a grid of algorithms x tasks x seeds, run in parallel processes (or as Ray tasks on a cluster,
``--backend ray``), aggregated with rliable.

Each run trains one algorithm on one task (or, for a multi-task algorithm, on all tasks of a suite at once),
evaluates it deterministically every ``eval_every`` env steps per task and writes, into
``OUT/<algo>/<task-or-suite>/seed<k>/``:

- ``evaluations.csv``: :data:`sb3_brc.tools.evaluation.CSV_FIELDS` rows, one per task and evaluation;
- ``random.json``: the random policy's per-task returns on the same evaluation env (the baseline of the score);
- ``config.json``: the run's settings and ``status`` (``"complete"`` once finished). A complete run with the same
  settings is skipped when the grid is run again, so an interrupted grid resumes where it stopped;
- ``checkpoints/``: while the run is unfinished, its last checkpoint (at each evaluation by default,
  ``--checkpoint-every``): a failed run that is retried, or an interrupted one run again, resumes from it;
- ``attempts.jsonl``: one line per start of the run (pid, host, env steps per task it started at).

Then the grid is scored and aggregated (IQM, mean and median with stratified-bootstrap 95% CIs, performance
profiles, probability of improvement of a reference algorithm over each other one, IQM sample-efficiency
curves) into ``OUT/aggregate.md`` and PNGs next to it.

Scores: a task's own normalised score where BRC defines one (DMC return / 1000, Meta-World success rate,
Atari human-normalised score);
otherwise min-max normalisation per task, ``(R - R_random) / (R_best - R_random)`` with ``R_random`` the
random policy's mean return and ``R_best`` the best evaluation return any run of the grid reached on that task
(so min-max scores are relative to this grid, not absolute). ``aggregate.md`` lists which one each task used.

Algorithms live in ``sb3_brc.bench.ALGOS``, name -> ``BenchAlgo``; adding one is one entry (``register_algo``).
``brc_dqn`` (BRCDQN, discrete actions) runs on the Atari suites (``atari-2``, ``atari-5``) and other discrete
tasks; its evaluation envs play whole games and its scores are human-normalised.
"""

import argparse
import dataclasses
import os
import shlex
import sys
from collections.abc import Sequence
from typing import Any

from sb3_brc.bench.algos import ALGOS
from sb3_brc.bench.grid import RunSpec, grid
from sb3_brc.bench.local_backend import run_grid
from sb3_brc.bench.markdown import replace_section, results_section
from sb3_brc.bench.plots import plot_aggregate
from sb3_brc.bench.ray_backend import run_grid_ray
from sb3_brc.bench.scoring import aggregate, load_grid
from sb3_brc.bench.settings import (
    UPDATE_OPTIONS,
    BenchSettings,
    RunnerSettings,
    add_preset_flag,
    add_setting_flags,
    parse_with_preset,
    settings_from_args,
)
from sb3_brc.bench.storage import GridStore, is_storage_uri, local_mirror
from sb3_brc.tools.wandb_logging import WandbRun, WandbSettings, add_wandb_arguments, wandb_settings_from_args

# The aggregate's W&B table: per algorithm, IQM, mean and median with their 95% CIs
AGGREGATE_COLUMNS = ["algo", *(f"{m}{part}" for m in ("iqm", "mean", "median") for part in ("", "_ci_low", "_ci_high"))]


def _log_aggregate(
    wandb: WandbSettings, config: dict[str, Any], out: str, algos: Sequence[str], result: dict[str, Any]
) -> None:
    """The grid's aggregate as the W&B run ``aggregate`` of the group: its plots and a per-algorithm table."""
    with WandbRun(wandb, "aggregate", config, "aggregate") as run:
        run.log_images({f"aggregate/{os.path.splitext(name)[0]}": os.path.join(out, name) for name in result["plots"]})
        estimates = [zip(result["point"][algo], result["ci"][algo], strict=True) for algo in algos]
        rows = [
            [algo, *(v for point, ci in pairs for v in (point, *ci))] for algo, pairs in zip(algos, estimates, strict=True)
        ]
        run.log_table("aggregate/scores", AGGREGATE_COLUMNS, rows)


def run_benchmark(
    out: str,
    algos: Sequence[str],
    tasks: Sequence[str],
    seeds: Sequence[int],
    settings: BenchSettings,
    workers: int | None = None,
    reference: str | None = None,
    reps: int = 2000,
    results_md: str | None = None,
    results_title: str | None = None,
    command: str | None = None,
    progress: bool = True,
    runner: RunnerSettings | None = None,
    wandb: WandbSettings | None = None,
    interim: bool = False,
) -> dict[str, Any]:
    """Run (or resume) a grid, aggregate it and write ``OUT/aggregate.md`` and the plots.

    :param out: Output directory, or the URI of a store that keeps the grid (``s3://bucket/grid``; see
        :mod:`~sb3_brc.bench.storage`): the runs are pushed there, the aggregate is computed in a local mirror of the
        result files (``"out"`` of the return value) and uploaded
    :param algos: Names in :data:`sb3_brc.bench.ALGOS`
    :param tasks: Tasks or suites (see :func:`sb3_brc.bench.resolve_tasks`)
    :param seeds: Seeds
    :param settings: Budget and sizes
    :param workers: Parallel runs (overrides ``runner.workers``)
    :param reference: Algorithm compared by probability of improvement with each other one (one of ``algos``;
        default ``brc_sac`` when the grid has it, else the first)
    :param reps: Bootstrap resamples
    :param results_md: Markdown file in which to write (or replace) a section with the results and the command
    :param results_title: Heading of that section (default: from the grid)
    :param command: The command line to record (default: ``sys.argv``)
    :param progress: Show the progress display
    :param runner: Backend, retries and checkpoints (default: :class:`RunnerSettings`'s, a local process pool)
    :param wandb: Also log to W&B: each run that trains (``<algo>-<task or suite>-seed<k>``), then the aggregate
        (run ``aggregate``: its plots and a per-algorithm table)
    :param interim: Train nothing: aggregate what the runs have evaluated so far, the unfinished ones (running
        elsewhere, or interrupted) included up to the last evaluation all runs have reached
    :return: ``{"runs": per-run status, "data": GridData, "aggregate": rliable results and the plot file names
        (``"plots"``), "markdown": text, "out": the local directory of the aggregate}``
    """
    runner = runner or RunnerSettings()
    if workers is not None:
        runner = dataclasses.replace(runner, workers=workers)
    runner.check()
    if reference is not None and reference not in algos:
        raise ValueError(f"--reference {reference!r} is not one of the grid's algorithms {list(algos)}")
    store = GridStore(out) if is_storage_uri(out) else None
    if store is not None:  # the driver works in its local mirror of the store's result files
        out = local_mirror(store.uri)
    runs = grid(out, algos, tasks, seeds, settings, wandb, storage=None if store is None else store.uri)
    os.makedirs(out, exist_ok=True)
    if store is not None:
        store.pull_results(runs)
    statuses = [] if interim else run_runs(runs, runner, settings.threads, progress)
    failed = [s for s in statuses if s["status"] == "failed"]
    data = load_grid(runs, unfinished=interim)
    result = aggregate(data, reference=reference, reps=reps)
    result["plots"] = plot_aggregate(data, result, out)
    if command is None:
        command = ("python " if sys.argv[0].endswith(".py") else "") + shlex.join(sys.argv)
    title = results_title or f"Benchmark: {', '.join(algos)} on {', '.join(tasks)}"
    body = results_section(command, data, result, settings, failed)
    with open(os.path.join(out, "aggregate.md"), "w") as file:
        file.write(f"# {title}\n\n{body}")
    if store is not None:
        for name in ("aggregate.md", *result["plots"]):
            store.upload(os.path.join(out, name), name)
    if wandb is not None:
        config = dict(algos=list(algos), tasks=list(tasks), seeds=list(seeds), reference=reference, command=command)
        _log_aggregate(wandb, dict(config, **dataclasses.asdict(settings)), out, data.algos, result)
    if results_md is not None:
        # Plot links relative to the Markdown file
        prefix = os.path.relpath(os.path.abspath(out), os.path.dirname(os.path.abspath(results_md))) + "/"
        replace_section(results_md, title, results_section(command, data, result, settings, failed, prefix))
    return dict(runs=statuses, data=data, aggregate=result, markdown=body, out=out)


def run_runs(runs: list[RunSpec], runner: RunnerSettings, threads: int = 1, progress: bool = True) -> list[dict[str, Any]]:
    """Run a grid's runs on the backend ``runner`` names (:func:`~sb3_brc.bench.local_backend.run_grid` or
    :func:`~sb3_brc.bench.ray_backend.run_grid_ray`), with its step timeout; returns their statuses."""
    runner.check()
    update_options = {name: getattr(runner, name) for name in UPDATE_OPTIONS}
    for name, on in update_options.items():
        if on and not any(spec.has_option(name) for spec in runs):
            names = sorted({spec.algo_name for spec in runs})
            raise ValueError(f"--{name.replace('_', '-')} is an option of none of the grid's algorithms {names}")
    runs = [dataclasses.replace(spec, step_timeout=runner.step_timeout, **update_options) for spec in runs]
    common: dict[str, Any] = dict(
        threads=threads, progress=progress, max_retries=runner.max_retries, checkpoint_every=runner.checkpoint_every
    )
    if runner.backend == "ray":
        return run_grid_ray(runs, runner.address, runner.workers, runner.cpus_per_run, runner.gpus_per_run, **common)
    return run_grid(runs, runner.workers, **common)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The harness's command-line flags (shared by ``benchmarks/run.py``, ``sb3-brc bench`` and the claims)."""
    algos = ", ".join(f"{name} ({algo.description})" for name, algo in ALGOS.items())
    parser.add_argument("--algos", nargs="+", default=["brc_sac", "sac", "tqc", "crossq"], help=f"from: {algos}")
    parser.add_argument(
        "--tasks",
        nargs="+",
        default=["Pendulum-v1", "InvertedPendulum-v5"],
        help="Gymnasium ids, task names, suites (sb3-brc suites), comma-joined task sets (walker-walk,cheetah-run) "
        "or some tasks of a suite (mt10-paper:reach-v3,door-open-v3)",
    )
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument(
        "--out",
        default="runs/bench",
        help="output directory (runs are resumed from it), or an object-store URI such as s3://bucket/grid (fsspec; "
        "checkpoints go there, so a run retried on any node resumes from its last one)",
    )
    add_setting_flags(parser, BenchSettings)
    add_setting_flags(parser, RunnerSettings)
    parser.add_argument(
        "--reference",
        default=None,
        help="algorithm compared with each other one, P(X > Y) (default: brc_sac if in --algos, else the first)",
    )
    parser.add_argument("--reps", type=int, default=2000, help="bootstrap resamples")
    parser.add_argument("--results-md", default=None, help="Markdown file to write (or replace) a results section in")
    parser.add_argument("--results-title", default=None, help="heading of that section")
    parser.add_argument("--no-progress", action="store_true")
    parser.add_argument(
        "--interim",
        action="store_true",
        help="train nothing: aggregate the evaluations so far, unfinished runs included (up to the last evaluation "
        "all runs have reached); e.g. while the grid runs in another process",
    )
    add_wandb_arguments(parser)


def run_from_args(args: argparse.Namespace, command: str | None = None) -> dict[str, Any]:
    """Run the harness from parsed :func:`add_arguments` flags."""
    result = run_benchmark(
        args.out,
        args.algos,
        args.tasks,
        args.seeds,
        settings_from_args(BenchSettings, args),
        reference=args.reference,
        reps=args.reps,
        results_md=args.results_md,
        results_title=args.results_title,
        command=command,
        progress=not args.no_progress,
        runner=settings_from_args(RunnerSettings, args),
        # W&B group: the output directory's name unless --wandb-group names one
        wandb=wandb_settings_from_args(args, default_group=os.path.basename(os.path.abspath(args.out))),
        interim=args.interim,
    )
    print(result["markdown"])
    stored = f" (uploaded to {args.out})" if is_storage_uri(args.out) else ""
    print(f"Written: {os.path.join(result['out'], 'aggregate.md')} and {', '.join(result['aggregate']['plots'])}{stored}")
    return result


def main(argv: list[str] | None = None) -> None:
    """``python benchmarks/run.py ...``"""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_arguments(parser)
    add_preset_flag(parser)
    args = parse_with_preset(parser, argv, {None: parser})
    os.environ.setdefault("MUJOCO_GL", "disable")
    run_from_args(args)
