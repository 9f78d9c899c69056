"""Env steps/s of one ShadowHand task with random actions, built as the BRC paper trains on it
(:func:`sb3_brc.envs.shadowhand.make_shadowhand`: observation + desired goal, sparse reward, 100-step episodes).

    MUJOCO_GL=disable python benchmarks/shadowhand_env_steps.py                       # gymnasium-robotics' block
    MUJOCO_GL=disable python benchmarks/shadowhand_env_steps.py HandManipulateBlockRotateZ-v1 apple-rotate-v1

``apple-rotate-v1`` needs BRC's ``dex_envs`` (the reference repository root on ``PYTHONPATH``). Resets are timed
too (one every 100 steps), as in training.
"""

import argparse
import time

from sb3_brc.envs.shadowhand import make_shadowhand


def steps_per_second(env_id: str, steps: int, seed: int = 0) -> float:
    """Random-action env steps/s of ``env_id`` over ``steps`` steps, resets included."""
    env = make_shadowhand(env_id)
    env.action_space.seed(seed)
    env.reset(seed=seed)
    start = time.perf_counter()
    for _ in range(steps):
        _, _, terminated, truncated, _ = env.step(env.action_space.sample())
        if terminated or truncated:
            env.reset()
    elapsed = time.perf_counter() - start
    env.close()
    return steps / elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("tasks", nargs="*", default=["HandManipulateBlockRotateZ-v1"], help="ShadowHand ids")
    parser.add_argument("--steps", type=int, default=5000, help="Timed steps per task")
    parser.add_argument("--repeats", type=int, default=3, help="Timed runs per task (the best is reported too)")
    args = parser.parse_args()
    print(f"{'task':32s} {'steps/s (mean)':>15s} {'best':>8s}")
    for task in args.tasks:
        rates = [steps_per_second(task, args.steps, seed) for seed in range(args.repeats)]
        print(f"{task:32s} {sum(rates) / len(rates):15.0f} {max(rates):8.0f}")


if __name__ == "__main__":
    main()
