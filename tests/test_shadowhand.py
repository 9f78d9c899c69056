"""ShadowHand: gymnasium-robotics' rotation tasks (``shadowhand``) and the BRC paper's objects (``shadowhand-85``,
``shadowhand-test-29``, from the reference's ``dex_envs``)."""

import importlib.util
import sys

import numpy as np
import pytest
from conftest import TINY_POLICY

from sb3_brc import BRCSAC, MultiTaskVecEnv, make_suite
from sb3_brc.envs.scores import normalized_score
from sb3_brc.envs.shadowhand import (
    HOW_TO_GET_OBJECTS,
    SHADOWHAND_TASKS,
    SHADOWHAND_TEST_OBJECTS,
    SHADOWHAND_TRAIN_OBJECTS,
    available_objects,
)
from sb3_brc.envs.suites import SUITES, describe_suites, make_shadowhand_suite
from sb3_brc.envs.tasks import task_factory
from sb3_brc.tools.evaluation import evaluate_tasks

needs_robotics = pytest.mark.skipif(
    importlib.util.find_spec("gymnasium_robotics") is None, reason="ShadowHand needs the shadowhand extra"
)
needs_dex_envs = pytest.mark.skipif(
    not available_objects(),
    reason="dex_envs (BRC's ShadowHand objects) is not importable: put the reference repository root on PYTHONPATH",
)

# The objects of the reduced dex_envs copy the tests use
TRAIN_VENDORED = ["knife", "elephant", "apple", "scissors"]
TEST_VENDORED = ["dice", "pyramid"]


def test_object_lists_match_the_paper():
    assert len(SHADOWHAND_TRAIN_OBJECTS) == len(set(SHADOWHAND_TRAIN_OBJECTS)) == 85
    assert len(SHADOWHAND_TEST_OBJECTS) == len(set(SHADOWHAND_TEST_OBJECTS)) == 29
    assert not set(SHADOWHAND_TRAIN_OBJECTS) & set(SHADOWHAND_TEST_OBJECTS)
    assert SUITES["shadowhand-85"].tasks == SHADOWHAND_TRAIN_OBJECTS
    assert SUITES["shadowhand-test-29"].tasks == SHADOWHAND_TEST_OBJECTS
    assert SUITES["shadowhand"].tasks == SHADOWHAND_TASKS
    assert all(name in describe_suites() for name in ("shadowhand", "shadowhand-85", "shadowhand-test-29"))


def test_shadowhand_ids_resolve_to_success_rate_tasks():
    # Resolving builds nothing: no optional package needed
    _, name, kind = task_factory("apple-rotate-v1")
    assert (name, kind) == ("apple", "shadowhand")
    _, name, kind = task_factory("HandManipulateEggRotate-v1")
    assert (name, kind) == ("HandManipulateEggRotate-v1", "shadowhand")
    assert normalized_score("shadowhand", "apple", mean_return=-80.0, success_rate=0.3) == 0.3


@needs_robotics
def test_shadowhand_suite_observation_is_observation_and_desired_goal():
    env = make_suite("shadowhand", seed=0)
    assert env.task_names == SHADOWHAND_TASKS
    assert env.layout.observation_shapes == ((68,),) * 5 and env.layout.action_sizes == (20,) * 5
    assert env.layout.score_kinds == ("shadowhand",) * 5
    obs = env.reset()
    for task, sub_env in enumerate(env.venv.envs):
        raw = sub_env.unwrapped._get_obs()
        expected = np.concatenate([raw["observation"], raw["desired_goal"]]).astype(np.float32)
        np.testing.assert_allclose(obs["observation"][task], expected, rtol=1e-6)
    obs, rewards, _, _ = env.step(env.sample_actions())
    assert obs["observation"].shape == (5, 68) and np.isin(rewards, (-1.0, 0.0)).all()
    assert env.normalized_score(0, mean_return=-100.0, success_rate=0.25) == 0.25
    env.close()


@needs_robotics
def test_shadowhand_episodes_last_100_steps_and_report_success():
    env = MultiTaskVecEnv(["HandManipulateBlockRotateZ-v1"], seed=0)
    env.reset()
    for step in range(1, 101):
        _, _, dones, infos = env.step(env.sample_actions())
        assert dones[0] == (step == 100)
    assert infos[0]["TimeLimit.truncated"] and infos[0]["is_success"] in (True, False)
    (row,) = evaluate_tasks(None, env, n_eval_episodes=1, seed=0)
    assert row["score"] == row["success_rate"] is not None
    env.close()


@needs_dex_envs
def test_vendored_training_objects_build_and_the_full_suite_names_the_missing_ones():
    objects = [name for name in SHADOWHAND_TRAIN_OBJECTS if name in available_objects()]
    assert sorted(objects) == sorted(TRAIN_VENDORED) or len(objects) == 85
    env = make_shadowhand_suite(objects, seed=0)
    assert env.task_names == objects and env.layout.observation_shapes == ((68,),) * len(objects)
    assert env.layout.score_kinds == ("shadowhand",) * len(objects)
    env.reset()
    obs, rewards, _, _ = env.step(env.sample_actions())
    assert obs["observation"].shape == (len(objects), 68) and np.isin(rewards, (-1.0, 0.0)).all()
    env.close()
    if len(objects) < 85:
        with pytest.raises(ImportError, match="81 of 85 ShadowHand objects are not available") as error:
            make_suite("shadowhand-85")
        listed = str(error.value).split(": ", 1)[1].split(". ")[0].split(", ")
        assert listed == [name for name in SHADOWHAND_TRAIN_OBJECTS if name not in TRAIN_VENDORED]
        assert HOW_TO_GET_OBJECTS in str(error.value)


@needs_dex_envs
def test_vendored_held_out_objects_build_and_the_full_suite_names_the_missing_ones():
    objects = [name for name in SHADOWHAND_TEST_OBJECTS if name in available_objects()]
    env = make_shadowhand_suite(objects, seed=0)
    assert env.task_names == objects and env.layout.observation_shapes == ((68,),) * len(objects)
    env.close()
    if len(objects) < 29:
        assert objects == TEST_VENDORED
        with pytest.raises(ImportError, match="27 of 29 ShadowHand objects are not available") as error:
            make_suite("shadowhand-test-29")
        assert "rubiks_cube" in str(error.value) and "dice" not in str(error.value).split(". ")[0]


@needs_dex_envs
def test_brcsac_learns_on_two_objects():
    env = MultiTaskVecEnv(["apple-rotate-v1", "dice-rotate-v1"], seed=0)
    assert env.task_names == ["apple", "dice"]
    model = BRCSAC("MlpPolicy", env, learning_starts=100, batch_size=32, gradient_steps=1, policy_kwargs=TINY_POLICY, seed=0)
    model.learn(200)
    assert model.num_timesteps >= 200 and model._n_updates > 0
    rows = evaluate_tasks(model, env, n_eval_episodes=1)
    assert [row["task"] for row in rows] == ["apple", "dice"]
    assert all(row["score"] == row["success_rate"] is not None for row in rows)
    env.close()


def test_missing_objects_are_named_with_how_to_get_them(monkeypatch):
    # As on a machine without the reference code: dex_envs cannot be imported
    monkeypatch.setitem(sys.modules, "dex_envs", None)
    with pytest.raises(ImportError) as error:
        make_shadowhand_suite(["apple", "rubiks_cube"])
    message = str(error.value)
    assert "2 of 2 ShadowHand objects are not available: apple, rubiks_cube." in message
    assert "naumix/BiggerRegularizedCategorical" in message and "PYTHONPATH" in message
    with pytest.raises(ImportError, match="rubiks_cube"):
        MultiTaskVecEnv(["rubiks_cube-rotate-v1"])
    with pytest.raises(ValueError, match="Not BRC ShadowHand objects"):
        make_shadowhand_suite(["teapot"])
