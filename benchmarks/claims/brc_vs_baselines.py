"""Claim (paper, Figure 1): BRC is competitive with optimised single-task learners, here SB3 SAC and sb3-contrib TQC
(and CrossQ when affordable) on single tasks at a fixed budget.

    MUJOCO_GL=disable python benchmarks/claims/brc_vs_baselines.py --algos brc_sac sac tqc \
        --tasks Pendulum-v1 InvertedPendulum-v5 --steps-per-task 4000 --seeds 0 1 2 \
        --out benchmarks/results/brc_vs_baselines --results-md benchmarks/RESULTS.md

``--crossq-width N`` adds sb3-contrib's CrossQ with both networks ``[N, N]`` as algorithm ``crossq_w<N>`` (its
default critic, 2 x 1024 with batch renormalisation, runs at about 5 env steps/s on one CPU thread), while the other
algorithms keep their own sizes (``--width`` would set every algorithm's).

A run of the benchmark harness (:mod:`sb3_brc.bench`): every algorithm with its own default hyperparameters
(BRC: BroNet critic blocks from ``--size``, 2 updates per env step; SAC/TQC: 256 x 256 MLPs, 1 update per env
step), the same warm-up, budget and evaluation. The aggregate table and plots go to ``--out`` (and into
``--results-md``); this script prints the conclusion from them.
"""

import argparse
import os
from typing import Any

from sb3_brc.bench import ALGOS, BenchAlgo, add_arguments, register_algo, run_from_args
from sb3_brc.bench.algos import crossq_policy_kwargs


class CrossQAtWidth:
    """``policy_kwargs`` of CrossQ at a fixed width, whatever ``--width`` says (a class, so that the entry pickles
    into the harness's spawned workers)."""

    def __init__(self, width: int):
        self.width = width

    def __call__(self, size: str, width: int | None) -> dict[str, Any]:
        return crossq_policy_kwargs(size, self.width)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_arguments(parser)  # the harness's flags, with this claim's defaults
    parser.set_defaults(
        algos=["brc_sac", "sac", "tqc"],
        steps_per_task=4000,
        eval_every=500,
        learning_starts=500,
        out="runs/brc_vs_baselines",
        results_title="Claim: BRC vs SAC and TQC on single tasks at a fixed budget (harness run)",
    )
    parser.add_argument("--crossq-width", type=int, default=None, help="also run CrossQ with [N, N] networks")
    args = parser.parse_args()
    if args.crossq_width is not None:
        if args.crossq_width <= 0:
            parser.error(f"--crossq-width must be positive, got {args.crossq_width}")
        name = f"crossq_w{args.crossq_width}"
        crossq = ALGOS["crossq"]
        register_algo(
            name,
            BenchAlgo(
                crossq.cls,
                policy_kwargs=CrossQAtWidth(args.crossq_width),
                make_env=crossq.make_env,
                description=f"sb3-contrib CrossQ, its defaults but [{args.crossq_width}, {args.crossq_width}] networks",
            ),
            overwrite=True,
        )
        args.algos = [algo for algo in args.algos if algo != "crossq"] + [name]
    os.environ.setdefault("MUJOCO_GL", "disable")
    result = run_from_args(args)
    data, agg = result["data"], result["aggregate"]
    print(f"plots: {', '.join(os.path.join(args.out, name) for name in agg['plots'])}")
    for algo in data.algos:
        point, (low, high) = agg["point"][algo][0], agg["ci"][algo][0]
        print(
            f"{algo:8s} final IQM {point:.3f} [{low:.3f}, {high:.3f}], mean score over all evaluations "
            f"{float(data.curves[algo].mean()):.3f}"
        )
    for pair, (p, low, high) in agg["poi"].items():
        x, y = pair.split(",")
        verdict = "better than" if low > 0.5 else "worse than" if high < 0.5 else "not distinguishable from"
        print(f"P({x} > {y}) = {p:.2f} [{low:.2f}, {high:.2f}]: {x} {verdict} {y} at this budget (CI vs 0.5)")


if __name__ == "__main__":
    main()
