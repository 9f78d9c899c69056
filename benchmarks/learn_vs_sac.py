"""Wall time per env step of ``BRCSAC.learn()`` at a CPU size against SB3 SAC's ``learn()`` at its defaults, on the
same task, machine and thread count, in one process.

    MUJOCO_GL=disable python benchmarks/learn_vs_sac.py --threads 1 --steps 3000 --repeats 3

Each model first fills its replay with ``--learning-starts`` random steps (not timed) and runs its first updates
(for the compiled BRCSAC: its compilation, reported apart); then the models take turns, ``--repeats`` times, each
training ``--steps`` env steps, so that machine drift hits all of them. BRCSAC runs at ``--size`` with its defaults
(2 updates per env step, batch 256) eagerly and with ``compile_update=True``; SAC at SB3's defaults (1 update per
env step, batch 256, 256 x 256 networks).
"""

import argparse
import os
import time

import numpy as np
import torch as th
from stable_baselines3 import SAC

from sb3_brc import BRCSAC
from sb3_brc.common.policies import SIZE_PRESETS


def make_models(task: str, size: str, learning_starts: int) -> dict:
    brc = dict(policy_kwargs=dict(net_arch=SIZE_PRESETS[size]), learning_starts=learning_starts, seed=0)
    return {
        "SAC": SAC("MlpPolicy", task, learning_starts=learning_starts, seed=0),
        "BRCSAC eager": BRCSAC("MlpPolicy", task, compile_update=False, **brc),
        "BRCSAC compiled": BRCSAC("MlpPolicy", task, compile_update=True, **brc),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--task", default="HalfCheetah-v5")
    parser.add_argument("--size", default="tiny", choices=list(SIZE_PRESETS))
    parser.add_argument("--steps", type=int, default=3000, help="timed env steps per turn")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--learning-starts", type=int, default=1000)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    os.environ.setdefault("MUJOCO_GL", "disable")
    th.set_num_threads(args.threads)
    models = make_models(args.task, args.size, args.learning_starts)
    warm_up = {}
    for name, model in models.items():
        start = time.perf_counter()
        model.learn(args.learning_starts + 10)  # the replay's random steps and the first updates (compilation)
        warm_up[name] = time.perf_counter() - start
    seconds: dict[str, list[float]] = {name: [] for name in models}
    for _ in range(args.repeats):
        for name, model in models.items():
            start = time.perf_counter()
            model.learn(args.steps, reset_num_timesteps=False)
            seconds[name].append((time.perf_counter() - start) / args.steps)
    print(f"torch {th.__version__}, {th.get_num_threads()} thread(s), {args.task}, BRCSAC size {args.size}")
    print("| model | ms per env step (median, runs) | / SAC | warm-up incl. first updates (s) |")
    print("|---|---|---|---|")
    sac = float(np.median(seconds["SAC"]))
    for name, values in seconds.items():
        runs = ", ".join(f"{1000 * value:.2f}" for value in values)
        median = float(np.median(values))
        print(f"| {name} | {1000 * median:.2f} ({runs}) | {median / sac:.2f} | {warm_up[name]:.0f} |")


if __name__ == "__main__":
    main()
