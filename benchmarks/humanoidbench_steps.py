"""Env steps/s of single HumanoidBench envs (``make_humanoidbench``, headless) under uniformly random actions.

Episodes restart when they end (random actions make the H1 robot fall within about 100 steps, which terminates
locomotion episodes), and resets are timed with the steps. Needs ``humanoid_bench``.

    MUJOCO_GL=disable python benchmarks/humanoidbench_steps.py --tasks h1-walk-v0 h1hand-push-v0 --steps 5000
"""

import argparse
import time

from sb3_brc.envs.humanoidbench import make_humanoidbench


def steps_per_second(task: str, steps: int, seed: int) -> tuple[float, int]:
    """Random-action env steps/s of ``task`` over ``steps`` steps, and the number of episodes they ended."""
    env = make_humanoidbench(task)
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tasks", nargs="+", default=["h1-walk-v0", "h1hand-push-v0"])
    parser.add_argument("--steps", type=int, default=5000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    print(f"{'task':18s} {'steps/s (best of ' + str(args.repeats) + ')':>22s} {'episodes ended':>15s}")
    for task in args.tasks:
        runs = [steps_per_second(task, args.steps, args.seed + repeat) for repeat in range(args.repeats)]
        best, episodes = max(runs)
        print(f"{task:18s} {best:22.0f} {episodes:15d}")


if __name__ == "__main__":
    main()
