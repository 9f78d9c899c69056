"""BRCDQN: n-step replay against a brute-force walk, augmentation, action masks, save/load, learning on CartPole."""

import pickle
from unittest import mock

import gymnasium as gym
import numpy as np
import pytest
import torch as th
from conftest import TINY_DQN
from envs import FramesEnv
from gymnasium import spaces
from stable_baselines3.common.buffers import ReplayBuffer
from stable_baselines3.common.evaluation import evaluate_policy
from stable_baselines3.common.vec_env import DummyVecEnv

from sb3_brc import BRCDQN, ImpalaCNN
from sb3_brc.common.augmentation import random_shift
from sb3_brc.common.buffers import CompactNStepReplayBuffer
from sb3_brc.envs.vec_env import DiscreteMultiTaskVecEnv
from sb3_brc.tools.evaluation import evaluate_tasks

GAMMA = 0.9


def _two_discrete_tasks(seed: int = 0) -> DiscreteMultiTaskVecEnv:
    # CartPole: 2 actions, obs 4; Acrobot: 3 actions, obs 6 -> union of 3 actions, CartPole's action 2 is illegal
    return DiscreteMultiTaskVecEnv(["CartPole-v1", "Acrobot-v1"], seed=seed)


def _fill(buffer: CompactNStepReplayBuffer, n_adds: int, rng: np.random.Generator) -> list[list[dict]]:
    """Random transitions with terminations and truncations; returns each env's full history."""
    n_envs = buffer.n_envs
    history: list[list[dict]] = [[] for _ in range(n_envs)]
    obs = rng.normal(size=(n_envs, 3)).astype(np.float32)
    for _ in range(n_adds):
        next_obs = rng.normal(size=(n_envs, 3)).astype(np.float32)
        rewards = rng.normal(size=n_envs).astype(np.float32)
        dones = rng.random(n_envs) < 0.2
        timeouts = dones & (rng.random(n_envs) < 0.5)
        actions = rng.integers(0, 4, size=n_envs)
        infos = [{"TimeLimit.truncated": bool(t)} for t in timeouts]
        buffer.add(obs, next_obs, actions, rewards, dones, infos)
        for e in range(n_envs):
            history[e].append(
                dict(obs=obs[e], next_obs=next_obs[e], reward=float(rewards[e]), done=dones[e], timeout=timeouts[e])
            )
        # After an episode end the env resets: the next transition starts from a fresh observation
        reset_obs = rng.normal(size=(n_envs, 3)).astype(np.float32)
        obs = np.where(dones[:, None], reset_obs, next_obs)
    return history


def _brute_force(history: list[dict], t: int, n_steps: int) -> tuple[float, np.ndarray, float, float]:
    """Walk forward from transition ``t``: sum rewards until an episode end, the newest transition or n steps."""
    total, k = 0.0, 0
    while True:
        step = history[t + k]
        total += GAMMA**k * step["reward"]
        if step["done"] or t + k == len(history) - 1 or k == n_steps - 1:
            break
        k += 1
    last = history[t + k]
    terminated = float(last["done"] and not last["timeout"])
    return total, last["next_obs"], terminated, GAMMA ** (k + 1)


@pytest.mark.parametrize("n_adds", [30, 95])  # 95 adds into 40 slots: wrapped around twice
@pytest.mark.parametrize("n_envs", [1, 2])
def test_n_step_samples_match_brute_force(n_adds, n_envs):
    n_steps, slots = 5, 40
    obs_space = spaces.Box(-np.inf, np.inf, (3,), np.float32)
    buffer = CompactNStepReplayBuffer(
        slots * n_envs, obs_space, spaces.Discrete(4), device="cpu", n_envs=n_envs, n_steps=n_steps, gamma=GAMMA
    )
    history = _fill(buffer, n_adds, np.random.default_rng(n_adds + n_envs))
    oldest = max(0, n_adds - slots + 1)  # the oldest slot's own observation was overwritten by the newest next_obs
    for t in range(oldest, n_adds):
        batch_inds = np.array([t % slots] * 4)
        np.random.seed(t)
        env_inds = np.random.randint(0, n_envs, size=4)  # the buffer draws the same env indices next
        np.random.seed(t)
        data = buffer._get_samples(batch_inds)
        for row, e in enumerate(env_inds):
            ret, next_obs, terminated, discount = _brute_force(history[e], t, n_steps)
            np.testing.assert_allclose(data.observations[row].numpy(), history[e][t]["obs"])
            np.testing.assert_allclose(data.rewards[row, 0].item(), ret, rtol=1e-5, atol=1e-6)
            np.testing.assert_allclose(data.next_observations[row].numpy(), next_obs)
            assert data.dones[row, 0].item() == terminated
            np.testing.assert_allclose(data.discounts[row, 0].item(), discount, rtol=1e-6)


def test_sample_never_returns_the_overwritten_slot():
    buffer = CompactNStepReplayBuffer(
        10, spaces.Box(-np.inf, np.inf, (1,), np.float32), spaces.Discrete(2), device="cpu", n_steps=3, gamma=GAMMA
    )
    for i in range(25):
        buffer.add(np.array([[i]]), np.array([[i + 1]]), np.array([0]), np.array([1.0]), np.array([False]), [{}])
    observations = buffer.sample(2000).observations.numpy().ravel()
    # Slots hold transitions 15..24; slot 5 (transition 15) lost its observation to transition 24's next one
    assert set(observations.astype(int)) == set(range(16, 25))


def test_buffer_stores_each_frame_stack_once():
    space = spaces.Dict(obs=spaces.Box(0, 255, (4, 84, 84), np.uint8), task_id=spaces.Box(0, 1, (1,), np.float32))
    buffer = CompactNStepReplayBuffer(1000, space, spaces.Discrete(18), device="cpu", n_envs=2, n_steps=10)
    assert buffer.nbytes / 1000 < 4 * 84 * 84 * 1.01 + 64  # about 28 KB per transition, not 2x (obs and next_obs)


@pytest.mark.parametrize("n_adds", [30, 230])  # part filled (saved up to its newest slot), and wrapped (saved whole)
def test_pickled_buffer_keeps_every_transition_and_only_the_used_slots(n_adds):
    slots, n_envs = 200, 2
    space = spaces.Dict(obs=spaces.Box(-np.inf, np.inf, (64,), np.float32), task_id=spaces.Box(0, 9, (1,), np.int64))
    buffer = CompactNStepReplayBuffer(slots * n_envs, space, spaces.Discrete(4), device="cpu", n_envs=n_envs, n_steps=5)
    rng = np.random.default_rng(0)
    for _ in range(n_adds):
        obs = {"obs": rng.normal(size=(n_envs, 64)).astype(np.float32), "task_id": rng.integers(0, 9, (n_envs, 1))}
        next_obs = {"obs": rng.normal(size=(n_envs, 64)).astype(np.float32), "task_id": obs["task_id"]}
        done = rng.random(n_envs) < 0.2
        buffer.add(obs, next_obs, rng.integers(0, 4, n_envs), rng.normal(size=n_envs), done, [{}] * n_envs)
    blob = pickle.dumps(buffer)
    restored = pickle.loads(blob)

    full_bytes = buffer.nbytes - sum(v.nbytes for final in buffer.final_observations.values() for v in final.values())
    if not buffer.full:
        assert len(blob) < full_bytes / 2  # 31 of 200 slots written, not the empty ones
    else:
        assert len(blob) > full_bytes
    assert (restored.pos, restored.full, restored.buffer_size) == (buffer.pos, buffer.full, buffer.buffer_size)
    for name in ("actions", "rewards", "dones", "timeouts"):
        np.testing.assert_array_equal(getattr(restored, name), getattr(buffer, name), err_msg=name)
    for key, storage in buffer.observations.items():
        np.testing.assert_array_equal(restored.observations[key], storage, err_msg=key)
    assert restored.final_observations.keys() == buffer.final_observations.keys()
    np.random.seed(3)
    expected = buffer.sample(64)
    np.random.seed(3)
    got = restored.sample(64)
    for name in ("actions", "rewards", "dones", "discounts"):
        np.testing.assert_array_equal(getattr(got, name).numpy(), getattr(expected, name).numpy(), err_msg=name)
    np.testing.assert_array_equal(got.next_observations["obs"].numpy(), expected.next_observations["obs"].numpy())
    # It keeps filling as the original would
    restored.add(obs, next_obs, np.zeros(n_envs), np.ones(n_envs), np.zeros(n_envs, bool), [{}] * n_envs)
    assert restored.actions.shape[0] == slots and restored.pos == (buffer.pos + 1) % slots


def test_buffer_pickled_whole_by_an_older_version_still_loads():
    buffer = CompactNStepReplayBuffer(100, spaces.Box(-1, 1, (3,), np.float32), spaces.Discrete(2), device="cpu")
    for i in range(5):
        buffer.add(
            np.full((1, 3), i / 10), np.full((1, 3), (i + 1) / 10), np.array([1]), np.array([1.0]), np.array([False]), [{}]
        )
    old_state = buffer.__dict__.copy()  # what pickle stored before buffers were trimmed: every slot
    restored = CompactNStepReplayBuffer.__new__(CompactNStepReplayBuffer)
    restored.__setstate__(old_state)
    assert restored.observations[""].shape == (100, 1, 3) and restored.pos == 5
    np.testing.assert_array_equal(restored.observations[""], buffer.observations[""])


def test_random_shift_shapes_offsets_and_independence():
    th.manual_seed(0)
    image = th.arange(2 * 12 * 12, dtype=th.float32).view(1, 2, 12, 12).expand(64, -1, -1, -1)
    shifted = random_shift(image.to(th.uint8), pad=2)
    assert shifted.shape == image.shape and shifted.dtype == th.float32
    padded = th.nn.functional.pad(image.to(th.uint8).float(), (2, 2, 2, 2), mode="replicate")
    offsets = set()
    for b in range(64):
        # Each sample is one crop of the replicate-padded image, the same offset for all its channels
        matches = [
            (dy, dx) for dy in range(5) for dx in range(5) if th.equal(shifted[b], padded[b, :, dy : dy + 12, dx : dx + 12])
        ]
        assert len(matches) >= 1
        offsets.add(matches[0])
    assert len(offsets) > 10  # offsets differ between the samples of one batch
    assert th.equal(random_shift(image, pad=0), image)


def test_masked_actions_never_chosen_even_when_their_q_is_highest():
    env = _two_discrete_tasks()
    model = BRCDQN("MlpPolicy", env, learning_starts=0, policy_kwargs=TINY_DQN, seed=0)
    # Make action 2 (illegal for CartPole, task 0) the best action everywhere: all its mass on v_max
    head = model.q_net.head.head
    with th.no_grad():
        head.bias.view(3, 11)[2, -1] = 100.0
    obs = {"observation": th.randn(256, 6), "task_id": th.tensor([[0], [1]]).repeat(128, 1)}
    for epsilon in (0.0, 0.3, 1.0):
        actions = model.policy.act(obs, epsilon).numpy()
        task0 = actions[obs["task_id"][:, 0].numpy() == 0]
        assert set(task0) <= {0, 1}
        if epsilon == 0.0:
            assert (actions[obs["task_id"][:, 0].numpy() == 1] == 2).all()  # legal for Acrobot: chosen
        if epsilon == 1.0:
            assert set(task0) == {0, 1}  # uniform over the legal actions
    # The target's next action is masked too: CartPole's target uses its best *legal* action
    data = type("Data", (), {})()
    data.next_observations = {"observation": th.randn(8, 6), "task_id": th.zeros(8, 1, dtype=th.long)}
    data.discounts, data.dones = th.full((8, 1), 0.9), th.zeros(8, 1)
    target = model._target_distribution(data, data.next_observations, th.zeros(8, 1))
    with th.no_grad():
        logits = model.q_net_target(data.next_observations)
        q = th.softmax(logits, -1) @ model.q_net.support
        best_legal = q[:, :2].argmax(1)
        expected = th.softmax(logits[th.arange(8), best_legal], -1)
    from sb3_brc.common.distributional import categorical_projection

    expected = categorical_projection(expected, 0.9 * model.q_net.support.expand(8, -1), model.q_net.support)
    th.testing.assert_close(target, expected)


def test_training_on_the_union_space_only_takes_legal_actions():
    # UnionActions raises on an illegal action: warm-up, epsilon-greedy and greedy phases all run here
    env = _two_discrete_tasks()
    model = BRCDQN("MlpPolicy", env, learning_starts=100, exploration_decay_steps=50, policy_kwargs=TINY_DQN, seed=0)
    model.learn(600)
    assert model.exploration_rate == pytest.approx(0.01)
    assert model._n_updates > 0
    assert model.policy.action_masks.tolist() == [[True, True, False], [True, True, True]]


def test_epsilon_schedule_counts_steps_per_task():
    model = BRCDQN(
        "MlpPolicy", _two_discrete_tasks(), learning_starts=200, exploration_decay_steps=1000, policy_kwargs=TINY_DQN
    )
    model._logger = __import__("stable_baselines3.common.logger", fromlist=["configure"]).configure(None, [""])
    for timesteps, expected in ((100, 1.0), (200, 1.0), (200 + 2 * 500, 0.505), (200 + 2 * 1000, 0.01), (10_000, 0.01)):
        model.num_timesteps = timesteps
        model._on_step()
        assert model.exploration_rate == pytest.approx(expected)


def test_deterministic_predict_is_greedy_and_evaluations_use_the_evaluation_epsilon():
    # SB3's meaning: deterministic=True is greedy. The Atari protocol's epsilon belongs to evaluations
    env = DiscreteMultiTaskVecEnv(["CartPole-v1", "Acrobot-v1"], seed=0)
    model = BRCDQN("MlpPolicy", env, learning_starts=0, eval_exploration_rate=1.0, policy_kwargs=TINY_DQN, seed=0)
    obs = {key: np.tile(value, (100,) + (1,) * (value.ndim - 1)) for key, value in env.reset().items()}
    greedy = model.predict(obs, deterministic=True)[0]  # rows alternate: CartPole, Acrobot, CartPole, ...
    assert len(set(greedy[0::2])) == 1 and len(set(greedy[1::2])) == 1  # one action per task: no exploration
    evaluated = model.evaluation_predict(obs)  # epsilon 1: uniform over each task's legal actions
    assert set(evaluated[0::2]) == {0, 1} and set(evaluated[1::2]) == {0, 1, 2}
    with mock.patch.object(model, "evaluation_predict", wraps=model.evaluation_predict) as protocol:
        evaluate_tasks(model, env, 1)
    assert protocol.called


def test_save_load_round_trip(tmp_path):
    env = _two_discrete_tasks()
    model = BRCDQN("MlpPolicy", env, learning_starts=50, policy_kwargs=TINY_DQN, seed=0)
    model.learn(300)
    model.save(tmp_path / "model")
    loaded = BRCDQN.load(tmp_path / "model", env=env)
    obs = env.reset()
    for key, value in model.policy.state_dict().items():
        th.testing.assert_close(loaded.policy.state_dict()[key], value)
    assert loaded.predict(obs, deterministic=True)[0].tolist() == model.predict(obs, deterministic=True)[0].tolist()
    np.testing.assert_array_equal(loaded.return_normalizer.max_returns, model.return_normalizer.max_returns)
    saved_moments = model.policy.optimizer.state_dict()["state"]
    loaded_moments = loaded.policy.optimizer.state_dict()["state"]
    th.testing.assert_close(loaded_moments[0]["exp_avg"], saved_moments[0]["exp_avg"])
    assert loaded.policy.action_masks.tolist() == model.policy.action_masks.tolist()
    assert loaded.task_names == ["CartPole-v1", "Acrobot-v1"]
    loaded.learn(100)  # keeps training
    # Another task set with the same spaces is refused
    other = DiscreteMultiTaskVecEnv(["Acrobot-v1", "CartPole-v1"])
    with pytest.raises(ValueError, match="differ from the model"):
        BRCDQN.load(tmp_path / "model", env=other)


def test_clear_errors():
    with pytest.raises(TypeError, match="Discrete action space"):
        BRCDQN("MlpPolicy", "Pendulum-v1")
    model = BRCDQN("MlpPolicy", _two_discrete_tasks(), policy_kwargs=TINY_DQN)
    with pytest.raises(ValueError, match="outside"):
        model.predict({"observation": np.zeros((1, 6), np.float32), "task_id": np.array([[5]])})
    with pytest.raises(ValueError, match="no policy entropy"):
        from sb3_brc import ReturnNormalization

        BRCDQN("MlpPolicy", "CartPole-v1", normalize_rewards=ReturnNormalization(entropy_term="per_task"))
    with pytest.raises(ValueError, match="n_atoms must be an integer >= 2"):
        BRCDQN("MlpPolicy", "CartPole-v1", policy_kwargs=dict(n_atoms=1))
    with pytest.raises(ValueError, match="illegal"):
        env = _two_discrete_tasks()
        env.reset()
        env.step(np.array([2, 0]))


def test_impala_encoder_on_images():
    model = BRCDQN(
        "CnnPolicy",
        DummyVecEnv([lambda: FramesEnv((4, 36, 36))]),
        learning_starts=20,
        batch_size=4,
        policy_kwargs=dict(TINY_DQN, features_extractor_class=ImpalaCNN, features_extractor_kwargs=dict(features_dim=32)),
    )
    assert model.augment
    model.learn(60)
    assert model._n_updates == 40


@pytest.mark.slow  # BRCDQN's learning in the default run: the two-task test below (CartPole among its tasks)
def test_cartpole_learning_beats_random():
    env = gym.make("CartPole-v1")
    model = BRCDQN(
        "MlpPolicy",
        env,
        learning_starts=500,
        exploration_decay_steps=1000,
        policy_kwargs=dict(net_arch=[64, 64], n_atoms=51),
        seed=0,
    )
    model.learn(4000)
    trained, _ = evaluate_policy(model, gym.make("CartPole-v1"), n_eval_episodes=10, deterministic=True, warn=False)
    random_return = 22.0  # uniform random actions average about 22 steps
    assert trained > 5 * random_return


def test_multi_task_learning_on_two_discrete_tasks():
    from sb3_brc.tools.evaluation import evaluate_tasks

    env = _two_discrete_tasks(seed=0)
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
    trained = {row["task"]: row["mean_return"] for row in evaluate_tasks(model, eval_env, n_eval_episodes=10)}
    random = {row["task"]: row["mean_return"] for row in evaluate_tasks(None, eval_env, n_eval_episodes=10, seed=0)}
    assert trained["CartPole-v1"] > 3 * random["CartPole-v1"]  # measured: 171 vs 21
    assert trained["Acrobot-v1"] > random["Acrobot-v1"] + 100  # measured: -248 vs -492 (random rarely swings up)


def test_checkpoint_and_cli_with_discrete_tasks(tmp_path, capsys):
    from sb3_brc.cli import main as cli_main
    from sb3_brc.tools.checkpoint import load_checkpoint, save_checkpoint

    env = _two_discrete_tasks()
    model = BRCDQN("MlpPolicy", env, learning_starts=50, policy_kwargs=TINY_DQN, seed=0)
    model.learn(200)
    save_checkpoint(model, str(tmp_path / "ckpt"))
    restored = load_checkpoint(str(tmp_path / "ckpt"), env)
    assert isinstance(restored, BRCDQN) and restored.num_timesteps == model.num_timesteps
    assert restored.replay_buffer.size() == model.replay_buffer.size()

    out = tmp_path / "run"
    args = ["--tasks", "CartPole-v1", "Acrobot-v1", "--steps-per-task", "150", "--learning-starts-per-task", "50"]
    cli_main(["train", *args, "--eval-episodes", "1", "--out", str(out), "--no-progress", "--threads", "1"])
    assert "Training BRCDQN on 2 task(s)" in capsys.readouterr().out
    assert (out / "report.md").exists() and (out / "embeddings.png").exists()
    cli_main(["eval", str(out), "--episodes", "1"])
    assert "Acrobot-v1" in capsys.readouterr().out


def test_target_shortcut_after_a_hard_copy_gives_the_double_q_target():
    model = BRCDQN("MlpPolicy", _two_discrete_tasks(), learning_starts=20, policy_kwargs=TINY_DQN, seed=0)
    model.learn(60)  # the last call is an update: the online network moved away from the target
    assert not model._target_is_online
    model._on_step()  # what learn() does after each env step: DrQ(eps)'s hard copy
    assert model._target_is_online
    data = model.replay_buffer.sample(32)
    next_obs = data.next_observations
    shortcut = model._target_distribution(data, next_obs, data.rewards)
    model._target_is_online = False
    th.testing.assert_close(model._target_distribution(data, next_obs, data.rewards), shortcut)
    model.train(1, 8)
    assert not model._target_is_online


@pytest.mark.parametrize("replay_buffer_class", [None, ReplayBuffer])
def test_one_step_targets_discount_by_gamma(replay_buffer_class):
    # With n_steps=1, or SB3's own 1-step buffer, samples carry no per-transition discount: the target uses gamma
    model = BRCDQN(
        "MlpPolicy", "CartPole-v1", n_steps=1, replay_buffer_class=replay_buffer_class, learning_starts=20, gamma=0.9,
        policy_kwargs=TINY_DQN, seed=0,
    )  # fmt: skip
    model.learn(60)
    data = model.replay_buffer.sample(16)
    assert data.discounts is None
    explicit = data._replace(discounts=th.full_like(data.rewards, 0.9))
    target = model._target_distribution(data, data.next_observations, data.rewards)
    th.testing.assert_close(target, model._target_distribution(explicit, data.next_observations, data.rewards))
    # A user's buffer class does not take n_steps: SB3's warning says so (BRCDQN's own buffer takes it silently)
    with pytest.warns(UserWarning, match="n_steps=3.* is ignored"):
        BRCDQN("MlpPolicy", "CartPole-v1", n_steps=3, replay_buffer_class=ReplayBuffer, policy_kwargs=TINY_DQN)


@pytest.mark.parametrize("tau", [1.0, 0.3])
def test_target_update_is_a_polyak_step_of_every_parameter(tau):
    model = BRCDQN("MlpPolicy", _two_discrete_tasks(), learning_starts=20, tau=tau, policy_kwargs=TINY_DQN, seed=0)
    model.learn(60)
    online = [p.detach().clone() for p in model.q_net.parameters()]
    before = [p.detach().clone() for p in model.q_net_target.parameters()]
    assert any(not th.equal(a, b) for a, b in zip(online, before, strict=True))  # an update moved the online network
    model._on_step()
    for target, new, old in zip(model.q_net_target.parameters(), online, before, strict=True):
        expected = new if tau == 1.0 else (1 - tau) * old + tau * new
        if tau == 1.0:
            assert th.equal(target, expected)  # a hard copy is exact
        else:
            th.testing.assert_close(target.detach(), expected)


def test_benchmark_harness_runs_brc_dqn(tmp_path):
    from sb3_brc.bench import BenchSettings, run_benchmark

    settings = BenchSettings(steps_per_task=200, eval_every=100, eval_episodes=1, learning_starts=50, size="tiny")
    result = run_benchmark(
        str(tmp_path), ["brc_dqn"], ["CartPole-v1"], [0, 1], settings, reference=None, reps=50, progress=False
    )
    assert sorted(run["status"] for run in result["runs"]) == ["done", "done"]
    assert (tmp_path / "brc_dqn" / "CartPole-v1" / "seed0" / "evaluations.csv").exists()
    assert (tmp_path / "aggregate.md").exists()
