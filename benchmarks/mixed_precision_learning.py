"""Does bf16 autocast change learning? Same seeds, same budget, fp32 vs ``mixed_precision=True``.

    python benchmarks/mixed_precision_learning.py --threads 2

InvertedPendulum-v5 and Pendulum-v1, tiny networks; deterministic evaluation return (10 episodes) after
each 1000 env steps.
"""

import argparse

import gymnasium as gym
import numpy as np
import torch as th
from stable_baselines3.common.evaluation import evaluate_policy

from sb3_brc import BRCSAC


def run(env_id: str, seed: int, steps: int, mixed_precision: bool) -> list[float]:
    model = BRCSAC(
        "MlpPolicy",
        env_id,
        learning_starts=1000,
        seed=seed,
        mixed_precision=mixed_precision,
        policy_kwargs=dict(net_arch=dict(pi=[64], qf=[256, 256])),
    )
    curve = []
    for _ in range(steps // 1000):
        model.learn(1000, reset_num_timesteps=False)
        curve.append(evaluate_policy(model, gym.make(env_id), n_eval_episodes=10)[0])
    return curve


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--steps", type=int, default=6000)
    args = parser.parse_args()
    th.set_num_threads(args.threads)
    print("| task | precision | " + " | ".join(f"{k}k" for k in range(1, args.steps // 1000 + 1)) + " |")
    print("|---|---|" + "---|" * (args.steps // 1000))
    for env_id in ("InvertedPendulum-v5", "Pendulum-v1"):
        for mixed in (False, True):
            curves = np.array([run(env_id, seed, args.steps, mixed) for seed in args.seeds])
            means = " | ".join(f"{v:.0f}" for v in curves.mean(0))
            print(f"| {env_id} | {'bf16' if mixed else 'fp32'} | {means} |", flush=True)


if __name__ == "__main__":
    main()
