"""The grid's results as Markdown: ``aggregate.md`` and the section ``--results-md`` writes into another file."""

import os
from collections.abc import Sequence
from typing import Any

import numpy as np

from sb3_brc.bench.scoring import GridData
from sb3_brc.bench.settings import BenchSettings
from sb3_brc.envs.scores import SCORES_DESCRIPTION


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
    ]
    if data.unfinished:
        lines += [
            f"**Interim:** {len(data.unfinished)} run(s) not finished yet ({', '.join(data.unfinished)}): every score "
            f"below is at {data.steps[-1]} env steps per task, the last evaluation all runs have reached; wall times "
            "count the unfinished runs' time so far.",
            "",
        ]
    lines += [
        f"Score normalisation per task: `native` = the task's own score ({SCORES_DESCRIPTION}); "
        "`min-max` = (return - random) / (best - random), with the random policy's return and the best evaluation "
        "return of any run in this grid (relative to this grid only).",
        "",
        "| task | normalisation | random return | best return | " + " | ".join(data.algos) + " |",
        "|---|---|---|---|" + "---|" * len(data.algos),
    ]
    for task in data.tasks:
        norm = data.norms[task]
        finals = [data.final_returns(a, task) for a in data.algos]
        cells = [f"{np.mean(returns):.1f} ± {np.std(returns):.1f}" for returns in finals]
        head = f"| {task} | {norm.method} | {norm.random_return:.1f} | {norm.best_return:.1f} | "
        lines.append(head + " | ".join(cells) + " |")
    lines += [
        "",
        "Algorithm columns: final evaluation return, mean ± std over seeds.",
        "",
        f"Aggregate normalised score at the last evaluation over {len(data.tasks)} task(s), stratified bootstrap 95% CIs:",
        "",
        "| algorithm | runs (seeds) | IQM | mean | median | wall time (all runs) | CPU time (all runs) |",
        "|---|---|---|---|---|---|---|",
    ]
    for algo in data.algos:
        point, ci = result["point"][algo], result["ci"][algo]
        lines.append(
            f"| {algo} | {data.final[algo].shape[0]} | {_ci(point[0], ci[0])} | {_ci(point[1], ci[1])} | "
            f"{_ci(point[2], ci[2])} | {data.wall_s.get(algo, 0.0) / 60:.1f} min | {data.cpu_s.get(algo, 0.0) / 3600:.2f} h |"
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


def results_section(
    command: str,
    data: GridData,
    result: dict[str, Any],
    settings: BenchSettings,
    failed: Sequence[dict[str, Any]],
    image_prefix: str = "",
) -> str:
    """The command in a code block, :func:`render_markdown`'s tables and plots, and the runs that failed."""
    text = f"```\n{command}\n```\n\n" + render_markdown(data, result, settings, image_prefix)
    if failed:
        text += "\nFailed runs (left out above): " + "; ".join(f"{s['key']}: {s['error']}" for s in failed) + "\n"
    return text


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
