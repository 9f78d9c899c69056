"""Claim (paper, arXiv 2505.23150): the gradient-conflict rate between tasks falls as the critic gets wider.

    MUJOCO_GL=disable python benchmarks/claims/conflict_vs_width.py --widths 64 256 512 --seeds 0 1 \
        --out benchmarks/results/conflict_vs_width.png

Suite: four heterogeneous Gymnasium tasks (Pendulum-v1, InvertedPendulum-v5, InvertedDoublePendulum-v5,
Reacher-v5): 6 task pairs. Multi-task BRCSAC with critic blocks ``[w, w]`` (actor fixed at 64), the same env
steps per task, warm-up and batch for every width. The conflict rate is the share of task pairs whose critic
gradients (:func:`sb3_brc.task_diagnostics`) have a negative cosine; it is measured every ``--diag-every``
gradient updates during training, and ``--final-samples`` times on fresh replay samples at the end (the
end value is the mean of those); both the mean over the training-time points and the end value are reported.
The mean pairwise cosine is reported next to it, since with 6 pairs the rate moves in steps of 1/6. The raw
numbers go to a JSON file next to the plot.
"""

import argparse
import itertools
import json
import os
import time

import numpy as np
import torch as th
from matplotlib.figure import Figure

from sb3_brc import BRCSAC, MultiTaskVecEnv
from sb3_brc.tools.diagnostics import DiagnosticsCallback, task_diagnostics

TASKS = ["Pendulum-v1", "InvertedPendulum-v5", "InvertedDoublePendulum-v5", "Reacher-v5"]


def mean_cosine(cosines: np.ndarray) -> float:
    upper = np.triu_indices(len(cosines), k=1)
    return float(np.mean(cosines[upper]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--widths", type=int, nargs="+", default=[64, 256, 512])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--steps-per-task", type=int, default=1250)
    parser.add_argument("--learning-starts", type=int, default=250, help="per task")
    parser.add_argument("--diag-every", type=int, default=250, help="gradient updates between diagnostics")
    parser.add_argument("--final-samples", type=int, default=5, help="diagnostics on fresh samples at the end")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", default="conflict_vs_width.png")
    args = parser.parse_args()
    th.set_num_threads(args.threads)
    rows = []  # (width, seed, final rate, final mean cosine, curve)
    for width in args.widths:
        for seed in args.seeds:
            start = time.time()
            env = MultiTaskVecEnv(TASKS, seed=seed)
            model = BRCSAC(
                "MlpPolicy",
                env,
                learning_starts=args.learning_starts * len(TASKS),
                batch_size=256,
                seed=seed,
                policy_kwargs=dict(net_arch=dict(pi=[64], qf=[width, width])),
            )
            diagnostics = DiagnosticsCallback(every_n_updates=args.diag_every)
            model.learn(args.steps_per_task * len(TASKS), callback=diagnostics)
            final = [task_diagnostics(model) for _ in range(args.final_samples)]
            rate = float(np.mean([d["conflict_rate"] for d in final]))
            cosine = float(np.mean([mean_cosine(d["cosines"]) for d in final]))
            curve = [(h["num_timesteps"] // len(TASKS), h["conflict_rate"]) for h in diagnostics.history]
            rows.append((width, seed, rate, cosine, curve))
            print(
                f"width {width} seed {seed}: conflict rate {rate:.3f}, mean cosine {cosine:.3f} "
                f"({(time.time() - start) / 60:.1f} min)",
                flush=True,
            )

    fig = Figure(figsize=(10, 3.6))
    axes = fig.subplots(1, 2)
    for width in args.widths:
        mine = [r for r in rows if r[0] == width]
        steps = [s for s, _ in mine[0][4]]
        curve = np.mean([[c for _, c in r[4]] for r in mine], axis=0)
        axes[0].plot(steps, curve, marker=".", label=f"width {width}")
    axes[0].set_xlabel("env steps per task")
    axes[0].set_ylabel("conflict rate (mean over seeds)")
    axes[0].legend(fontsize=8)
    for index, metric in ((2, "final conflict rate"), (3, "final mean pairwise cosine")):
        means = [np.mean([r[index] for r in rows if r[0] == w]) for w in args.widths]
        axes[1].plot(args.widths, means, marker="o", label=metric)
        for w in args.widths:
            axes[1].scatter([w] * len(args.seeds), [r[index] for r in rows if r[0] == w], s=10, alpha=0.5)
    axes[1].set_xscale("log", base=2)
    axes[1].set_xlabel("critic width")
    axes[1].legend(fontsize=8)
    fig.suptitle(f"Multi-task BRC on {', '.join(TASKS)}", fontsize=9)
    fig.tight_layout()
    fig.savefig(args.out, dpi=100)
    print(f"plot: {args.out}\n")
    with open(os.path.splitext(args.out)[0] + ".json", "w") as file:  # raw numbers behind the plot
        json.dump([dict(width=w, seed=s, final_rate=r, final_cosine=c, curve=k) for w, s, r, c, k in rows], file, indent=1)
    print(
        "| critic width | seeds | conflict rate during training (mean of points) | final conflict rate (per seed) "
        "| final mean | final mean pairwise cosine |"
    )
    print("|---|---|---|---|---|---|")
    during, final = [], []
    for width in args.widths:
        mine = [r for r in rows if r[0] == width]
        rates = [r[2] for r in mine]
        during.append(float(np.mean([c for r in mine for _, c in r[4]])))
        final.append(float(np.mean(rates)))
        print(
            f"| {width} | {len(mine)} | {during[-1]:.3f} | {', '.join(f'{v:.2f}' for v in rates)} | {final[-1]:.3f} "
            f"| {np.mean([r[3] for r in mine]):.3f} |"
        )
    for label, values in (("during training", during), ("at the end", final)):
        falling = all(a >= b for a, b in itertools.pairwise(values))
        print(
            f"conflict rate {label} {'falls (monotonically)' if falling else 'does NOT fall monotonically'} with width: "
            + " -> ".join(f"{v:.3f}" for v in values)
        )


if __name__ == "__main__":
    main()
