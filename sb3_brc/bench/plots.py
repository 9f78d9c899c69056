"""The aggregate's PNGs: interval estimates, performance profiles, sample-efficiency curves, probability of
improvement and each task's learning curves. Drawn on bare :class:`matplotlib.figure.Figure` objects: no pyplot,
so no backend is switched."""

import os
import warnings
from typing import Any

import matplotlib
import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.ticker import MaxNLocator

from sb3_brc.bench.scoring import GridData, rliable
from sb3_brc.tools.report import Curve, plot_task_curves

METRICS = ("IQM score", "Mean score", "Median score")  # the order of aggregate()'s point estimates


def _legend(ax: Axes, algos: list[str], colors: dict[str, Any]) -> None:
    # One line per algorithm (rliable's plots draw a line and a CI band each: a plain legend() would pair them up)
    ax.legend([Line2D([0], [0], color=colors[a]) for a in algos], algos, fontsize=8)


def _save(figure: Figure, path: str) -> str:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # tight_layout cannot always fit rliable's layouts; bbox does
        figure.tight_layout()
    figure.savefig(path, dpi=100, bbox_inches="tight")
    return os.path.basename(path)


def _plot_intervals(result: dict[str, Any], algos: list[str], colors: dict[str, Any]) -> Figure:
    # rliable's plot_interval_estimates draws through pyplot: the same plot, a bar per CI and a tick at the point
    figure = Figure(figsize=(3.4 * len(METRICS), 0.6 + 0.37 * len(algos)))
    for index, (ax, metric) in enumerate(zip(figure.subplots(1, len(METRICS)), METRICS, strict=True)):
        for row, algo in enumerate(algos):
            low, high = result["ci"][algo][index]
            ax.barh(row, high - low, height=0.6, left=low, color=colors[algo], alpha=0.75)
            ax.vlines(result["point"][algo][index], row - 0.28, row + 0.22, color="k", alpha=0.5)
        if index == 0:
            ax.set_yticks(range(len(algos)), algos)
        else:
            ax.set_yticks([])
        ax.xaxis.set_major_locator(MaxNLocator(4))
        ax.set_title(metric)
        ax.spines[["left", "top", "right"]].set_visible(False)
        ax.grid(True, axis="x", alpha=0.25)
    return figure


def plot_aggregate(data: GridData, result: dict[str, Any], out: str) -> list[str]:
    """Write the plots of an :func:`sb3_brc.bench.scoring.aggregate` result into ``out``.

    :return: The file names: ``intervals.png``, ``performance_profile.png``, ``sample_efficiency.png``,
        ``task_curves.png`` and, with more than one algorithm, ``probability_of_improvement.png``
    """
    _, _, plot_utils = rliable()
    tab10: Any = matplotlib.colormaps["tab10"]  # a ListedColormap: its .colors are its ten colours
    colors = dict(zip(data.algos, tab10.colors, strict=False))
    names = [_save(_plot_intervals(result, data.algos, colors), os.path.join(out, "intervals.png"))]

    figure = Figure(figsize=(6, 4))
    ax = figure.subplots()
    taus, profiles, profile_cis = result["profile"]
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
    names.append(_save(figure, os.path.join(out, "performance_profile.png")))

    figure = Figure(figsize=(6, 4))
    ax = figure.subplots()
    plot_utils.plot_sample_efficiency_curve(
        np.array(data.steps),
        {a: np.array(point) for a, (point, _) in result["curves"].items()},
        {a: np.array(ci) for a, (_, ci) in result["curves"].items()},
        algorithms=data.algos,
        colors=colors,
        ax=ax,
        xlabel="env steps per task",
        ylabel="IQM normalised score",
        labelsize="medium",
        ticklabelsize="small",
    )
    _legend(ax, data.algos, colors)
    names.append(_save(figure, os.path.join(out, "sample_efficiency.png")))

    # Per algorithm and task: the mean over seeds, in a band from the lowest to the highest seed
    curves = {
        algo: {
            task: Curve(data.steps, seeds[:, i].mean(0), seeds[:, i].min(0), seeds[:, i].max(0))
            for i, task in enumerate(data.tasks)
        }
        for algo, seeds in data.return_curves.items()
    }
    random_returns = {task: norm.random_return for task, norm in data.norms.items() if np.isfinite(norm.random_return)}
    plot_task_curves(curves, random_returns, os.path.join(out, "task_curves.png"))
    names.append("task_curves.png")

    if result["poi"]:
        figure = Figure(figsize=(5, 0.6 + 0.5 * len(result["poi"])))
        plot_utils.plot_probability_of_improvement(
            {pair: p for pair, (p, _, _) in result["poi"].items()},
            {pair: (low, high) for pair, (_, low, high) in result["poi"].items()},
            ax=figure.subplots(),
        )
        names.append(_save(figure, os.path.join(out, "probability_of_improvement.png")))
    return names
