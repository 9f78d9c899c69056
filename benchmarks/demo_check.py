"""Does a task that learns single-task also learn inside a multi-task run? And which tasks suit the demo?

Trains BRCSAC (size ``tiny``: critic 2 x 128, actor 64) on ``--tasks``, each repeated ``--copies`` times as separate
tasks of one multi-task run, and prints each task's random baseline and its evaluations. A multi-task run makes
``--gradient-steps`` updates per vector step for all its tasks together, so ``--gradient-steps 4`` with two copies
gives each copy the updates of a single-task run with ``--gradient-steps 2`` (BRC's default) at equal env steps per
task. One thread per process; run two at once on two cores:

    MUJOCO_GL=disable python benchmarks/demo_check.py --tasks InvertedPendulum-v5 --seeds 0 1 2
    MUJOCO_GL=disable python benchmarks/demo_check.py --tasks InvertedPendulum-v5 --copies 2 --gradient-steps 4

The demo suite's tasks with a wider critic (does a task that falls back in the demo do so with more capacity?):

    MUJOCO_GL=disable python benchmarks/demo_check.py --tasks InvertedPendulum-v5 Reacher-v5 \
        InvertedDoublePendulum-v5 --eval-freq 600 --eval-episodes 10 --critic-width 256

``--diagnostics`` adds, every 250 updates, each task's critic loss, critic gradient norm and policy entropy, the
temperature and the reward scales to the JSON line (they do not change the run).
"""

import argparse
import json
import time

import torch as th
from stable_baselines3.common.callbacks import CallbackList

from sb3_brc import BRCSAC, MultiTaskVecEnv, evaluate_tasks
from sb3_brc.common.policies import SIZE_PRESETS
from sb3_brc.tools.diagnostics import DiagnosticsCallback
from sb3_brc.tools.evaluation import MultiTaskEvalCallback


class TrainingState(DiagnosticsCallback):
    """Diagnostics (per-task critic loss, gradient norm, policy entropy; they do not change the run) with the
    temperature and each task's reward scale at the same moments."""

    def _on_step(self) -> bool:
        seen = len(self.history)
        super()._on_step()
        if len(self.history) > seen:
            model = self.model
            self.history[-1].update(
                steps_per_task=model.num_timesteps // model.num_tasks,
                alpha=float(model._current_ent_coef()),
                reward_scale=model.reward_scale().tolist(),
            )
            del self.history[-1]["cosines"]
        return True


def net_arch(args: argparse.Namespace) -> dict:
    """The size preset's widths, its critic blocks ``--critic-width`` wide when given."""
    arch = dict(SIZE_PRESETS[args.size])
    if args.critic_width is not None:
        arch["qf"] = [args.critic_width] * len(arch["qf"])
    return arch


def run(args: argparse.Namespace, seed: int) -> dict:
    tasks = [task for task in args.tasks for _ in range(args.copies)]
    names = [f"{task.split('/')[-1]}#{copy}" for task in args.tasks for copy in range(args.copies)]
    env = MultiTaskVecEnv(tasks, task_names=names, seed=seed)
    eval_env = MultiTaskVecEnv(tasks, task_names=names, seed=seed + 1000)
    random = {row["task"]: row["mean_return"] for row in evaluate_tasks(None, eval_env, args.eval_episodes, seed=seed)}
    model = BRCSAC(
        "MlpPolicy",
        env,
        batch_size=args.batch_size,
        gradient_steps=args.gradient_steps,
        learning_starts=args.learning_starts * len(tasks),
        buffer_size=args.steps_per_task * len(tasks),
        policy_kwargs=dict(net_arch=net_arch(args)),
        seed=seed,
    )
    evaluation = MultiTaskEvalCallback(eval_env, args.eval_freq, args.eval_episodes)
    state = TrainingState(every_n_updates=250) if args.diagnostics else None
    start = time.time()
    model.learn(args.steps_per_task * len(tasks), callback=CallbackList([evaluation, *([state] if state else [])]))
    minutes = (time.time() - start) / 60
    curves: dict[str, list[float]] = {}
    for row in evaluation.history:
        curves.setdefault(row["task"], []).append(round(row["mean_return"], 1))
    result = {"seed": seed, "minutes": round(minutes, 2), "random": random, "curves": curves}
    if state is not None:
        result["diagnostics"] = state.history
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tasks", nargs="+", required=True)
    parser.add_argument("--copies", type=int, default=1)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--steps-per-task", type=int, default=6000)
    parser.add_argument("--learning-starts", type=int, default=1000, help="random steps per task")
    parser.add_argument("--gradient-steps", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--size", default="tiny", choices=sorted(SIZE_PRESETS))
    parser.add_argument("--critic-width", type=int, help="width of the critic's blocks (default: the size preset's)")
    parser.add_argument("--eval-freq", type=int, default=1000, help="env steps per task")
    parser.add_argument("--eval-episodes", type=int, default=5)
    parser.add_argument("--diagnostics", action="store_true", help="also record diagnostics every 250 updates")
    parser.add_argument("--out", help="append one JSON line per seed to this file")
    args = parser.parse_args()
    th.set_num_threads(1)
    for seed in args.seeds:
        result = run(args, seed)
        result["settings"] = {k: v for k, v in vars(args).items() if k not in ("seeds", "out")}
        print(json.dumps(result), flush=True)
        if args.out:
            with open(args.out, "a") as file:
                file.write(json.dumps(result) + "\n")


if __name__ == "__main__":
    main()
