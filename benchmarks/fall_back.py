"""A task that learns, then falls back: a toy task trained beside InvertedPendulum-v5 in one BRCSAC, under variants
of the return normalisation, to tell what makes the toy task's return fall while the pendulum learns.

    MUJOCO_GL=disable python benchmarks/fall_back.py --variants default per_task frozen raw --seeds 0 1
    MUJOCO_GL=disable python benchmarks/fall_back.py --variants default --seeds 0 --diagnostics

The toy task moves a point towards 0.5 (reward ``-|x - 0.5|`` in its action coordinate, 20-step episodes, random
policy about -17); InvertedPendulum-v5 learns to balance, and its largest discounted return grows from about 5 to 100
while it does, so its reward scale ``v_max / (G + lambda)`` falls fourfold. Variants:

- ``default``: BRC's return normalisation (the reference's fixed entropy term);
- ``per_task``: the paper's per-task entropy term (``ReturnNormalization(entropy_term="per_task")``);
- ``frozen``: the default, with the pendulum's return statistics frozen after the random warm-up (its scale stays
  at the random policy's);
- ``raw``: no normalisation (``normalize_rewards=False``).

Settings: actor 32, critic 64 x 2 blocks (``--critic-width``), 51 atoms, batch 64, 300 random steps per task, 2 updates
per env step, evaluation of 10 deterministic episodes per task on envs seeded 42 every ``--eval-every`` steps per task;
1 thread.
"""

import argparse
import os

import gymnasium as gym
import numpy as np
import torch as th
from gymnasium import spaces

from sb3_brc import BRCSAC, MultiTaskVecEnv, ReturnNormalization
from sb3_brc.tools.diagnostics import DiagnosticsCallback
from sb3_brc.tools.evaluation import evaluate_tasks

PENDULUM, TOY = 0, 1  # task ids


class Toy(gym.Env):
    """Move a point towards 0.5 in its action coordinate (a second is a distractor); 20-step episodes."""

    observation_space = spaces.Box(-np.inf, np.inf, (2,), np.float32)
    action_space = spaces.Box(-1, 1, (1,), np.float32)

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.t = 0
        self.x = self.np_random.uniform(-1, 1, 2).astype(np.float32)
        return self.x.copy(), {}

    def step(self, action):
        self.t += 1
        self.x[:1] = np.clip(self.x[:1] + 0.5 * np.asarray(action), -2, 2)
        return self.x.copy(), -float(np.abs(self.x[:1] - 0.5).sum()), False, self.t >= 20, {}


def make_env(seed: int) -> MultiTaskVecEnv:
    return MultiTaskVecEnv(["InvertedPendulum-v5", Toy], task_names=["InvertedPendulum", "toy"], seed=seed)


def freeze_task_statistics(model: BRCSAC, task: int) -> None:
    """From now on, episodes of ``task`` no longer move its return statistics (its reward scale stays)."""
    normalizer = model.return_normalizer
    assert normalizer is not None
    finish = normalizer._finish_episode

    def finish_other_tasks(episode_task: int, rewards: list[float], truncated: bool) -> None:
        if episode_task != task:
            finish(episode_task, rewards, truncated)

    normalizer._finish_episode = finish_other_tasks  # type: ignore[method-assign]


def run(
    variant: str, seed: int, steps: int, eval_every: int, warm_up: int, diagnostics: bool = False, critic_width: int = 64
) -> list[tuple[float, float, float]]:
    """(toy return, pendulum return, pendulum's reward scale / toy's) at each evaluation; with ``diagnostics``, a line
    per evaluation of the toy's and the pendulum's critic loss, critic gradient norm and policy entropy, the conflict
    rate of their critic gradients and the temperature (diagnostics every 250 updates, averaged over the interval;
    they do not change the run)."""
    normalization: bool | ReturnNormalization = {"raw": False, "per_task": ReturnNormalization(entropy_term="per_task")}.get(
        variant, True
    )
    env, eval_env = make_env(seed), make_env(42)
    model = BRCSAC(
        "MlpPolicy",
        env,
        learning_starts=warm_up * env.num_tasks,
        batch_size=64,
        policy_kwargs=dict(net_arch=dict(pi=[32], qf=[critic_width, critic_width]), n_atoms=51),
        normalize_rewards=normalization,
        compile_update=False,
        seed=seed,
    )
    model.learn(warm_up * env.num_tasks)
    if variant == "frozen":
        freeze_task_statistics(model, PENDULUM)
    rows = []
    callback = DiagnosticsCallback(every_n_updates=250, samples_per_task=256) if diagnostics else None
    for _ in range(steps // eval_every):
        seen = len(callback.history) if callback is not None else 0
        model.learn(eval_every * env.num_tasks, reset_num_timesteps=False, callback=callback)
        returns = [row["mean_return"] for row in evaluate_tasks(model, eval_env, n_eval_episodes=10)]
        scale = model.reward_scale().tolist()
        rows.append((returns[TOY], returns[PENDULUM], scale[PENDULUM] / scale[TOY] if scale[TOY] else float("nan")))
        if callback is not None:
            history = callback.history[seen:]
            means = {
                key: np.nanmean([entry[key] for entry in history], axis=0) for key in ("critic_loss", "grad_norm", "entropy")
            }
            conflicts = np.mean([entry["conflict_rate"] for entry in history])
            print(
                f"  {model.num_timesteps // env.num_tasks} steps/task: toy return {returns[TOY]:.1f}; critic loss "
                f"toy {means['critic_loss'][TOY]:.3f} pendulum {means['critic_loss'][PENDULUM]:.3f}; grad norm toy "
                f"{means['grad_norm'][TOY]:.3f} pendulum {means['grad_norm'][PENDULUM]:.3f}; entropy toy "
                f"{means['entropy'][TOY]:.2f} pendulum {means['entropy'][PENDULUM]:.2f}; conflict rate {conflicts:.2f}; "
                f"alpha {float(model._current_ent_coef()):.4f}",
                flush=True,
            )
    env.close()
    eval_env.close()
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--variants", nargs="+", default=["default", "per_task", "frozen", "raw"])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--steps", type=int, default=4000, help="env steps per task")
    parser.add_argument("--eval-every", type=int, default=500)
    parser.add_argument("--warm-up", type=int, default=300, help="random env steps per task")
    parser.add_argument("--diagnostics", action="store_true", help="also print the per-task diagnostics at each evaluation")
    parser.add_argument("--critic-width", type=int, default=64, help="width of the critic's 2 blocks")
    args = parser.parse_args()
    os.environ.setdefault("MUJOCO_GL", "disable")
    th.set_num_threads(1)
    print("| variant | seed | toy task, every eval | InvertedPendulum | pendulum scale / toy scale |")
    print("|---|---|---|---|---|")
    for variant in args.variants:
        for seed in args.seeds:
            rows = run(variant, seed, args.steps, args.eval_every, args.warm_up, args.diagnostics, args.critic_width)
            toy, pendulum, ratio = zip(*rows, strict=True)
            print(
                f"| {variant} | {seed} | {' '.join(f'{x:.1f}' for x in toy)} | {' '.join(f'{x:.0f}' for x in pendulum)} "
                f"| {' '.join(f'{x:.2f}' for x in ratio)} |",
                flush=True,
            )


if __name__ == "__main__":
    main()
