"""Claim (paper, arXiv 2505.23150): multi-task BRC beats single-task BRC at equal env steps per task on tasks that
share an embodiment.

    MUJOCO_GL=disable python benchmarks/claims/mt_vs_st.py --steps-per-task 3000 --seeds 0 1 \
        --out benchmarks/results/mt_vs_st --results-md benchmarks/RESULTS.md

A run of the benchmark harness (:mod:`sb3_brc.bench`) with ``brc_sac`` (one multi-task run on the whole suite)
and ``brc_sac_st`` (one single-task run per task), on ``pendulum-gravity``: Pendulum-v1 with gravity g = 6, 9
and 12. Both use BRCSAC's defaults for their setting (batch 1024 multi-task, 256 single-task, 2 updates per env
step) and the same network size, warm-up and evaluation schedule; scores are min-max normalised per task
between the random policy and the best return of the grid. Besides the harness's aggregate (``aggregate.md``
and its plots in ``--out``), this script plots the per-task score curves (``per_task.png``) and prints the
conclusion.
"""

import argparse
import os

import numpy as np
from matplotlib.figure import Figure

from sb3_brc.bench import add_arguments, run_from_args


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_arguments(parser)  # the harness's flags, with this claim's defaults (--tasks names the suite)
    parser.set_defaults(
        algos=["brc_sac", "brc_sac_st"],
        tasks=["pendulum-gravity"],
        seeds=[0, 1],
        steps_per_task=3000,
        eval_every=500,
        learning_starts=500,
        out="runs/mt_vs_st",
        results_title="Claim: multi-task vs single-task BRC at equal env steps per task (harness run)",
    )
    args = parser.parse_args()
    os.environ.setdefault("MUJOCO_GL", "disable")
    if len(args.tasks) != 1 or args.algos != ["brc_sac", "brc_sac_st"]:
        parser.error("this claim compares --algos brc_sac brc_sac_st on one suite (--tasks SUITE)")
    result = run_from_args(args)
    data, agg = result["data"], result["aggregate"]

    fig = Figure(figsize=(4 * len(data.tasks), 3.2))
    axes = fig.subplots(1, len(data.tasks), squeeze=False)
    for index, (ax, task) in enumerate(zip(axes[0], data.tasks, strict=True)):
        for algo, label in (("brc_sac", "multi-task"), ("brc_sac_st", "single-task")):
            curves = data.curves[algo][:, index, :]
            ax.plot(data.steps, curves.mean(0), marker=".", label=label)
            ax.fill_between(data.steps, curves.min(0), curves.max(0), alpha=0.2)
        ax.set_title(task, fontsize=10)
        ax.set_xlabel("env steps per task")
    axes[0][0].set_ylabel("min-max score (seed range)")
    axes[0][0].legend(fontsize=8)
    fig.tight_layout()
    path = os.path.join(args.out, "per_task.png")
    fig.savefig(path, dpi=100)
    print(f"plot: {path}")

    iqm = {algo: (agg["point"][algo][0], agg["ci"][algo][0]) for algo in data.algos}
    auc = {algo: float(data.curves[algo].mean()) for algo in data.algos}
    p, low, high = agg["poi"]["brc_sac,brc_sac_st"]
    for algo in data.algos:
        point, (lo, hi) = iqm[algo]
        print(f"{algo:11s} final IQM {point:.3f} [{lo:.3f}, {hi:.3f}], mean score over all evaluations {auc[algo]:.3f}")
    print(f"P(multi-task > single-task) = {p:.2f} [{low:.2f}, {high:.2f}]")

    def final_return(algo: str, task: str) -> float:
        return float(np.mean(data.final_returns(algo, task)))

    final_better = iqm["brc_sac"][0] > iqm["brc_sac_st"][0]
    separated = iqm["brc_sac"][1][0] > iqm["brc_sac_st"][1][1] or iqm["brc_sac_st"][1][0] > iqm["brc_sac"][1][1]
    print(
        f"conclusion: multi-task {'beats' if final_better else 'does NOT beat'} single-task at the final evaluation "
        f"({'CIs separated' if separated else 'CIs overlap'}); over the whole curve multi-task "
        f"{'is ahead' if auc['brc_sac'] > auc['brc_sac_st'] else 'is NOT ahead'} (mean score {auc['brc_sac']:.2f} vs "
        f"{auc['brc_sac_st']:.2f}); per-task final returns: "
        + "; ".join(f"{t} {final_return('brc_sac', t):.0f} vs {final_return('brc_sac_st', t):.0f}" for t in data.tasks)
    )


if __name__ == "__main__":
    main()
