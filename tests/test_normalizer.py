import numpy as np
import pytest
import torch as th

from sb3_brc.common.normalizer import ReturnNormalizer


def brute_force_max_abs_return(episodes, gamma):
    """Slow reference: every return-to-go as an explicit discounted sum, with the truncation bootstrap."""
    best = -np.inf
    for rewards, truncated in episodes:
        big_t = len(rewards)
        bootstrap = np.mean(rewards) / (1 - gamma) if truncated else 0.0
        for t in range(big_t):
            value = sum(gamma ** (k - t) * rewards[k] for k in range(t, big_t)) + gamma ** (big_t - t) * bootstrap
            best = max(best, abs(value))
    return best


def feed(normalizer, episodes_per_env, task_of_env):
    """Interleave the episodes of several envs step by step, as a VecEnv would."""
    queues = [[(r, i == len(rew) - 1, trunc) for rew, trunc in eps for i, r in enumerate(rew)] for eps in episodes_per_env]
    assert len({len(q) for q in queues}) == 1, "test setup: every env must run the same number of steps"
    for rows in zip(*queues, strict=True):
        normalizer.update(
            np.array([r for r, _, _ in rows]),
            np.array([d for _, d, _ in rows]),
            np.array([t for _, _, t in rows]),
            np.array(task_of_env),
        )


@pytest.mark.parametrize("gamma", [0.9, 0.99])
def test_statistics_match_brute_force(gamma):
    rng = np.random.default_rng(0)
    # 3 envs, tasks [0, 1, 1]; each env runs episodes of random length, some truncated, 60 steps in all
    episodes_per_env = []
    for env in range(3):
        episodes, left = [], 60
        while left > 0:
            length = min(left, int(rng.integers(1, 20)))
            episodes.append((list(rng.normal(env - 1, 3, size=length)), bool(rng.integers(2))))
            left -= length
        episodes_per_env.append(episodes)
    normalizer = ReturnNormalizer(num_tasks=2, gamma=gamma)
    feed(normalizer, episodes_per_env, [0, 1, 1])
    expected = [
        brute_force_max_abs_return(episodes_per_env[0], gamma),
        brute_force_max_abs_return(episodes_per_env[1] + episodes_per_env[2], gamma),
    ]
    np.testing.assert_allclose(normalizer.max_abs_return, expected, rtol=1e-10)
    assert list(normalizer.episodes) == [len(episodes_per_env[0]), len(episodes_per_env[1]) + len(episodes_per_env[2])]


def test_reward_scale_formula_and_no_scale_before_first_episode():
    normalizer = ReturnNormalizer(num_tasks=2, gamma=0.99)
    alpha, action_dim, v_max = 0.1, 6, 10.0
    target_entropy = -action_dim / 2
    scale = normalizer.reward_scale(th.tensor([alpha]), target_entropy, v_max)
    assert th.equal(scale, th.zeros(2))  # G = inf before any episode: rewards scale to 0, as in the reference
    feed(normalizer, [[([1.0, 2.0, -3.0], False)], [([0.5, 0.5, 0.5], True)]], [0, 1])
    g = normalizer.max_abs_return
    expected = v_max / (g + alpha * action_dim / (4 * (1 - 0.99)))
    th.testing.assert_close(
        normalizer.reward_scale(th.tensor([alpha]), target_entropy, v_max), th.tensor(expected, dtype=th.float32)
    )


def test_all_zero_rewards_and_wide_reward_scales_stay_finite():
    for reward_scale in [0.0, 1e-3, 1.0, 1e4]:
        normalizer = ReturnNormalizer(num_tasks=1, gamma=0.99)
        rewards = reward_scale * np.random.default_rng(0).uniform(0, 1, size=1000)
        feed(normalizer, [[(list(rewards), True)]], [0])
        scale = normalizer.reward_scale(th.tensor([0.1]), -3.0, 10.0)
        assert th.isfinite(scale).all()
        # the normalised discounted return fits the support [-v_max, v_max]
        assert normalizer.max_abs_return[0] * scale.item() <= 10.0 + 1e-6
    # even with alpha = 0 (only the fixed term keeps the reference's denominator positive)
    assert th.isfinite(normalizer.reward_scale(th.tensor([0.0]), -3.0, 10.0)).all()


def test_per_task_entropy_variant():
    normalizer = ReturnNormalizer(num_tasks=2, gamma=0.99, entropy_term="per_task")
    feed(normalizer, [[([1.0] * 5, False)], [([1.0] * 5, False)]], [0, 1])
    normalizer.update_entropy(th.tensor([0, 0, 1]), th.tensor([50.0, 50.0, -4.0]))
    assert normalizer.task_entropy.tolist() == [50.0, -4.0]
    scale = normalizer.reward_scale(th.tensor([0.1]), -2.0, 10.0)
    g = normalizer.max_abs_return
    fixed = 0.1 * 2.0 / (2 * 0.01)
    expected = [10.0 / (g[0] + 0.1 * 50.0 / 0.01), 10.0 / (g[1] + fixed)]  # task 1: floored at the fixed term
    th.testing.assert_close(scale, th.tensor(expected, dtype=th.float32))


def test_errors_and_state():
    normalizer = ReturnNormalizer(num_tasks=2)
    with pytest.raises(ValueError, match="Non-finite reward"):
        normalizer.update(np.array([np.nan, 1.0]), np.array([False, False]), np.array([False, False]), np.array([0, 1]))
    with pytest.raises(ValueError, match="outside"):
        normalizer.update(np.array([0.0]), np.array([False]), np.array([False]), np.array([2]))
    with pytest.raises(ValueError, match="entropy_term"):
        ReturnNormalizer(entropy_term="nope")
    with pytest.raises(ValueError, match="gamma"):
        ReturnNormalizer(gamma=1.0)
    # unfinished episodes are not part of the saved state
    normalizer.update(np.array([1.0, 1.0]), np.array([False, False]), np.array([False, False]), np.array([0, 1]))
    assert normalizer.__getstate__()["_episode_rewards"] == {}
