"""Benchmark harness (``sb3-brc bench``, ``benchmarks/run.py``): algorithms x tasks x seeds in parallel processes
or Ray tasks, scored and aggregated with rliable.

Modules: :mod:`~sb3_brc.bench.algos` (the algorithm registry), :mod:`~sb3_brc.bench.settings` (the budget, the
runner settings and their flags), :mod:`~sb3_brc.bench.grid` (runs and their directories),
:mod:`~sb3_brc.bench.runner` (the per-run function, the driver loop with retries),
:mod:`~sb3_brc.bench.local_backend` (runs in a local process pool), :mod:`~sb3_brc.bench.ray_backend` (runs as Ray
tasks), :mod:`~sb3_brc.bench.scoring` (normalisation, rliable
aggregates), :mod:`~sb3_brc.bench.plots`, :mod:`~sb3_brc.bench.markdown` and :mod:`~sb3_brc.bench.harness` (the entry
points; its docstring describes the output files).
"""

from sb3_brc.bench.algos import ALGOS, BenchAlgo, register_algo
from sb3_brc.bench.grid import RunSpec, RunTasks, grid, is_complete, resolve_tasks
from sb3_brc.bench.harness import add_arguments, main, run_benchmark, run_from_args
from sb3_brc.bench.local_backend import LocalBackend, run_grid
from sb3_brc.bench.markdown import render_markdown, replace_section
from sb3_brc.bench.ray_backend import RayBackend, run_grid_ray
from sb3_brc.bench.runner import GridBackend, drive_grid, run_one
from sb3_brc.bench.scoring import GridData, Normalization, aggregate, load_grid, task_normalizations
from sb3_brc.bench.settings import BenchSettings, RunnerSettings

__all__ = [
    "ALGOS",
    "BenchAlgo",
    "BenchSettings",
    "GridBackend",
    "GridData",
    "LocalBackend",
    "Normalization",
    "RayBackend",
    "RunSpec",
    "RunTasks",
    "RunnerSettings",
    "add_arguments",
    "aggregate",
    "drive_grid",
    "grid",
    "is_complete",
    "load_grid",
    "main",
    "register_algo",
    "render_markdown",
    "replace_section",
    "resolve_tasks",
    "run_benchmark",
    "run_from_args",
    "run_grid",
    "run_grid_ray",
    "run_one",
    "task_normalizations",
]
