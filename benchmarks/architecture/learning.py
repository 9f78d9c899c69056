"""The seeded learning checks of the test suite with their numbers printed, for before/after comparisons of a change:

PYTHONPATH=/path/to/checkout MUJOCO_GL=disable python benchmarks/architecture/learning.py
"""

import pathlib
import sys

import gymnasium as gym
import torch as th
from stable_baselines3.common.evaluation import evaluate_policy

from sb3_brc import BRCDQN, BRCSAC, DiscreteMultiTaskVecEnv, MultiTaskVecEnv, evaluate_tasks

sys.path.insert(0, str(pathlib.Path(__file__).parents[2] / "tests"))  # the tests' toy envs
from envs import TargetEnv

th.set_num_threads(1)

for seed in (0, 1, 2):
    model = BRCDQN(
        "MlpPolicy",
        gym.make("CartPole-v1"),
        learning_starts=500,
        exploration_decay_steps=1000,
        policy_kwargs=dict(net_arch=[64, 64], n_atoms=51),
        seed=seed,
    )
    model.learn(4000)
    r, _ = evaluate_policy(model, gym.make("CartPole-v1"), n_eval_episodes=10, deterministic=True, warn=False)
    print(f"BRCDQN CartPole seed {seed}: {r:.0f}", flush=True)

env = DiscreteMultiTaskVecEnv(["CartPole-v1", "Acrobot-v1"], seed=0)
model = BRCDQN(
    "MlpPolicy",
    env,
    learning_starts=1000,
    exploration_decay_steps=1000,
    policy_kwargs=dict(net_arch=[64, 64], n_atoms=51),
    seed=0,
)
model.learn(2 * 5000)
eval_env = DiscreteMultiTaskVecEnv(["CartPole-v1", "Acrobot-v1"], seed=100)
print(
    "BRCDQN CartPole+Acrobot:",
    {r["task"]: round(r["mean_return"]) for r in evaluate_tasks(model, eval_env, n_eval_episodes=10)},
    "random",
    {r["task"]: round(r["mean_return"]) for r in evaluate_tasks(None, eval_env, n_eval_episodes=10, seed=0)},
    flush=True,
)

model = BRCSAC(
    "MlpPolicy",
    "InvertedPendulum-v5",
    learning_starts=300,
    batch_size=64,
    seed=0,
    policy_kwargs=dict(net_arch=dict(pi=[32], qf=[64, 64]), n_atoms=51),
)
model.learn(1500)
mean_return = evaluate_policy(model, gym.make("InvertedPendulum-v5"), n_eval_episodes=10)[0]
print(f"BRCSAC InvertedPendulum 1500 steps: {mean_return:.0f}", flush=True)


def make(seed):
    return MultiTaskVecEnv(
        ["InvertedPendulum-v5", lambda: TargetEnv(obs_dim=2, act_dim=1)], task_names=["pendulum", "toy"], seed=seed
    )


env, eval_env = make(0), make(42)
rand = [round(r["mean_return"], 1) for r in evaluate_tasks(None, eval_env, 10, seed=0)]
model = BRCSAC(
    "MlpPolicy",
    env,
    learning_starts=600,
    batch_size=64,
    seed=0,
    policy_kwargs=dict(net_arch=dict(pi=[32], qf=[64, 64]), n_atoms=51),
)
model.learn(2 * 2000)
print(
    "BRCSAC InvertedPendulum+toy:",
    [round(r["mean_return"], 1) for r in evaluate_tasks(model, eval_env, 10)],
    "random",
    rand,
    flush=True,
)

model = BRCSAC(
    "MlpPolicy",
    "Pendulum-v1",
    learning_starts=1000,
    seed=0,
    policy_kwargs=dict(net_arch=dict(pi=[64], qf=[128, 128]), n_atoms=51),
)
model.learn(5000)
print(f"BRCSAC Pendulum 5000 steps: {evaluate_policy(model, gym.make('Pendulum-v1'), n_eval_episodes=10)[0]:.0f}", flush=True)
