"""Markdown report and PNG plots of a multi-task run, from its evaluation CSV."""

import csv
import os
from collections import defaultdict
from dataclasses import dataclass
from typing import Any

import numpy as np
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from numpy.typing import ArrayLike

from sb3_brc.envs.paper_scores import PaperScore, paper_score
from sb3_brc.envs.scores import SCORES_DESCRIPTION


def read_eval_csv(path: str) -> list[dict[str, Any]]:
    """Rows of an evaluation CSV written by :class:`MultiTaskEvalCallback`, with numbers parsed."""
    rows = []
    with open(path, newline="") as file:
        for row in csv.DictReader(file):
            parsed: dict[str, Any] = dict(row)
            for key in ("timesteps", "steps_per_task", "episodes"):
                parsed[key] = int(row[key])
            for key in ("mean_return", "std_return", "success_rate", "score"):
                parsed[key] = float(row[key]) if row[key] not in ("", "None") else None
            rows.append(parsed)
    return rows


@dataclass(frozen=True)
class Curve:
    """One line of a learning-curve panel: ``y`` over ``x``, and a shaded band from ``low`` to ``high`` if given."""

    x: ArrayLike
    y: ArrayLike
    low: ArrayLike | None = None
    high: ArrayLike | None = None


def plot_task_curves(curves: dict[str, dict[str, Curve]], baseline: dict[str, float], path: str) -> None:
    """One panel per task: each label's evaluation return against env steps per task, random policy dashed.

    :param curves: Label (e.g. an algorithm) -> task -> its curve; a label keeps its colour in every panel
    :param baseline: Random policy's return per task
    :param path: PNG to write
    """
    tasks = list(dict.fromkeys(task for by_task in curves.values() for task in by_task))
    cols = min(len(tasks), 4)
    rows_n = (len(tasks) + cols - 1) // cols
    # A bare Figure draws without pyplot, so writing a report never switches the user's matplotlib backend
    fig = Figure(figsize=(4 * cols, 3 * rows_n))
    axes = fig.subplots(rows_n, cols, squeeze=False)
    for ax, task in zip(axes.flat, tasks, strict=False):
        for index, (label, by_task) in enumerate(curves.items()):
            if task not in by_task:
                continue
            curve = by_task[task]
            ax.plot(curve.x, curve.y, marker="o" if np.size(curve.x) <= 30 else None, color=f"C{index}", label=label)
            if curve.low is not None and curve.high is not None:
                ax.fill_between(curve.x, curve.low, curve.high, color=f"C{index}", alpha=0.2, linewidth=0)
        if task in baseline:
            ax.axhline(baseline[task], color="gray", linestyle="--", label="random")
        ax.set_title(task, fontsize=10)
        ax.set_xlabel("env steps per task")
        ax.set_ylabel("eval return")
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(tasks) :]:
        ax.axis("off")
    handles, labels = axes.flat[0].get_legend_handles_labels()
    if "random" not in labels and baseline:
        # The first panel may lack the random line; the legend still names it
        handles.append(Line2D([0], [0], color="gray", linestyle="--"))
        labels.append("random")
    axes.flat[0].legend(handles, labels, fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)


def plot_learning_curves(rows: list[dict[str, Any]], baseline: dict[str, float], path: str) -> None:
    """The learning curves of one run's evaluation rows, ± the std over its evaluation episodes (see
    :func:`plot_task_curves`)."""
    by_task: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for row in sorted(rows, key=lambda r: r["steps_per_task"]):
        by_task[row["task"]].append(row)
    curves = {}
    for task, points in by_task.items():
        y = np.array([p["mean_return"] for p in points])
        std = np.array([p["std_return"] for p in points])
        curves[task] = Curve([p["steps_per_task"] for p in points], y, y - std, y + std)
    plot_task_curves({"BRC": curves}, baseline, path)


def plot_final_scores(final: list[dict[str, Any]], baseline: dict[str, float], path: str) -> None:
    """Bar chart of the last evaluation per task, next to the random policy."""
    tasks = [row["task"] for row in final]
    fig = Figure(figsize=(max(4, 1.2 * len(tasks)), 3.5))
    ax = fig.subplots()
    xs = range(len(tasks))
    ax.bar([x - 0.2 for x in xs], [baseline.get(t, float("nan")) for t in tasks], width=0.4, label="random", color="gray")
    ax.bar([x + 0.2 for x in xs], [row["mean_return"] for row in final], width=0.4, label="BRC")
    ax.set_xticks(list(xs), tasks, rotation=30, ha="right", fontsize=8)
    ax.set_ylabel("eval return")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)


def _fmt(value: float | None, digits: int = 2) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def _paper_comparison(final: list[dict[str, Any]], paper: dict[str, PaperScore | None], steps: int) -> str:
    """One line comparing the run's mean score with the paper's over the tasks both have, per task family."""
    by_family: dict[str, list[tuple[float, PaperScore]]] = defaultdict(list)
    for row in final:
        reference = paper[row["task"]]
        if reference is not None and row["score"] is not None:
            by_family[reference.family].append((row["score"], reference))
    parts = []
    for family, pairs in by_family.items():
        single = [reference.single_task for _, reference in pairs if reference.single_task is not None]
        parts.append(
            f"{family} ({len(pairs)} tasks): this run {sum(score for score, _ in pairs) / len(pairs):.2f}, paper multi-task "
            f"{sum(reference.multi_task for _, reference in pairs) / len(pairs):.2f}"
            + (f", single-task {sum(single) / len(single):.2f}" if len(single) == len(pairs) else "")
        )
    return (
        f"Mean score against the BRC paper's final scores (its full budget, e.g. 1M steps per task and a 4096-wide critic; "
        f"this run: {steps} env steps per task): " + ("; ".join(parts) if parts else "no task with a comparable score") + "."
    )


def write_report(out_dir: str, title: str, baseline_rows: list[dict[str, Any]], extra: str = "") -> str:
    """Write ``report.md``, ``curves.png`` and ``scores.png`` in ``out_dir`` from ``out_dir/eval.csv``.

    :return: the Markdown text
    """
    rows = read_eval_csv(os.path.join(out_dir, "eval.csv"))
    if not rows:
        raise ValueError(f"{out_dir}/eval.csv has no evaluations to report")
    baseline = {row["task"]: row["mean_return"] for row in baseline_rows}
    last_step = max(row["steps_per_task"] for row in rows)
    final = [row for row in rows if row["steps_per_task"] == last_step]
    plot_learning_curves(rows, baseline, os.path.join(out_dir, "curves.png"))
    plot_final_scores(final, baseline, os.path.join(out_dir, "scores.png"))
    beat = [row for row in final if row["task"] in baseline and row["mean_return"] > baseline[row["task"]]]
    paper = {row["task"]: paper_score(row["task"]) for row in final}
    with_paper = any(score is not None for score in paper.values())
    lines = [
        f"# {title}",
        "",
        f"{len(beat)} of {len(final)} tasks beat the random policy after {last_step} env steps per task "
        f"(deterministic evaluation, {final[0]['episodes']} episode(s) per task).",
        "",
        "| task | random return | final return (± std) | best return | success rate | score |"
        + (" paper MT score | paper ST score |" if with_paper else ""),
        "|---|---|---|---|---|---|" + ("---|---|" if with_paper else ""),
    ]
    for row in final:
        best = max(r["mean_return"] for r in rows if r["task"] == row["task"])
        line = (
            f"| {row['task']} | {_fmt(baseline.get(row['task']), 1)} | {row['mean_return']:.1f} ± {row['std_return']:.1f} "
            f"| {best:.1f} | {_fmt(row['success_rate'])} | {_fmt(row['score'])} |"
        )
        if with_paper:
            reference = paper[row["task"]]
            multi, single = (None, None) if reference is None else (reference.multi_task, reference.single_task)
            line += f" {_fmt(multi)} | {_fmt(single)} |"
        lines.append(line)
    lines += ["", f"Score: {SCORES_DESCRIPTION}; '-' where no normalisation is defined.", ""]
    if with_paper:
        lines += [_paper_comparison(final, paper, last_step), ""]
    lines += ["![learning curves](curves.png)", "", "![final returns](scores.png)", ""]
    if extra:
        lines += [extra, ""]
    text = "\n".join(lines)
    with open(os.path.join(out_dir, "report.md"), "w") as file:
        file.write(text)
    return text
