import numpy as np
import pytest
import torch as th
from conftest import TINY_DQN, TINY_POLICY, RecordingLogger
from envs import TargetEnv

from sb3_brc import BRCDQN, BRCSAC, DiscreteMultiTaskVecEnv, MultiTaskVecEnv, add_tasks, new_task_env
from sb3_brc.common.buffers import ReplayWithPrevious


def pretrained(steps=120):
    env = MultiTaskVecEnv(
        [lambda: TargetEnv(obs_dim=3, act_dim=2), lambda: TargetEnv(obs_dim=4, act_dim=1)], task_names=["a", "b"], seed=0
    )
    model = BRCSAC("MlpPolicy", env, learning_starts=60, batch_size=32, policy_kwargs=TINY_POLICY, seed=0)
    model.learn(steps)
    return model, env


def new_tasks(model, names=("c",)):
    return new_task_env(model, [lambda: TargetEnv(obs_dim=2, act_dim=2) for _ in names], task_names=list(names), seed=1)


def test_adding_tasks_keeps_old_task_outputs_exactly():
    model, env = pretrained()
    obs = {key: th.as_tensor(value) for key, value in env.reset().items()}
    actions = th.rand(2, 2) * 2 - 1
    with th.no_grad():
        before = (model.actor(obs, deterministic=True), model.critic(obs, actions), model.critic_target(obs, actions))
    old_rows = model.critic.task_embedding.embedding.weight.detach().clone()
    add_tasks(model, new_tasks(model, ["c", "d"]))
    with th.no_grad():
        after = (model.actor(obs, deterministic=True), model.critic(obs, actions), model.critic_target(obs, actions))
    for b, a in zip(before, after, strict=True):
        assert th.equal(b, a)
    rows = model.critic.task_embedding.embedding.weight.detach()
    assert rows.shape == (4, 32) and th.equal(rows[:2], old_rows)
    th.testing.assert_close(rows[2], old_rows.mean(0))  # the documented rule: mean of the existing rows
    assert th.equal(model.critic_target.task_embedding.embedding.weight[2:], rows[2:])
    assert model.num_tasks == 4 and model.task_names == ["a", "b", "c", "d"]
    assert model.return_normalizer.num_tasks == 4 and model.learning_starts == 10_000


@pytest.mark.parametrize("keep_replay", [False, True])
def test_new_embeddings_train_and_replay_choice(keep_replay):
    model, _ = pretrained()
    old_buffer = model.replay_buffer
    add_tasks(model, new_tasks(model), keep_replay=keep_replay, learning_starts=30)
    before = model.critic.task_embedding.embedding.weight.detach().clone()
    logger = RecordingLogger()
    model.set_logger(logger)
    model.learn(80, log_interval=1)
    assert logger.records["time/steps_per_task"] == 80  # the one new task's steps (the model has 3 tasks)
    after = model.critic.task_embedding.embedding.weight.detach()
    assert not th.equal(after[2], before[2])  # the new task's row is trained
    ids = model.task_ids(model.replay_buffer.sample(300).observations)
    if keep_replay:
        assert isinstance(model.replay_buffer, ReplayWithPrevious) and model.replay_buffer.previous is old_buffer
        assert set(ids.tolist()) == {0, 1, 2}
        assert 0.5 < (ids < 2).float().mean() < 0.85  # 2 old tasks of 3: about 2/3 of each batch
    else:
        assert set(ids.tolist()) == {2}


def test_replay_with_previous_moves_both_buffers(tmp_path):
    # SB3's load_replay_buffer sets the loaded buffer's device: both inner buffers must follow (a run resumed on
    # another device)
    model, _ = pretrained()
    add_tasks(model, new_tasks(model), keep_replay=True, learning_starts=30)
    model.save_replay_buffer(tmp_path / "replay")
    model.replay_buffer = None
    model.load_replay_buffer(tmp_path / "replay")
    buffer = model.replay_buffer
    assert isinstance(buffer, ReplayWithPrevious) and buffer.device == model.device
    buffer.device = th.device("meta")
    assert buffer.new.device == buffer.previous.device == th.device("meta")


@pytest.mark.parametrize("reload", [False, True])
def test_freeze_parts(tmp_path, reload):
    model, _ = pretrained()
    env = new_tasks(model)
    add_tasks(model, env, freeze=["actor", "critic"], learning_starts=30)
    assert model.frozen_parts == ("actor", "critic")
    if reload:  # frozen parts stay frozen in a saved and loaded model (requires_grad is not in a state dict)
        model.save(tmp_path / "frozen")
        model = BRCSAC.load(tmp_path / "frozen", env=env)
    actor = [p.detach().clone() for p in model.actor.parameters()]
    body = [p.detach().clone() for p in model.critic.q_networks.parameters()]
    emb = model.critic.task_embedding.embedding.weight.detach().clone()
    model.learn(80)
    assert all(th.equal(p, q) for p, q in zip(actor, model.actor.parameters(), strict=True))
    assert all(th.equal(p, q) for p, q in zip(body, model.critic.q_networks.parameters(), strict=True))
    assert not th.equal(emb, model.critic.task_embedding.embedding.weight)


def test_transfer_after_load_and_save_load_round_trip(tmp_path):
    model, _ = pretrained()
    model.save(tmp_path / "pre")
    loaded = BRCSAC.load(tmp_path / "pre")
    env = new_tasks(loaded)
    add_tasks(loaded, env, learning_starts=30)
    loaded.learn(60)
    loaded.save(tmp_path / "post")
    task_c = MultiTaskVecEnv(
        [lambda: TargetEnv(obs_dim=2, act_dim=2)], task_names=["c"], first_task_id=2, obs_dim=4, act_dim=2
    )
    again = BRCSAC.load(tmp_path / "post", env=task_c)
    obs = env.reset()
    np.testing.assert_array_equal(loaded.predict(obs, deterministic=True)[0], again.predict(obs, deterministic=True)[0])
    assert again.task_names == ["a", "b", "c"]


def test_transfer_errors():
    model, _ = pretrained()
    with pytest.raises(ValueError, match="ids start at 0, not at 2"):
        add_tasks(model, MultiTaskVecEnv([lambda: TargetEnv(obs_dim=3, act_dim=2)], task_names=["c"], obs_dim=4, act_dim=2))
    with pytest.raises(ValueError, match="padded spaces"):
        add_tasks(model, MultiTaskVecEnv([lambda: TargetEnv(obs_dim=3, act_dim=2)], task_names=["c"], first_task_id=2))
    with pytest.raises(ValueError, match="exceeds the padded size 4"):
        new_task_env(model, [lambda: TargetEnv(obs_dim=6, act_dim=1)])
    with pytest.raises(ValueError, match="already in the model"):
        add_tasks(model, new_tasks(model, ["a"]))
    with pytest.raises(ValueError, match="freeze takes"):
        add_tasks(model, new_tasks(model), freeze=["encoder"])
    single = BRCSAC("MlpPolicy", TargetEnv(), policy_kwargs=TINY_POLICY)
    with pytest.raises(ValueError, match="needs a multi-task model"):
        add_tasks(single, new_tasks(model))
    with pytest.raises(ValueError, match="continues a trained model's tasks"):
        BRCSAC("MlpPolicy", new_tasks(model), policy_kwargs=TINY_POLICY)


def test_brcdqn_transfer_keeps_old_tasks_and_trains_the_new_one():
    env = DiscreteMultiTaskVecEnv(["CartPole-v1", "Acrobot-v1"], seed=0)
    model = BRCDQN("MlpPolicy", env, learning_starts=100, policy_kwargs=TINY_DQN, seed=0)
    model.learn(300)
    obs = {key: th.as_tensor(value) for key, value in env.reset().items()}
    with th.no_grad():
        before = model.q_net(obs), model.q_net_target(obs)
    new_env = new_task_env(model, ["MountainCar-v0"], seed=1)
    assert new_env.first_task_id == 2 and new_env.observation_space == model.observation_space
    add_tasks(model, new_env, learning_starts=20)
    with th.no_grad():
        after = model.q_net(obs), model.q_net_target(obs)
    assert all(th.equal(b, a) for b, a in zip(before, after, strict=True))  # old tasks' outputs exactly kept
    assert model.task_names == ["CartPole-v1", "Acrobot-v1", "MountainCar-v0"] and model.num_tasks == 3
    assert model.policy.action_masks.tolist()[2] == [True, True, True]  # MountainCar's 3 actions
    row = model.q_net.task_embedding.embedding.weight[2].detach().clone()
    model.learn(120)
    assert not th.equal(model.q_net.task_embedding.embedding.weight[2], row)  # the new row trains
    assert set(model.task_ids(model.replay_buffer.sample(64).observations).tolist()) == {2}
    with pytest.raises(ValueError, match="freeze takes"):
        add_tasks(model, new_task_env(model, ["CartPole-v1"], task_names=["cartpole-2"]), freeze=["actor"])
