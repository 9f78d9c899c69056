"""Transfer vs training from scratch on a held-out task: env steps to reach a return threshold.

    MUJOCO_GL=disable python benchmarks/transfer.py --threads 2

Shared embodiment at CPU scale: Pendulum-v1 with gravity g = 6, 8, 12 (pretraining, multi-task BRC) and a
held-out g = 10. Transfer: ``add_tasks`` on the pretrained model (new embedding row from the mean rule, fresh
replay buffer, 1000-step random warm-up); scratch: a new single-task BRCSAC with the same sizes and warm-up.
Deterministic evaluation (5 episodes) every 500 env steps.
"""

import argparse
import functools
import time

import gymnasium as gym
import numpy as np
import torch as th

from sb3_brc import BRCSAC, MultiTaskVecEnv, add_tasks, new_task_env
from sb3_brc.tools.evaluation import evaluate_tasks

POLICY = dict(net_arch=dict(pi=[64], qf=[128, 128]))


def pendulum(g: float) -> gym.Env:
    return gym.make("Pendulum-v1", g=g)


def curve(model: BRCSAC, env: MultiTaskVecEnv, eval_env: MultiTaskVecEnv, steps: int) -> list[float]:
    points = []
    for _ in range(steps // 500):
        model.learn(500, reset_num_timesteps=False)
        points.append(evaluate_tasks(model, eval_env, 5)[0]["mean_return"])
    return points


def steps_to(points: list[float], threshold: float) -> str:
    hit = next((500 * (i + 1) for i, value in enumerate(points) if value >= threshold), None)
    return str(hit) if hit is not None else f"> {500 * len(points)}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--pretrain-steps", type=int, default=6000, help="env steps per pretraining task")
    parser.add_argument("--steps", type=int, default=5000, help="env steps on the held-out task")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--threshold", type=float, default=-400.0)
    args = parser.parse_args()
    th.set_num_threads(args.threads)
    pretrain = [6.0, 8.0, 12.0]
    held_out = 10.0
    start = time.time()
    env = MultiTaskVecEnv([functools.partial(pendulum, g) for g in pretrain], task_names=[f"g{g:g}" for g in pretrain], seed=0)
    base = BRCSAC("MlpPolicy", env, learning_starts=3 * 1000, batch_size=256, seed=0, policy_kwargs=POLICY)
    base.learn(args.pretrain_steps * len(pretrain))
    pretrained = evaluate_tasks(
        base, MultiTaskVecEnv([functools.partial(pendulum, g) for g in pretrain], task_names=env.task_names, seed=42), 5
    )
    base.save("/tmp/brc_transfer_pretrained.zip")
    print(
        f"pretrained on g = {pretrain} for {args.pretrain_steps} steps/task in {(time.time() - start) / 60:.1f} min: "
        + ", ".join(f"{r['task']} {r['mean_return']:.0f}" for r in pretrained)
    )
    rows = []
    for seed in args.seeds:
        model = BRCSAC.load("/tmp/brc_transfer_pretrained.zip", seed=seed)
        new_env = new_task_env(model, [functools.partial(pendulum, held_out)], task_names=[f"g{held_out:g}"], seed=seed)
        new_eval = new_task_env(model, [functools.partial(pendulum, held_out)], task_names=[f"g{held_out:g}"], seed=99)
        add_tasks(model, new_env, learning_starts=1000)
        transfer = curve(model, new_env, new_eval, args.steps)
        scratch_env = MultiTaskVecEnv([functools.partial(pendulum, held_out)], seed=seed)
        scratch_eval = MultiTaskVecEnv([functools.partial(pendulum, held_out)], seed=99)
        scratch = BRCSAC("MlpPolicy", scratch_env, learning_starts=1000, batch_size=256, seed=seed, policy_kwargs=POLICY)
        rows.append((seed, transfer, curve(scratch, scratch_env, scratch_eval, args.steps)))
    print(f"\nheld-out g = {held_out:g}; eval return every 500 env steps; threshold {args.threshold:g}\n")
    print("| seed | method | steps to threshold | " + " | ".join(str(500 * (i + 1)) for i in range(args.steps // 500)) + " |")
    print("|---|---|---|" + "---|" * (args.steps // 500))
    for seed, transfer, scratch in rows:
        for name, points in (("transfer", transfer), ("scratch", scratch)):
            values = " | ".join(f"{v:.0f}" for v in points)
            print(f"| {seed} | {name} | {steps_to(points, args.threshold)} | {values} |")
    mean_t = np.mean([np.mean(t) for _, t, _ in rows])
    mean_s = np.mean([np.mean(s) for _, _, s in rows])
    print(
        f"\nmean return over the curve: transfer {mean_t:.0f}, scratch {mean_s:.0f}; "
        f"total {(time.time() - start) / 60:.1f} min"
    )


if __name__ == "__main__":
    main()
