"""Env steps/s of single tasks under uniformly random actions, each built as sb3-brc trains on it (any task id or
name ``sb3-brc train --tasks`` accepts, or every task of a suite). Episodes restart when they end and resets are
timed with the steps, as in training.

    MUJOCO_GL=disable python benchmarks/env_steps.py --tasks h1-walk-v0 h1hand-push-v0        # HumanoidBench
    MUJOCO_GL=disable python benchmarks/env_steps.py --tasks HandManipulateBlockRotateZ-v1 apple-rotate-v1
    MUJOCO_GL=disable python benchmarks/env_steps.py --suite mt10-paper --steps 500            # Meta-World, paper

``--suite`` times the suite's multi-task vector env (one process, all tasks stepped together, as ``sb3-brc train``
runs it) and reports env steps/s summed over its tasks.

HumanoidBench ids need ``humanoid_bench``; ``<object>-rotate-v1`` needs BRC's ``dex_envs``.
"""

import argparse
import time

import numpy as np

from sb3_brc.envs.suites import make_suite
from sb3_brc.envs.tasks import task_factory


def steps_per_second(task: str, steps: int, seed: int) -> tuple[float, int]:
    """Random-action env steps/s of ``task`` over ``steps`` steps, and the number of episodes they ended."""
    build, _, _ = task_factory(task, seed)
    env = build()
    env.action_space.seed(seed)
    env.reset(seed=seed)
    episodes = 0
    start = time.perf_counter()
    for _ in range(steps):
        _, _, terminated, truncated, _ = env.step(env.action_space.sample())
        if terminated or truncated:
            episodes += 1
            env.reset()
    elapsed = time.perf_counter() - start
    env.close()
    return steps / elapsed, episodes


def suite_steps_per_second(name: str, vector_steps: int, seed: int) -> tuple[float, int]:
    """Random-action env steps/s (summed over tasks) of suite ``name``'s vector env, and its number of tasks."""
    env = make_suite(name, seed=seed)
    env.reset()
    rng = np.random.default_rng(seed)
    low, high = env.action_space.low, env.action_space.high
    start = time.perf_counter()
    for _ in range(vector_steps):
        env.step(rng.uniform(low, high, size=(env.num_envs, *env.action_space.shape)).astype(np.float32))
    elapsed = time.perf_counter() - start
    env.close()
    return vector_steps * env.num_envs / elapsed, env.num_envs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--tasks", nargs="+")
    source.add_argument("--suite")
    parser.add_argument("--steps", type=int, default=5000, help="timed steps per run (vector steps with --suite)")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs per task")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    if args.suite:
        runs = [suite_steps_per_second(args.suite, args.steps, args.seed + repeat) for repeat in range(args.repeats)]
        rates = [rate for rate, _ in runs]
        summed = f"mean {np.mean(rates):.0f}, best {max(rates):.0f}"
        print(f"{args.suite}: {runs[0][1]} tasks, env steps/s summed over tasks: {summed}")
        return
    tasks = args.tasks
    print(f"{'task':40s} {'steps/s (mean)':>15s} {'best':>8s} {'episodes':>9s}")
    for task in tasks:
        runs = [steps_per_second(task, args.steps, args.seed + repeat) for repeat in range(args.repeats)]
        rates = [rate for rate, _ in runs]
        print(f"{task:40s} {np.mean(rates):15.0f} {max(rates):8.0f} {runs[0][1]:9d}", flush=True)


if __name__ == "__main__":
    main()
