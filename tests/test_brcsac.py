import os

import gymnasium as gym
import numpy as np
import pytest
import torch as th
from conftest import TINY_POLICY
from envs import TargetEnv
from stable_baselines3 import SAC
from stable_baselines3.common.env_util import make_vec_env
from stable_baselines3.common.logger import Logger, configure
from stable_baselines3.common.torch_layers import NatureCNN

import sb3_brc
from sb3_brc import BRCSAC, MultiTaskVecEnv, ReturnNormalization
from sb3_brc.common.distributional import categorical_projection


def tiny_model(env=None, **kwargs):
    kwargs = dict(learning_starts=50, batch_size=32, policy_kwargs=TINY_POLICY, seed=0) | kwargs
    return BRCSAC("MlpPolicy", env if env is not None else TargetEnv(), **kwargs)


def test_package_version():
    assert sb3_brc.__version__.count(".") == 2


def test_brc_defaults():
    model = BRCSAC("MlpPolicy", "Pendulum-v1", policy_kwargs=dict(net_arch=[16]))
    assert isinstance(model, SAC)
    assert (model.learning_starts, model.batch_size, model.buffer_size) == (5000, 256, 1_000_000)
    assert (model.gamma, model.tau, model.gradient_steps, model.train_freq.frequency) == (0.99, 0.005, 2, 1)
    assert model.target_entropy == -0.5  # -|A|/2 with |A| = 1
    assert th.exp(model.log_ent_coef).item() == pytest.approx(0.1)
    assert model.ent_coef_optimizer.defaults["betas"] == (0.5, 0.999)
    assert model.ent_coef_optimizer.defaults["lr"] == 3e-4
    assert isinstance(model.return_normalizer, sb3_brc.ReturnNormalizer)
    # every default stays overridable
    model = BRCSAC(
        "MlpPolicy",
        "Pendulum-v1",
        batch_size=64,
        learning_starts=10,
        ent_coef=0.2,
        target_entropy=-3.0,
        normalize_rewards=False,
        policy_kwargs=dict(net_arch=[16]),
    )
    assert (model.batch_size, model.learning_starts, model.target_entropy, model.return_normalizer) == (64, 10, -3.0, None)
    assert model.log_ent_coef is None and model.ent_coef_tensor.item() == pytest.approx(0.2)


def test_critic_loss_matches_step_by_step_reference():
    model = tiny_model()
    model.learn(80)
    data = model.replay_buffer.sample(16)
    ent_coef = model._current_ent_coef()
    rewards = data.rewards * 0.7
    th.manual_seed(1)
    loss, _ = model._critic_loss(data, rewards, ent_coef)
    # the same computation spelled out, with the slow projection of test_distributional
    from test_distributional import brute_force_projection

    th.manual_seed(1)
    with th.no_grad():
        next_actions, next_log_prob = model.actor.action_log_prob(data.next_observations)
        p1, p2 = th.softmax(model.critic_target(data.next_observations, next_actions), -1).unbind(1)
        next_probs = (p1 + p2) / 2
        z = model.critic.support
        atoms = rewards + model.gamma * (1 - data.dones) * (z - ent_coef * next_log_prob[:, None])
        target = th.tensor(brute_force_projection(next_probs.double().numpy(), atoms.double().numpy(), z.double().numpy()))
        logits = model.critic(data.observations, data.actions).double()
        expected = sum(-(target * th.log_softmax(logits[:, k], -1)).sum(-1).mean() for k in range(2))
    assert loss.item() == pytest.approx(expected.item(), rel=1e-5)
    th.testing.assert_close(target.float(), categorical_projection(next_probs, atoms, z), atol=1e-6, rtol=0)


def test_train_updates_in_brc_order():
    model = tiny_model(gradient_steps=1)
    model.learn(60)
    critic_before = [p.detach().clone() for p in model.critic.parameters()]
    target_before = [p.detach().clone() for p in model.critic_target.parameters()]
    actor_before = [p.detach().clone() for p in model.actor.parameters()]
    alpha_before = model.log_ent_coef.detach().clone()
    model.train(gradient_steps=1, batch_size=32)
    for p, old in zip(model.critic.parameters(), critic_before, strict=True):
        assert not th.equal(p, old)
    # Polyak every step, from the freshly updated critic: target = (1 - tau) old_target + tau new_critic
    for target, old, critic in zip(model.critic_target.parameters(), target_before, model.critic.parameters(), strict=True):
        th.testing.assert_close(target, (1 - model.tau) * old + model.tau * critic)
    assert any(not th.equal(p, old) for p, old in zip(model.actor.parameters(), actor_before, strict=True))
    assert not th.equal(model.log_ent_coef, alpha_before)
    assert model._n_updates == 10 + 1  # learn(60) after learning_starts=50, then one more


def test_temperature_moves_towards_target_entropy():
    # entropy above target -> alpha must shrink (loss alpha * (H - H*)); below target -> grow
    model = tiny_model(target_entropy=-100.0)
    model.learn(70)
    assert th.exp(model.log_ent_coef).item() < 0.1
    model = tiny_model(target_entropy=100.0)
    model.learn(70)
    assert th.exp(model.log_ent_coef).item() > 0.1


def test_logger_keys_and_tensorboard(tmp_path):
    model = tiny_model(tensorboard_log=str(tmp_path))
    records = {}

    class Capture(Logger):
        def record(self, key, value, exclude=None):
            records[key] = value
            super().record(key, value, exclude)

    model.learn(90, log_interval=1)
    assert any(f.startswith("events") for _, _, files in os.walk(tmp_path) for f in files)
    model.set_logger(Capture(folder=None, output_formats=[]))
    model.learn(30, reset_num_timesteps=False)
    for key in [
        "train/actor_loss",
        "train/critic_loss",
        "train/ent_coef",
        "train/ent_coef_loss",
        "train/q_mean",
        "train/critic_entropy",
        "train/reward_scale",
        "train/learning_rate",
    ]:
        assert key in records, key
        assert np.isfinite(records[key])
    assert records["train/reward_scale"] > 0  # episodes of 20 steps have finished


def test_progress_bar_and_callbacks_run():
    seen = []

    def callback(_locals, _globals):
        seen.append(_locals["self"].num_timesteps)
        return True

    tiny_model().learn(60, callback=callback, progress_bar=True)
    assert seen[-1] == 60


def test_normaliser_uses_raw_returns_and_multiple_envs():
    env = make_vec_env(TargetEnv, n_envs=2, seed=0)
    model = tiny_model(env)
    model.learn(100)
    normalizer = model.return_normalizer
    assert normalizer.episodes[0] == 4  # 100 transitions = 2 envs x 50 steps, 20-step episodes
    assert 0 < normalizer.max_abs_return[0] < np.inf


class ConstantRewardEnv(gym.Env):
    """Reward 1 every step; terminates at step ``terminate_at``."""

    observation_space = gym.spaces.Box(-1, 1, (2,), np.float32)
    action_space = gym.spaces.Box(-1, 1, (1,), np.float32)

    def __init__(self, terminate_at: int):
        self.terminate_at = terminate_at

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.t = 0
        return np.zeros(2, np.float32), {}

    def step(self, action):
        self.t += 1
        return np.full(2, self.t / 10, np.float32), 1.0, self.t >= self.terminate_at, False, {}


@pytest.mark.parametrize("multi_task", [False, True])
def test_episode_that_terminates_at_its_time_limit_is_terminal(multi_task):
    # A deliberate difference from the reference, which reads a step that is both a termination and the time limit
    # as a truncation (its masks bootstrap there, its normaliser adds mean(r) / (1 - gamma)). The MDP ended: nothing
    # follows a termination, whatever the clock says. SB3 reads it the same way (TimeLimit.truncated is
    # `truncated and not terminated`), so the normaliser and the target's mask agree with the replay buffer.
    def make():
        return gym.wrappers.TimeLimit(ConstantRewardEnv(terminate_at=3), max_episode_steps=3)

    env = MultiTaskVecEnv([make, make], task_names=["a", "b"]) if multi_task else make()
    model = tiny_model(env, learning_starts=1000)
    model.learn(6 * (2 if multi_task else 1))
    no_bootstrap = 1 + 0.99 + 0.99**2
    np.testing.assert_allclose(model.return_normalizer.max_abs_return, no_bootstrap, rtol=1e-12)
    buffer = model.replay_buffer
    assert buffer.dones[:6].any(axis=1).tolist() == [False, False, True] * 2  # the target's mask: 1 - dones
    assert not buffer.timeouts[:6].any()  # ...and no time-out cancels it
    data = buffer.sample(64)
    next_obs = data.next_observations["observation"] if multi_task else data.next_observations
    np.testing.assert_array_equal(data.dones.numpy()[:, 0], np.isclose(next_obs.numpy()[:, 0], 0.3))  # sampled too


def test_configured_callback_and_disabled_normalisation():
    model = tiny_model(normalize_rewards=ReturnNormalization(entropy_term="per_task"))
    assert model.return_normalizer.entropy_term == "per_task"
    model.learn(70)
    assert model.return_normalizer.task_entropy[0] != 0.0
    model = tiny_model(normalize_rewards=False)
    model.learn(70)
    assert th.equal(model.reward_scale(), th.ones(1))


def test_save_load_round_trip(tmp_path):
    model = tiny_model()
    model.learn(120)
    path = tmp_path / "brc"
    model.save(path)
    assert (tmp_path / "brc.zip").exists() and os.listdir(tmp_path) == ["brc.zip"]  # no temp file left behind
    loaded = BRCSAC.load(path, env=TargetEnv())
    obs = np.random.default_rng(0).normal(size=(10, 3)).astype(np.float32)
    np.testing.assert_array_equal(model.predict(obs, deterministic=True)[0], loaded.predict(obs, deterministic=True)[0])
    np.testing.assert_array_equal(loaded.return_normalizer.max_returns, model.return_normalizer.max_returns)
    np.testing.assert_array_equal(loaded.return_normalizer.episodes, model.return_normalizer.episodes)
    assert th.equal(loaded.log_ent_coef, model.log_ent_coef)
    for optim in ["actor", "critic"]:
        state, loaded_state = getattr(model, optim).optimizer.state_dict(), getattr(loaded, optim).optimizer.state_dict()
        for key, value in state["state"].items():
            assert th.equal(value["exp_avg"], loaded_state["state"][key]["exp_avg"])
    assert loaded.ent_coef_optimizer.state_dict()["param_groups"][0]["betas"] == (0.5, 0.999)
    assert (
        loaded.ent_coef_optimizer.state_dict()["state"][0]["exp_avg"]
        == model.ent_coef_optimizer.state_dict()["state"][0]["exp_avg"]
    )
    assert loaded.policy.critic.n_atoms == 11 and loaded.target_entropy == model.target_entropy
    loaded.learn(40, reset_num_timesteps=False)  # training goes on


def test_save_overwrites_atomically(tmp_path):
    model = tiny_model()
    path = tmp_path / "brc.zip"
    model.save(path)
    before = path.read_bytes()

    class Boom(Exception):
        pass

    def exploding_save(*args, **kwargs):
        raise Boom

    original = SAC.save
    SAC.save = exploding_save
    try:
        with pytest.raises(Boom):
            model.save(path)
    finally:
        SAC.save = original
    assert path.read_bytes() == before and os.listdir(tmp_path) == ["brc.zip"]


def test_multi_input_policy():
    env = gym.wrappers.TransformObservation(
        TargetEnv(),
        lambda obs: {"height": obs[:1], "rest": obs[1:]},
        gym.spaces.Dict(
            {
                "height": gym.spaces.Box(-np.inf, np.inf, (1,), np.float32),
                "rest": gym.spaces.Box(-np.inf, np.inf, (2,), np.float32),
            }
        ),
    )
    model = BRCSAC("MultiInputPolicy", env, learning_starts=30, batch_size=16, policy_kwargs=TINY_POLICY)
    model.learn(50)
    action, _ = model.predict(env.observation_space.sample())
    assert action.shape == (2,)


def test_configure_logger_roundtrip(tmp_path):
    model = tiny_model()
    model.set_logger(configure(str(tmp_path), ["csv"]))
    model.learn(80, log_interval=1)
    header = (tmp_path / "progress.csv").read_text().splitlines()[0]
    assert "train/q_mean" in header and "train/reward_scale" in header


def test_sb3_conformance_frozen_target_and_collect_only():
    # tau=0: a frozen target (SB3's batch-norm tests use it); gradient_steps=0: collect without training
    model = tiny_model(tau=0.0, learning_starts=20)
    target = [p.detach().clone() for p in model.critic_target.parameters()]
    model.learn(60)
    assert model._n_updates > 0
    assert all(th.equal(p, q) for p, q in zip(target, model.critic_target.parameters(), strict=True))
    model = tiny_model(gradient_steps=0, learning_starts=20)
    model.learn(60)
    assert model._n_updates == 0 and model.replay_buffer.size() == 60


def test_cnn_policy_for_pixel_control():
    class Pixels(gym.Env):
        observation_space = gym.spaces.Box(0, 255, (3, 36, 36), np.uint8)
        action_space = gym.spaces.Box(-1, 1, (2,), np.float32)

        def reset(self, *, seed=None, options=None):
            super().reset(seed=seed)
            self.t = 0
            return self.observation_space.sample(), {}

        def step(self, action):
            self.t += 1
            return self.observation_space.sample(), -float(np.abs(action).sum()), False, self.t >= 10, {}

    model = BRCSAC("CnnPolicy", Pixels(), learning_starts=20, batch_size=8, policy_kwargs=TINY_POLICY, seed=0)
    assert isinstance(model.critic.features_extractor, NatureCNN) and isinstance(model.actor.features_extractor, NatureCNN)
    model.learn(40)
    action, _ = model.predict(Pixels().observation_space.sample(), deterministic=True)
    assert action.shape == (2,) and model._n_updates > 0


class BatchNormExtractor(th.nn.Module):
    """A features extractor with BatchNorm running statistics (as SB3's target update copies them)."""

    def __init__(self, observation_space, features_dim: int = 4):
        super().__init__()
        self.features_dim = features_dim
        self.net = th.nn.Sequential(th.nn.Linear(observation_space.shape[0], features_dim), th.nn.BatchNorm1d(features_dim))

    def forward(self, observations):
        return self.net(observations)


@pytest.mark.parametrize("algo_class", [SAC, BRCSAC])
def test_target_copies_batch_norm_statistics_at_each_target_update_as_sac(algo_class):
    # tau=0: the target's weights never move, but SAC copies the critic's BatchNorm running statistics into it
    policy_kwargs = dict(features_extractor_class=BatchNormExtractor, share_features_extractor=False)
    if algo_class is BRCSAC:
        policy_kwargs.update(TINY_POLICY)
    model = algo_class("MlpPolicy", TargetEnv(), learning_starts=20, batch_size=16, tau=0.0, policy_kwargs=policy_kwargs,
                       seed=0)  # fmt: skip
    weights = [p.clone() for p in model.critic_target.parameters()]
    model.learn(40)
    stats = [b for name, b in model.critic.named_buffers() if "running_" in name]
    target_stats = [b for name, b in model.critic_target.named_buffers() if "running_" in name]
    assert stats and not th.equal(stats[0], th.zeros_like(stats[0]))  # trained: the statistics moved
    for online, target in zip(stats, target_stats, strict=True):
        th.testing.assert_close(target, online)
    for before, after in zip(weights, model.critic_target.parameters(), strict=True):
        th.testing.assert_close(after, before)
