"""Multi-game Atari: preprocessing, union action space and masks, human-normalised scores, a BRCDQN smoke run."""

import numpy as np
import pytest
from stable_baselines3.common.atari_wrappers import EpisodicLifeEnv

pytest.importorskip("ale_py")

from sb3_brc import DiscreteMultiTaskVecEnv, make_suite
from sb3_brc.dqn import BRCDQN
from sb3_brc.envs.atari import FULL_ACTION_MEANINGS, make_atari
from sb3_brc.envs.scores import ATARI_SCORES, atari_game, human_normalized_score
from sb3_brc.envs.suites import make_atari_suite
from sb3_brc.envs.tasks import task_factory
from sb3_brc.tools.evaluation import evaluate_tasks


def test_preprocessing_and_life_loss_only_in_training():
    train, whole = make_atari("Breakout", training=True), make_atari("Breakout", training=False)
    for env in (train, whole):
        obs, _ = env.reset(seed=0)
        assert obs.shape == (4, 84, 84) and obs.dtype == np.uint8
    lengths = {}
    for name, env in (("train", train), ("whole", whole)):
        env.reset(seed=0)
        steps, done = 0, False
        while not done:
            _, _, terminated, truncated, info = env.step(1)  # FIRE: Breakout needs it to launch the ball
            done, steps = terminated or truncated, steps + 1
        lengths[name] = steps
        # Monitor sits inside the life-loss wrapper: its episode statistic is a whole game only
        assert ("episode" in info) == (name == "whole")
    assert lengths["train"] < lengths["whole"]  # training episodes end at the first lost life


def test_union_action_space_and_masks_by_name():
    env = make_suite("atari-2", seed=0)
    assert env.action_space.n == len(FULL_ACTION_MEANINGS) == 18
    masks = env.action_masks()
    assert masks.shape == (2, 18)
    pong, breakout = env.task_names.index("Pong"), env.task_names.index("Breakout")
    legal = {
        name: [FULL_ACTION_MEANINGS[a] for a in np.flatnonzero(masks[i])]
        for name, i in (("Pong", pong), ("Breakout", breakout))
    }
    assert legal["Breakout"] == ["NOOP", "FIRE", "RIGHT", "LEFT"]
    assert set(legal["Pong"]) == {"NOOP", "FIRE", "RIGHT", "LEFT", "RIGHTFIRE", "LEFTFIRE"}
    obs = env.reset()
    assert obs["observation"].shape == (2, 4, 84, 84) and obs["task_id"].ravel().tolist() == [0, 1]
    for _ in range(20):
        actions = env.sample_actions()
        assert masks[np.arange(2), actions].all()
        env.step(actions)
    with pytest.raises(ValueError, match="illegal"):
        env.step(np.array([0, FULL_ACTION_MEANINGS.index("RIGHTFIRE")]))  # legal in Pong, not in Breakout


def test_human_normalized_score():
    random, human = ATARI_SCORES["Pong"]
    assert human_normalized_score("Pong", random) == 0.0
    assert human_normalized_score("Pong", human) == pytest.approx(1.0)
    assert human_normalized_score("Breakout", 30.5) == pytest.approx(1.0)
    with pytest.raises(ValueError, match="No random/human scores"):
        human_normalized_score("NotAGame", 1.0)


def test_smoke_run_on_two_games(tmp_path):
    env = make_suite("atari-2", seed=0)
    model = BRCDQN(
        "CnnPolicy",
        env,
        learning_starts=100,
        batch_size=8,
        buffer_size=1000,
        policy_kwargs=dict(net_arch=[32, 32], n_atoms=11),
        seed=0,
    )
    assert model.num_tasks == 2 and model.augment
    model.learn(300)
    assert model._n_updates == 100
    assert (model.reward_scale() > 0).all() or model.return_normalizer.episodes.min() == 0
    model.save(tmp_path / "atari")
    loaded = BRCDQN.load(tmp_path / "atari", env=env)
    short_games = make_atari_suite(["Pong", "Breakout"], training=False, seed=1, max_frames=1000)
    rows = evaluate_tasks(loaded, short_games, n_eval_episodes=1)
    assert [row["task"] for row in rows] == ["Pong", "Breakout"]
    for row in rows:
        assert row["score"] == pytest.approx(human_normalized_score(row["task"], row["mean_return"]))


def test_single_game_with_a_minimal_action_set():
    # One game is one task, yet its legal actions can be a subset of the union space: Freeway's are 3 of 18
    env = make_suite("atari:Freeway", seed=0)
    assert env.num_tasks == 1 and env.layout.legal_actions == ((0, 2, 5),)  # NOOP, UP, DOWN
    kwargs = dict(learning_starts=20, batch_size=4, buffer_size=100, policy_kwargs=dict(net_arch=[16]), seed=0)
    model = BRCDQN("CnnPolicy", env, **kwargs)
    assert model.policy.action_masks.tolist() == [[a in (0, 2, 5) for a in range(env.action_space.n)]]
    model.learn(60)  # the env rejects an illegal action: warm-up, exploration and greedy ones all stay legal
    assert model._n_updates == 40
    env.close()


def test_ale_ids_are_tasks():
    _, name, kind = task_factory("ALE/Pong-v5")
    assert (name, kind) == ("Pong", "atari")  # the game's name: its human-normalised score applies
    # One canonical name for every spelling (the score table's), versions stripped
    assert task_factory("ALE/MsPacman-v5")[1] == "MsPacman" and atari_game("ALE/mspacman-v5") == "MsPacman"
    env = DiscreteMultiTaskVecEnv(["ALE/Pong-v5", "ALE/Breakout-v5"], seed=0)
    assert env.task_names == ["Pong", "Breakout"]
    assert env.layout.legal_actions[1] == tuple(FULL_ACTION_MEANINGS.index(m) for m in ["NOOP", "FIRE", "RIGHT", "LEFT"])
    assert env.normalized_score(0, ATARI_SCORES["Pong"][1], None) == pytest.approx(1.0)
    env.close()


def test_atari_games_suite_by_name():
    from sb3_brc.bench.grid import resolve_tasks
    from sb3_brc.envs.suites import find_suite

    assert find_suite("atari:boxing, Freeway").tasks == ["Boxing", "Freeway"]  # canonical game names
    assert find_suite("atari-2") is not None and find_suite("HalfCheetah-v5") is None
    with pytest.raises(ValueError, match=r"unknown Atari game.*'Boxng'.*Did you mean Boxing"):
        find_suite("atari:Boxng")
    with pytest.raises(ValueError, match="names a game twice"):
        find_suite("atari:Pong,pong")
    with pytest.raises(ValueError, match="unknown Atari game"):
        make_suite("atari:")
    # One game: preprocessed as the Atari suites are; training envs end at a lost life, evaluation envs play whole games
    train_env, eval_env = make_suite("atari:Breakout", seed=0), make_suite("atari:Breakout", seed=0, training=False)
    assert isinstance(train_env, DiscreteMultiTaskVecEnv) and train_env.task_names == ["Breakout"]
    assert train_env.observation_space["observation"].shape == (4, 84, 84)
    assert train_env.env_is_wrapped(EpisodicLifeEnv) == [True] and eval_env.env_is_wrapped(EpisodicLifeEnv) == [False]
    train_env.close()
    eval_env.close()
    tasks = resolve_tasks("atari:Pong,Breakout")  # the harness: one multi-game run of those games
    assert (tasks.suite, tasks.task_names) == ("atari:Pong,Breakout", ("Pong", "Breakout"))
    # A single-task algorithm's runs: each game alone, preprocessed the same way (its one-game suite)
    assert [(run.label, run.suite) for run in tasks.split()] == [("Pong", "atari:Pong"), ("Breakout", "atari:Breakout")]
