"""Does the demo's DMC task (cartpole-balance) learn single-task at the demo's settings, and inside a multi-task run?

``single``: cartpole-balance alone; ``two``: two copies of it in one multi-task run (each copy gets half the updates
of the single-task run at equal env steps per task, as every task of a multi-task run does). Demo settings: size
``tiny`` (critic 2 x 128, actor 64), batch 256, 1000 random steps per task, 6000 env steps per task, evaluation
every 1000 steps over 5 deterministic episodes. One thread per process; run both at once on two cores:

    MUJOCO_GL=disable python benchmarks/demo_dmc_check.py single
    MUJOCO_GL=disable python benchmarks/demo_dmc_check.py two
"""

import argparse
import time

import torch as th

from sb3_brc import BRCSAC, MultiTaskVecEnv, evaluate_tasks
from sb3_brc.sac.policies import SIZE_PRESETS
from sb3_brc.tools.evaluation import MultiTaskEvalCallback


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("mode", choices=["single", "two"])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--steps-per-task", type=int, default=6000)
    args = parser.parse_args()
    th.set_num_threads(1)
    copies = 1 if args.mode == "single" else 2
    tasks, names = ["dm_control/cartpole-balance-v0"] * copies, [f"cartpole-balance-{i}" for i in range(copies)]
    env = MultiTaskVecEnv(tasks, task_names=names, seed=args.seed)
    eval_env = MultiTaskVecEnv(tasks, task_names=names, seed=args.seed + 42)
    random = [round(row["mean_return"]) for row in evaluate_tasks(None, eval_env, 5, seed=args.seed)]
    model = BRCSAC(
        "MlpPolicy",
        env,
        batch_size=256,
        learning_starts=1000 * copies,
        buffer_size=args.steps_per_task * copies,
        policy_kwargs=dict(net_arch=SIZE_PRESETS["tiny"]),
        seed=args.seed,
    )
    evaluation = MultiTaskEvalCallback(eval_env, 1000, 5)
    start = time.time()
    model.learn(args.steps_per_task * copies, callback=evaluation)
    print(f"{args.mode}: random {random}; {(time.time() - start) / 60:.1f} min")
    for row in evaluation.history:
        print(f"  {row['steps_per_task']:5d} steps  {row['task']}: {row['mean_return']:.0f}")


if __name__ == "__main__":
    main()
