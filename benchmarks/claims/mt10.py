"""Claim (the paper's central one, arXiv 2505.23150): one multi-task BRC on Meta-World MT10 is at least level with
per-task BRC and ahead of per-task SAC at equal env steps per task, for a fraction of their compute.

    MUJOCO_GL=disable python benchmarks/claims/mt10.py --seeds 0 1 2 --out runs/mt10 --workers 2
    MUJOCO_GL=disable python benchmarks/claims/mt10.py --seeds 0 1 2 --out runs/mt10 --interim   # a look meanwhile

Runs of the benchmark harness (:mod:`sb3_brc.bench`) on ``mt10-paper`` (goal-observable envs, 200-step episodes,
success rate): ``brc_sac``, one multi-task model trained on all ten tasks (batch 1024, 2 updates per vector step), and
the per-task baselines on ``--subset`` (some of the ten, as per-task runs on all ten cost several times more):
``brc_sac_st`` and SB3's ``sac`` at their defaults, and sb3-contrib's ``crossq`` at ``--crossq-width`` (its default
2 x 1024 critic is too slow for a CPU). Every run is one grid cell of the same output directory, so an interrupted
claim resumes where it stopped. The aggregate compares all methods on the subset (the multi-task model's scores on
those tasks); besides the harness's ``aggregate.md`` and plots, ``per_task.png`` shows each task's success rate over
env steps and ``cpu_time.png`` the IQM against CPU time, with each per-task method's CPU time scaled from the subset
to all ten tasks (the compute the claim is about).
"""

import argparse
import dataclasses
import os
import shlex
import sys

from matplotlib.figure import Figure

from sb3_brc.bench import BenchSettings, RunnerSettings, grid
from sb3_brc.bench.harness import run_runs
from sb3_brc.bench.markdown import replace_section, results_section
from sb3_brc.bench.plots import plot_aggregate
from sb3_brc.bench.scoring import GridData, aggregate, load_grid
from sb3_brc.bench.settings import add_setting_flags

SUITE = "mt10-paper"
PER_TASK = ("brc_sac_st", "sac", "crossq")
# Chosen from the pilot (benchmarks/RESULTS.md): the tasks where a CPU-sized run moved its return off the random
# policy's within 30k steps
SUBSET = ("reach-v3", "drawer-close-v3", "door-open-v3", "button-press-topdown-v3", "window-close-v3")
# The claim's protocol, where it differs from the harness's defaults: 30k steps per task, 10 evaluation episodes every
# 3k, 5k random steps per task
CLAIM = dict(steps_per_task=30_000, eval_every=3_000, eval_episodes=10, learning_starts=5_000)
#: The harness settings the claim's flags set (the others keep the harness's defaults)
CLAIM_SETTINGS = (*CLAIM, "size", "threads")


def claim_runs(args: argparse.Namespace) -> list:
    """The grid: the multi-task model on the whole suite, the per-task methods on the subset."""
    settings = BenchSettings(**{name: getattr(args, name) for name in CLAIM_SETTINGS})
    subset = f"{SUITE}:{','.join(args.subset)}"
    runs = grid(args.out, ["brc_sac"], [SUITE], args.seeds, settings)
    runs += grid(args.out, [name for name in args.per_task if name != "crossq"], [subset], args.seeds, settings)
    if "crossq" in args.per_task:
        runs += grid(args.out, ["crossq"], [subset], args.seeds, dataclasses.replace(settings, width=args.crossq_width))
    return runs


def late_success(data: GridData, window: int) -> GridData:
    """The grid with each run's final score replaced by its mean over the last ``window`` evaluations. An evaluation of
    a goal-observable task scores 0 or 1 (its episodes share one goal), so one evaluation says little about a run."""
    return dataclasses.replace(data, final={algo: curves[..., -window:].mean(-1) for algo, curves in data.curves.items()})


def late_success_table(data: GridData, window: int) -> str:
    """Markdown: IQM and mean of :func:`late_success` with their 95% CIs, and P(multi-task > each per-task method)."""
    result = aggregate(late_success(data, window), reference="brc_sac")
    first = data.steps[-window]
    lines = [
        f"Success averaged over each run's last {window} evaluations ({first} to {data.steps[-1]} env steps per task), "
        "stratified bootstrap 95% CIs:",
        "",
        "| algorithm | IQM | mean | P(brc_sac > it) |",
        "|---|---|---|---|",
    ]
    for algo in data.algos:
        (iqm, mean, _), (iqm_ci, mean_ci, _) = result["point"][algo], result["ci"][algo]
        poi = "" if algo == "brc_sac" else "{:.2f} [{:.2f}, {:.2f}]".format(*result["poi"][f"brc_sac,{algo}"])
        iqm_text = f"{iqm:.3f} [{iqm_ci[0]:.3f}, {iqm_ci[1]:.3f}]"
        lines.append(f"| {algo} | {iqm_text} | {mean:.3f} [{mean_ci[0]:.3f}, {mean_ci[1]:.3f}] | {poi} |")
    return "\n".join(lines) + "\n"


def plot_per_task(data: GridData, path: str) -> None:
    """Each task's success rate (native score) over env steps per task: mean over seeds, band from lowest to highest."""
    figure = Figure(figsize=(3.2 * len(data.tasks), 3.0))
    axes = figure.subplots(1, len(data.tasks), squeeze=False)[0]
    for ax, (index, task) in zip(axes, enumerate(data.tasks), strict=True):
        for algo in data.algos:
            curves = data.curves[algo][:, index, :]
            ax.plot(data.steps, curves.mean(0), marker=".", label=algo)
            ax.fill_between(data.steps, curves.min(0), curves.max(0), alpha=0.15)
        ax.set_title(task, fontsize=9)
        ax.set_xlabel("env steps per task")
        ax.set_ylim(-0.05, 1.05)
    axes[0].set_ylabel("success rate")
    axes[0].legend(fontsize=7)
    figure.tight_layout()
    figure.savefig(path, dpi=100)


def plot_cpu_time(data: GridData, result: dict, scale: dict[str, float], path: str) -> None:
    """IQM over evaluation points against CPU hours, each method's total CPU time spread evenly over its steps."""
    figure = Figure(figsize=(5, 3.4))
    ax = figure.subplots()
    for algo in data.algos:
        iqm, ci = result["curves"][algo]
        hours = [data.cpu_s[algo] * scale[algo] / 3600 * step / data.steps[-1] for step in data.steps]
        ax.plot(hours, iqm, marker=".", label=algo)
        ax.fill_between(hours, ci[0], ci[1], alpha=0.15)
    ax.set_xlabel("CPU hours for all ten tasks (per-task methods: scaled from the subset)")
    ax.set_ylabel("IQM success rate (subset)")
    ax.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=100)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--subset", nargs="+", default=list(SUBSET), help="tasks of the per-task baselines")
    parser.add_argument("--per-task", nargs="+", default=list(PER_TASK), choices=PER_TASK, help="per-task methods")
    parser.add_argument("--out", default="runs/mt10")
    add_setting_flags(parser, BenchSettings, CLAIM_SETTINGS, {name: dict(default=value) for name, value in CLAIM.items()})
    parser.add_argument("--crossq-width", type=int, default=256, help="CrossQ's actor and critic width")
    add_setting_flags(parser, RunnerSettings, ["workers"])
    parser.add_argument("--late-window", type=int, default=3, help="evaluations averaged in the late-success table")
    parser.add_argument("--interim", action="store_true", help="train nothing: aggregate what the runs have so far")
    parser.add_argument("--results-md", help="Markdown file in which to write (or replace) the results section")
    args = parser.parse_args()
    os.environ.setdefault("MUJOCO_GL", "disable")
    runs = claim_runs(args)
    os.makedirs(args.out, exist_ok=True)
    # Eager updates for every method, so that the CPU times compare the algorithms, not compile settings
    runner = RunnerSettings(workers=args.workers, compile_update=False)
    statuses = [] if args.interim else run_runs(runs, runner, args.threads)
    data = load_grid(runs, unfinished=args.interim)
    result = aggregate(data, reference="brc_sac")
    result["plots"] = plot_aggregate(data, result, args.out)
    plot_per_task(data, os.path.join(args.out, "per_task.png"))
    # Per-task methods ran on the subset only: their compute for all ten tasks is that many times more
    scale = {algo: 1.0 if algo == "brc_sac" else 10 / len(args.subset) for algo in data.algos}
    plot_cpu_time(data, result, scale, os.path.join(args.out, "cpu_time.png"))
    command = "python " + shlex.join(sys.argv)
    failed = [status for status in statuses if status["status"] == "failed"]
    body = results_section(command, data, result, runs[0].settings, failed)
    cpu_hours = {algo: data.cpu_s[algo] * scale[algo] / 3600 for algo in data.algos}
    body += f"\nCrossQ at width {args.crossq_width} (actor and critic). CPU time for all ten tasks: "
    body += ", ".join(f"{algo} {hours:.2f} h" for algo, hours in cpu_hours.items())
    body += f" (per-task methods: their subset's CPU time x 10 / {len(args.subset)}).\n\n"
    body += "![per task](per_task.png)\n![CPU time](cpu_time.png)\n\n"
    body += late_success_table(data, min(args.late_window, len(data.steps)))
    title = "Claim: one multi-task BRC on Meta-World MT10 against per-task BRC, SAC and CrossQ"
    with open(os.path.join(args.out, "aggregate.md"), "w") as file:
        file.write(f"# {title}\n\n{body}")
    if args.results_md:
        replace_section(args.results_md, title, body)
    for algo in data.algos:
        (iqm, *_), ((low, high), *_) = result["point"][algo], result["ci"][algo]
        line = f"{algo:11s} IQM success {iqm:.2f} [{low:.2f}, {high:.2f}], CPU {cpu_hours[algo]:.2f} h for ten tasks"
        if algo != "brc_sac":
            p, p_low, p_high = result["poi"][f"brc_sac,{algo}"]
            line += f", P(brc_sac > {algo}) = {p:.2f} [{p_low:.2f}, {p_high:.2f}]"
        print(line)
    print(f"written: {os.path.join(args.out, 'aggregate.md')}")


if __name__ == "__main__":
    main()
