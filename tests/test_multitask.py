import os

import gymnasium as gym
import numpy as np
import pytest
import torch as th
from conftest import TINY_POLICY, RecordingLogger
from envs import RecordActionEnv, TargetEnv
from stable_baselines3.common.vec_env import SubprocVecEnv

from sb3_brc import BRCSAC, MultiTaskVecEnv, make_suite
from sb3_brc.cli import main as cli_main
from sb3_brc.common.torch_layers import TaskEmbedding
from sb3_brc.tools.evaluation import MultiTaskEvalCallback, evaluate_tasks


def two_tasks(scale_b: float = 1.0) -> MultiTaskVecEnv:
    def task_b():
        env = TargetEnv(obs_dim=5, act_dim=1)
        return _ScaleReward(env, scale_b)

    return MultiTaskVecEnv([lambda: TargetEnv(obs_dim=3, act_dim=2), task_b], task_names=["a", "b"], seed=0)


class _ScaleReward(gym.RewardWrapper):
    def __init__(self, env, scale):
        super().__init__(env)
        self.scale = scale

    def reward(self, reward):
        return self.scale * reward


def tiny_mt_model(env, **kwargs):
    kwargs = dict(learning_starts=60, batch_size=32, policy_kwargs=TINY_POLICY, seed=0) | kwargs
    return BRCSAC("MlpPolicy", env, **kwargs)


def test_padding_tagging_and_terminal_observation_heterogeneous():
    env = MultiTaskVecEnv(["dm_control/cartpole-balance-v0", "Pendulum-v1", "InvertedPendulum-v5"], seed=0)
    assert env.num_tasks == 3 and env.task_names == ["cartpole-balance", "Pendulum-v1", "InvertedPendulum-v5"]
    assert env.layout.observation_shapes == ((5,), (3,), (4,)) and env.layout.action_sizes == (1, 1, 1)
    assert env.observation_space["observation"].shape == (5,) and env.observation_space["observation"].dtype == np.float32
    assert env.observation_space["task_id"].dtype == np.int64 and env.action_space.shape == (1,)
    obs = env.reset()
    assert obs["observation"].dtype == np.float32 and obs["task_id"].dtype == np.int64
    np.testing.assert_array_equal(obs["task_id"].ravel(), [0, 1, 2])
    assert np.all(obs["observation"][1, 3:5] == 0) and np.all(obs["observation"][2, 4:5] == 0)  # zero padding
    seen = {"terminated": False, "truncated": False}
    for _ in range(200):
        obs, _, dones, infos = env.step(np.ones((3, 1), np.float32))  # pushes the inverted pendulum over
        np.testing.assert_array_equal(obs["task_id"].ravel(), [0, 1, 2])
        for task, (done, info) in enumerate(zip(dones, infos, strict=True)):
            assert info["task_id"] == task and info["task_name"] == env.task_names[task]
            if done:
                terminal = info["terminal_observation"]
                assert terminal["observation"].shape == (5,) and terminal["task_id"].tolist() == [task]
                assert np.all(terminal["observation"][env.layout.observation_shapes[task][0] :] == 0)
                assert "episode" in info
                if task == 1:
                    assert info["TimeLimit.truncated"] is True  # Pendulum's 200-step time limit
                    seen["truncated"] = True
                if task == 2:
                    assert info["TimeLimit.truncated"] is False  # InvertedPendulum fell over: termination
                    seen["terminated"] = True
    assert seen == {"terminated": True, "truncated": True}


def test_action_slicing_rescaling_dict_flattening_and_success():
    recorder = RecordActionEnv()
    env = MultiTaskVecEnv([lambda: recorder, lambda: TargetEnv(obs_dim=4, act_dim=3)], task_names=["rec", "target"])
    assert env.layout.action_sizes == (2, 3) and env.layout.observation_shapes == ((3,), (4,))
    obs = env.reset()
    np.testing.assert_allclose(obs["observation"][0], [0.1, 0.2, 0.3, 0.0], rtol=1e-6)  # Dict flattened, padded
    assert obs["task_id"].tolist() == [[0], [1]]
    env.step(np.array([[-1.0, 1.0, 0.5], [0.0, 0.0, 0.0]], np.float32))
    np.testing.assert_allclose(recorder.actions[-1], [0.0, 5.0])  # own 2 entries, rescaled to [0,10] x [-5,5]
    env.step(np.array([[0.0, -0.5, 0.9], [0.0, 0.0, 0.0]], np.float32))
    np.testing.assert_allclose(recorder.actions[-1], [5.0, -2.5])
    for _ in range(3):
        _, _, dones, infos = env.step(np.zeros((2, 3), np.float32))
    assert dones[0] and infos[0]["is_success"] is True  # success at step 2 counts for the whole episode
    assert infos[0]["TimeLimit.truncated"] is False


def test_subproc_vec_env():
    # The DMC task's namespace is registered by importing shimmy, which a fresh worker process has not done
    env = MultiTaskVecEnv(["Pendulum-v1", "dm_control/cartpole-balance-v0"], vec_env_cls=SubprocVecEnv, seed=0)
    obs = env.reset()
    assert obs["observation"].shape == (2, 5)
    obs, _, _, _ = env.step(np.zeros((2, 1), np.float32))
    np.testing.assert_array_equal(obs["task_id"].ravel(), [0, 1])
    env.close()


class CountedCloses(TargetEnv):
    closed = 0  # closes in this process

    def close(self):
        type(self).closed += 1
        super().close()


@pytest.mark.parametrize("vec_env_cls", [None, SubprocVecEnv])
def test_probe_envs_are_closed_when_refused_or_not_kept(vec_env_cls):
    # The env built per task to read its spaces: closed when the task list is refused, and after it served the
    # layout when subprocesses build their own
    def make():
        return CountedCloses(obs_dim=3, act_dim=1)

    fork = dict(vec_env_kwargs=dict(start_method="fork")) if vec_env_cls else {}
    CountedCloses.closed = 0
    with pytest.raises(ValueError, match="exceeds the padded size 2"):
        MultiTaskVecEnv([make, make], obs_dim=2, vec_env_cls=vec_env_cls, **fork)
    assert CountedCloses.closed == 2
    env = MultiTaskVecEnv([make, make], vec_env_cls=vec_env_cls, **fork)
    assert CountedCloses.closed == (4 if vec_env_cls else 2)  # in-process the probes are the sub-envs
    env.close()
    assert CountedCloses.closed == 4  # and the sub-envs (in-process, or in the workers, not counted here) at close


def test_task_embedding_owned_and_trained_by_critic_only():
    env = two_tasks()
    model = tiny_mt_model(env)
    assert model.num_tasks == 2 and model.batch_size == 32
    embedding = model.critic.task_embedding
    assert isinstance(embedding, TaskEmbedding) and embedding.num_tasks == 2
    assert model.actor._task_embedding is embedding  # the actor reads the critic's rows
    actor_params = {id(p) for group in model.actor.optimizer.param_groups for p in group["params"]}
    critic_params = {id(p) for group in model.critic.optimizer.param_groups for p in group["params"]}
    assert id(embedding.embedding.weight) not in actor_params
    assert id(embedding.embedding.weight) in critic_params
    assert not any("task_embedding" in name for name, _ in model.actor.named_parameters())
    # the state dict holds it once per critic (online and target), never under the actor
    keys = [k for k in model.policy.state_dict() if "task_embedding" in k]
    assert keys == ["critic.task_embedding.embedding.weight", "critic_target.task_embedding.embedding.weight"]
    model.learn(80)
    # In an update the critic loss trains the embedding and the actor loss leaves it untouched: one gradient reaches it
    gradients = []
    hook = embedding.embedding.weight.register_hook(gradients.append)
    model.train(gradient_steps=1, batch_size=8)
    hook.remove()
    assert len(gradients) == 1
    data = model.replay_buffer.sample(8)
    model.critic.optimizer.zero_grad()
    critic_loss, _ = model._critic_loss(data, data.rewards, model._current_ent_coef())
    critic_loss.backward()
    assert embedding.embedding.weight.grad.abs().sum() > 0
    # Polyak-copied into the target, which has its own rows
    before = embedding.embedding.weight.detach().clone()
    target_before = model.critic_target.task_embedding.embedding.weight.detach().clone()
    model.train(gradient_steps=1, batch_size=16)
    assert not th.equal(embedding.embedding.weight, before)
    th.testing.assert_close(
        model.critic_target.task_embedding.embedding.weight,
        (1 - model.tau) * target_before + model.tau * embedding.embedding.weight,
    )


def test_actor_input_uses_the_critic_embedding():
    model = tiny_mt_model(two_tasks())
    obs = {"observation": th.tensor([[0.1, 0.2, 0.3, 0.4, 0.5]]), "task_id": th.tensor([[0]])}
    before = model.actor(obs, deterministic=True)
    with th.no_grad():
        model.critic.task_embedding.embedding.weight[0].mul_(-1)
    assert not th.allclose(before, model.actor(obs, deterministic=True))


def test_no_embedding_single_task():
    model = tiny_mt_model(TargetEnv())
    assert model.critic.task_embedding is None and model.num_tasks == 1


def test_per_task_normaliser_and_logger_keys():
    env = two_tasks(scale_b=100.0)
    model = tiny_mt_model(env)
    logger = RecordingLogger()
    model.set_logger(logger)
    model.learn(200, log_interval=1)
    records = logger.records
    g = model.return_normalizer.max_abs_return
    assert 30 < g[1] / g[0] < 300  # task b's rewards are 100x larger (different obs sizes change the sums)
    scale = model.reward_scale()
    assert scale[0] > scale[1] > 0
    for key in [
        "rollout/a/ep_rew_mean",
        "rollout/b/ep_rew_mean",
        "train/a/reward_scale",
        "train/b/reward_scale",
        "time/steps_per_task",
    ]:
        assert key in records, key
    assert records["time/steps_per_task"] == 100


def test_batch_and_warmup_defaults_scale_with_tasks():
    model = BRCSAC("MlpPolicy", two_tasks(), policy_kwargs=TINY_POLICY)
    assert (model.batch_size, model.learning_starts, model.buffer_size) == (1024, 10_000, 2_000_000)
    assert model.target_entropy == -1.0  # -(padded |A| = 2) / 2


def test_save_load_multitask_and_mismatched_envs(tmp_path):
    env = two_tasks()
    model = tiny_mt_model(env)
    model.learn(100)
    model.save(tmp_path / "mt")
    loaded = BRCSAC.load(tmp_path / "mt", env=two_tasks())
    obs = env.reset()
    np.testing.assert_array_equal(model.predict(obs, deterministic=True)[0], loaded.predict(obs, deterministic=True)[0])
    assert loaded.task_names == ["a", "b"] and loaded.num_tasks == 2
    th.testing.assert_close(loaded.critic.task_embedding.embedding.weight, model.critic.task_embedding.embedding.weight)
    np.testing.assert_array_equal(loaded.return_normalizer.max_returns, model.return_normalizer.max_returns)
    renamed = MultiTaskVecEnv(
        [lambda: TargetEnv(obs_dim=3, act_dim=2), lambda: TargetEnv(obs_dim=5, act_dim=1)], task_names=["a", "c"]
    )
    with pytest.raises(ValueError, match="differ from the model"):
        BRCSAC.load(tmp_path / "mt", env=renamed)
    three = MultiTaskVecEnv(
        [
            lambda: TargetEnv(obs_dim=3, act_dim=2),
            lambda: TargetEnv(obs_dim=5, act_dim=1),
            lambda: TargetEnv(obs_dim=2, act_dim=1),
        ]
    )
    with pytest.raises(ValueError):
        BRCSAC.load(tmp_path / "mt", env=three)
    with pytest.raises(ValueError, match="differ from the model"):
        loaded.set_env(renamed)
    loaded.learn(40, reset_num_timesteps=False)


def test_evaluation_per_task_and_callback_csv(tmp_path):
    env, eval_env = two_tasks(), two_tasks()
    model = tiny_mt_model(env)
    results = evaluate_tasks(model, eval_env, n_eval_episodes=3)
    assert [r["task"] for r in results] == ["a", "b"] and all(r["episodes"] == 3 for r in results)
    assert all(r["success_rate"] is None and r["score"] is None for r in results)
    random_results = evaluate_tasks(None, eval_env, n_eval_episodes=2)
    assert len(random_results) == 2
    callback = MultiTaskEvalCallback(eval_env, eval_freq=40, n_eval_episodes=2, log_path=str(tmp_path / "eval.csv"))
    model.learn(160, callback=callback)
    lines = (tmp_path / "eval.csv").read_text().splitlines()
    assert lines[0].startswith("timesteps,steps_per_task,task") and len(lines) == 1 + 2 * 2


def test_scores_for_dmc_and_metaworld_kinds():
    env = MultiTaskVecEnv(["dm_control/cartpole-balance-v0", "reach-v3"], seed=0)
    assert env.layout.score_kinds == ("dmc", "metaworld")
    assert env.normalized_score(0, 500.0, None) == 0.5
    assert env.normalized_score(1, 123.0, 0.7) == 0.7
    assert env.layout.observation_shapes == ((5,), (39,)) and env.layout.action_sizes == (1, 4)


@pytest.mark.slow
def test_mt10_suite_layout():
    env = make_suite("mt10", seed=0)
    assert env.task_names[:3] == ["reach-v3", "push-v3", "pick-place-v3"] and env.num_tasks == 10
    assert env.observation_space["observation"].shape == (39,) and env.action_space.shape == (4,)


def test_multitask_learning_beats_random_on_every_task():
    # A MuJoCo task and a toy task with different spaces, 3000 env steps each (about 30 s on one core). The toy
    # task learns slowly beside InvertedPendulum under BRC's return normalisation: at 2000 steps per task one seed in
    # four was still at its random level (benchmarks/RESULTS.md, "a task that learns, then falls back")
    def make(seed):
        tasks = ["InvertedPendulum-v5", lambda: TargetEnv(obs_dim=2, act_dim=1)]
        return MultiTaskVecEnv(tasks, task_names=["pendulum", "toy"], seed=seed)

    env, eval_env = make(0), make(42)
    random_returns = [r["mean_return"] for r in evaluate_tasks(None, eval_env, 10, seed=0)]
    policy_kwargs = dict(net_arch=dict(pi=[32], qf=[64, 64]), n_atoms=51)
    model = tiny_mt_model(env, learning_starts=2 * 300, batch_size=64, policy_kwargs=policy_kwargs)
    model.learn(2 * 3000)
    trained = [r["mean_return"] for r in evaluate_tasks(model, eval_env, 10)]
    assert trained[0] > 5 * random_returns[0], (random_returns, trained)  # balances far longer than random (~5)
    assert trained[1] > random_returns[1], (random_returns, trained)  # nearer the target than random


def test_cli_train_and_eval(tmp_path, capsys):
    out = tmp_path / "run"
    cli_main(
        [
            "train",
            "--tasks",
            "Pendulum-v1",
            "dm_control/cartpole-balance-v0",
            "--steps-per-task",
            "300",
            "--learning-starts-per-task",
            "100",
            "--eval-episodes",
            "1",
            "--eval-freq",
            "150",
            "--out",
            str(out),
            "--batch-size",
            "32",
            "--no-progress",
            "--threads",
            "1",
        ]
    )
    for name in [
        "model.zip",
        "eval.csv",
        "report.md",
        "curves.png",
        "scores.png",
        "embeddings.png",
        "config.json",
        "random_baseline.json",
    ]:
        assert (out / name).exists(), name
    report = (out / "report.md").read_text()
    assert "| Pendulum-v1 |" in report and "| cartpole-balance |" in report
    assert "What this run cannot show: one seed" in report and "300 env steps per task, not the paper's 1,000,000" in report
    assert any(f.startswith("events") for _, _, files in os.walk(out / "tb") for f in files)
    cli_main(["eval", str(out), "--episodes", "1"])
    printed = capsys.readouterr().out
    assert "cartpole-balance" in printed and "Report:" in printed
    with pytest.raises(SystemExit):
        cli_main(["train", "--suite", "nope", "--steps-per-task", "10", "--out", str(tmp_path / "x")])
    capsys.readouterr()
    for flags in (
        ["--steps-per-task", "0"],
        ["--steps-per-task", "10", "--eval-freq", "-3"],
        ["--steps-per-task", "10", "--checkpoint-freq", "0"],
    ):
        with pytest.raises(SystemExit) as exit_info:
            cli_main(["train", "--tasks", "Pendulum-v1", "--out", str(tmp_path / "y"), *flags])
        assert exit_info.value.code == 2 and f"{flags[-2]} must be >= 1, got {flags[-1]}" in capsys.readouterr().err
    assert not (tmp_path / "y").exists()  # refused before anything was written


def test_multitask_progress_bar_counts_steps_per_task():
    from sb3_brc.common.callbacks import TaskProgressBarCallback

    model = tiny_mt_model(two_tasks())
    bars = []
    original = TaskProgressBarCallback._on_training_end

    def keep(self):
        bars.append(self.pbar)
        original(self)

    TaskProgressBarCallback._on_training_end = keep
    try:
        model.learn(100, progress_bar=True)
    finally:
        TaskProgressBarCallback._on_training_end = original
    assert bars[0].total == 50 and bars[0].n == 50 and bars[0].unit == "steps/task"


@pytest.mark.parametrize("kind", ["brcsac", "exported", "brcdqn"])
def test_one_task_of_a_model_on_its_own_plain_env(kind, tmp_path):
    # A model trained on several tasks acts on one of them through as_task_of: the same observations, the same
    # actions and the same steps as inside its multi-task env, and SB3's evaluate_policy runs it
    from stable_baselines3.common.evaluation import evaluate_policy
    from stable_baselines3.common.monitor import Monitor

    from sb3_brc import BRCDQN, DiscreteMultiTaskVecEnv, as_task_of
    from sb3_brc.tools.export import export_policy, load_exported_policy

    if kind == "brcdqn":
        task, tasks = "Acrobot-v1", ["CartPole-v1", "Acrobot-v1"]
        venv = DiscreteMultiTaskVecEnv(tasks, seed=3)  # a fresh env (training reset its seeds' effect)
        model = BRCDQN("MlpPolicy", DiscreteMultiTaskVecEnv(tasks), policy_kwargs=dict(net_arch=[16, 16], n_atoms=11), seed=0)
    else:
        task, tasks = "InvertedPendulum-v5", ["Pendulum-v1", "InvertedPendulum-v5"]
        venv = MultiTaskVecEnv(tasks, seed=3)  # a fresh env (training reset its seeds' effect)
        model = tiny_mt_model(MultiTaskVecEnv(tasks), learning_starts=20)
        model.learn(60)  # other weights than at construction
    policy = model
    if kind == "exported":
        export_policy(model, str(tmp_path))
        policy = load_exported_policy(str(tmp_path))
    env = as_task_of(gym.make(task), policy, task)
    assert env.observation_space == model.observation_space and env.action_space == model.action_space
    tagged = venv.reset()
    obs, _ = env.reset(seed=3 + 1)  # the vector env seeds task i with seed + i
    np.testing.assert_array_equal(obs["observation"], tagged["observation"][1])
    assert obs["task_id"].tolist() == [1]
    for _ in range(5):
        action = policy.predict(obs, deterministic=True)[0]
        actions = model.predict(tagged, deterministic=True)[0]
        np.testing.assert_allclose(action, actions[1], rtol=1e-6)
        obs, reward, terminated, _, _ = env.step(action)
        tagged, rewards, dones, _ = venv.step(actions)
        assert reward == pytest.approx(rewards[1]) and terminated == dones[1]
        if terminated:
            break
        np.testing.assert_allclose(obs["observation"], tagged["observation"][1], rtol=1e-6)
    mean_return, _ = evaluate_policy(policy, Monitor(env), n_eval_episodes=1)
    assert np.isfinite(mean_return)


@pytest.mark.parametrize("kind", ["brcsac", "brcdqn"])
def test_multi_input_policy_on_a_multi_task_env_is_the_same_policy(kind):
    # SB3 users name MultiInputPolicy for Dict observations; a multi-task env's Dict is the task encoding
    from sb3_brc import BRCDQN, DiscreteMultiTaskVecEnv

    if kind == "brcdqn":
        algo, env, policy_kwargs = BRCDQN, DiscreteMultiTaskVecEnv(["CartPole-v1", "Acrobot-v1"]), dict(net_arch=[16, 16])
    else:
        algo, env, policy_kwargs = BRCSAC, two_tasks(), TINY_POLICY
    models = [algo(name, env, policy_kwargs=policy_kwargs, seed=0) for name in ("MultiInputPolicy", "MlpPolicy")]
    assert type(models[0].policy) is type(models[1].policy) is algo.policy_aliases["MlpPolicy"]
    for one, other in zip(models[0].policy.state_dict().values(), models[1].policy.state_dict().values(), strict=True):
        th.testing.assert_close(one, other)  # same seed, same networks
    obs = env.reset()
    np.testing.assert_array_equal(models[0].predict(obs, deterministic=True)[0], models[1].predict(obs, deterministic=True)[0])
