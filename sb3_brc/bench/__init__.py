"""Benchmark harness (``sb3-brc bench``, ``benchmarks/run.py``): algorithms x tasks x seeds in parallel processes,
scored and aggregated with rliable.

Modules: :mod:`~sb3_brc.bench.algos` (the algorithm registry), :mod:`~sb3_brc.bench.settings` (the budget and
its flags), :mod:`~sb3_brc.bench.grid` (runs and their directories), :mod:`~sb3_brc.bench.runner` (the process
pool), :mod:`~sb3_brc.bench.scoring` (normalisation, rliable aggregates), :mod:`~sb3_brc.bench.plots`,
:mod:`~sb3_brc.bench.markdown` and :mod:`~sb3_brc.bench.harness` (the entry points; its docstring describes the
output files).
"""

from sb3_brc.bench.algos import ALGOS, BenchAlgo, register_algo
from sb3_brc.bench.grid import RunSpec, RunTasks, grid, is_complete, resolve_tasks
from sb3_brc.bench.harness import add_arguments, main, run_benchmark, run_from_args
from sb3_brc.bench.markdown import render_markdown, replace_section
from sb3_brc.bench.runner import run_grid, run_one
from sb3_brc.bench.scoring import GridData, Normalization, aggregate, load_grid, task_normalizations
from sb3_brc.bench.settings import BenchSettings

__all__ = [
    "ALGOS",
    "BenchAlgo",
    "BenchSettings",
    "GridData",
    "Normalization",
    "RunSpec",
    "RunTasks",
    "add_arguments",
    "aggregate",
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
    "run_one",
    "task_normalizations",
]
