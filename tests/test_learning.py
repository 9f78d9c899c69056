"""Learning checks: BRCSAC must clearly beat a random policy, not merely run."""

import gymnasium as gym
import numpy as np
import pytest
from stable_baselines3.common.evaluation import evaluate_policy

from sb3_brc import BRCSAC


def random_return(env_id: str, episodes: int = 10) -> float:
    env = gym.make(env_id)
    returns = []
    for episode in range(episodes):
        env.reset(seed=1000 + episode)
        total, done = 0.0, False
        while not done:
            _, reward, terminated, truncated, _ = env.step(env.action_space.sample())
            total += float(reward)
            done = terminated or truncated
        returns.append(total)
    return float(np.mean(returns))


@pytest.mark.slow  # BRCSAC's learning in the default run: tests/test_multitask.py (InvertedPendulum among its tasks)
def test_learns_inverted_pendulum():
    model = BRCSAC(
        "MlpPolicy",
        "InvertedPendulum-v5",
        learning_starts=300,
        batch_size=64,
        seed=0,
        policy_kwargs=dict(net_arch=dict(pi=[32], qf=[64, 64]), n_atoms=51),
    )
    model.learn(1500)
    mean_return, _ = evaluate_policy(model, gym.make("InvertedPendulum-v5"), n_eval_episodes=10)
    assert mean_return > 5 * random_return("InvertedPendulum-v5")  # random balances ~5 steps


@pytest.mark.slow
def test_beats_random_on_pendulum():
    model = BRCSAC(
        "MlpPolicy",
        "Pendulum-v1",
        learning_starts=1000,
        seed=0,
        policy_kwargs=dict(net_arch=dict(pi=[64], qf=[128, 128]), n_atoms=51),
    )
    model.learn(5000)
    mean_return, _ = evaluate_policy(model, gym.make("Pendulum-v1"), n_eval_episodes=10)
    random = random_return("Pendulum-v1")  # about -1200
    assert mean_return > random / 2 and mean_return > -600, (random, mean_return)
