"""HumanoidBench: the ``hb-h1`` / ``hb-h1hand`` suites, ``h1-*`` / ``h1hand-*`` tasks, their scores and errors."""

import importlib.util
import pathlib
import sys

import numpy as np
import pytest
from conftest import TINY_POLICY

from sb3_brc import BRCSAC, MultiTaskVecEnv, make_suite
from sb3_brc.envs.humanoidbench import INSTALL_HINT, import_humanoidbench, make_humanoidbench
from sb3_brc.envs.scores import HUMANOIDBENCH_SCORES, humanoidbench_normalized_score, normalized_score
from sb3_brc.envs.suites import SUITES
from sb3_brc.envs.tasks import task_factory

needs_humanoid_bench = pytest.mark.skipif(
    importlib.util.find_spec("humanoid_bench") is None, reason=f"needs humanoid_bench ({INSTALL_HINT})"
)

H1 = ["h1-walk-v0", "h1-stand-v0", "h1-run-v0", "h1-stair-v0", "h1-crawl-v0"]
H1 += ["h1-pole-v0", "h1-slide-v0", "h1-hurdle-v0", "h1-maze-v0"]


@pytest.fixture(scope="module")
def walk_and_push():
    if importlib.util.find_spec("humanoid_bench") is None:
        pytest.skip(f"needs humanoid_bench ({INSTALL_HINT})")
    env = MultiTaskVecEnv(["h1-walk-v0", "h1hand-push-v0"], seed=0)
    yield env
    env.close()


def test_suites_hold_the_papers_tasks():
    assert SUITES["hb-h1"].tasks == H1
    hands = SUITES["hb-h1hand"].tasks
    assert len(hands) == len(set(hands)) == 28 and all(name.startswith("h1hand-") for name in hands)
    assert {"h1hand-push-v0", "h1hand-window-v0", "h1hand-insert_small-v0"} <= set(hands)
    assert set(HUMANOIDBENCH_SCORES) == set(H1 + hands), "every suite task needs its random/success returns"
    assert task_factory("h1-walk-v0")[1:] == ("h1-walk-v0", "humanoidbench")


@needs_humanoid_bench
def test_hb_h1_suite_builds_steps_and_pads_to_float32():
    env = make_suite("hb-h1", seed=0)
    try:
        assert env.task_names == H1
        assert env.layout.observation_shapes == ((51,),) * 9 and env.layout.action_sizes == (19,) * 9
        assert env.layout.score_kinds == ("humanoidbench",) * 9
        obs = env.reset()
        # upstream observations are float64: the multi-task env hands out float32
        assert obs["observation"].dtype == np.float32 and obs["observation"].shape == (9, 51)
        assert obs["task_id"].ravel().tolist() == list(range(9))
        obs, rewards, _, infos = env.step(env.sample_actions())
        assert np.isfinite(obs["observation"]).all() and np.isfinite(rewards).all()
        assert [info["task_name"] for info in infos] == H1
    finally:
        env.close()


def test_h1_and_h1hand_sizes(walk_and_push):
    walk = make_humanoidbench("h1-walk-v0")
    assert walk.observation_space.shape == (51,) and walk.observation_space.dtype == np.float64
    assert walk.action_space.shape == (19,) and (walk.action_space.low == -1).all() and (walk.action_space.high == 1).all()
    assert walk.unwrapped.render_mode is None, "headless: no offscreen renderer"
    assert walk_and_push.layout.observation_shapes == ((51,), (163,))
    assert walk_and_push.layout.action_sizes == (19, 61)
    assert walk_and_push.observation_space["observation"].shape == (163,)
    obs = walk_and_push.reset()
    assert (obs["observation"][0, 51:] == 0).all(), "h1-walk's observation is padded with zeros"
    obs, rewards, *_ = walk_and_push.step(walk_and_push.sample_actions())
    assert np.isfinite(rewards).all() and np.isfinite(obs["observation"]).all()
    # the env scores its tasks with the paper's table (see test_scores_against_the_table)
    assert walk_and_push.normalized_score(0, 351.1885, None) == pytest.approx(0.5)
    assert walk_and_push.normalized_score(1, -526.8, 0.0) == pytest.approx(0.0)


@needs_humanoid_bench
def test_episode_lengths():
    assert make_humanoidbench("h1-walk-v0").spec.max_episode_steps == 1000
    push = make_humanoidbench("h1hand-push-v0")
    assert push.spec.max_episode_steps == 500
    # Standing still, the push task ends by truncation at step 500. It terminates when the object is within 5 cm of
    # the goal, which upstream's envs/push.py draws from NumPy's global generator (reset's seed does not fix it):
    # seed that generator too, for a goal away from the object
    np.random.seed(0)
    push.reset(seed=0)
    steps, terminated, truncated = 0, False, False
    while not (terminated or truncated):
        _, _, terminated, truncated, _ = push.step(np.zeros(61, np.float32))
        steps += 1
    assert (steps, terminated, truncated) == (500, False, True)


def test_scores_against_the_table():
    # h1-walk: random 2.377, success 700; h1hand-push: random -526.8, success 700
    assert humanoidbench_normalized_score("h1-walk-v0", 2.377) == 0.0
    assert humanoidbench_normalized_score("h1-walk-v0", 700.0) == 1.0
    assert normalized_score("humanoidbench", "h1-walk-v0", 351.1885, None) == pytest.approx(0.5)
    assert normalized_score("humanoidbench", "h1hand-push-v0", 86.6, 0.0) == pytest.approx(0.5)
    assert normalized_score("humanoidbench", "h1hand-reach-v0", 0.0, None) == pytest.approx(50.024 / 12050.024)
    assert normalized_score("humanoidbench", "h1hand-kitchen-v0", 10.0, None) is None  # not in the paper's table
    with pytest.raises(ValueError, match="h1hand-kitchen-v0"):
        humanoidbench_normalized_score("h1hand-kitchen-v0", 10.0)


@needs_humanoid_bench
def test_missing_assets_and_rejected_models_name_the_task():
    assets = pathlib.Path(import_humanoidbench().__file__).parent / "assets" / "envs"
    if (assets / "h1hand_pos_basketball.xml").exists():
        pytest.skip("the full humanoid_bench is installed: every task's assets are there")
    with pytest.raises(FileNotFoundError, match=r"'h1hand-basketball-v0': its assets are missing.*pip install --no-deps"):
        MultiTaskVecEnv(["h1-walk-v0", "h1hand-basketball-v0"])
    # Upstream's kettle_asset.xml has a top-level named default class, which MuJoCo 3.3 refuses
    with pytest.raises(RuntimeError, match=r"'h1hand-kitchen-v0' cannot be built.*top-level default class"):
        make_humanoidbench("h1hand-kitchen-v0")
    with pytest.raises(ValueError, match=r"Unknown HumanoidBench task 'h1-wlak-v0'.*'h1-walk-v0'"):
        make_humanoidbench("h1-wlak-v0")


def test_missing_package_says_how_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "humanoid_bench", None)  # what an absent package looks like to the import system
    with pytest.raises(ImportError, match=r"pip install --no-deps git\+https://github.com/carlosferrazza/humanoid-bench"):
        MultiTaskVecEnv(["h1-walk-v0"])
    with pytest.raises(ImportError, match="humanoid_bench"):
        make_suite("hb-h1")


@needs_humanoid_bench
def test_reach_policies_explain_that_they_need_jax():
    if importlib.util.find_spec("jax") is not None:
        pytest.skip("jax is installed: upstream's own flax_to_torch module is in use")
    import_humanoidbench()
    reach_policies = sys.modules["humanoid_bench.mjx.flax_to_torch"]
    with pytest.raises(ImportError, match="policy_type='reach_\\*' option needs jax"):
        reach_policies.TorchModel(55, 19)


@needs_humanoid_bench
def test_brcsac_learns_on_two_h1_tasks():
    env = MultiTaskVecEnv(["h1-walk-v0", "h1-stand-v0"], seed=0)
    model = BRCSAC("MlpPolicy", env, learning_starts=100, batch_size=32, policy_kwargs=TINY_POLICY, seed=0)
    model.learn(300)
    assert model.num_timesteps >= 300 and model._n_updates > 0
    stored = model.replay_buffer.observations["task_id"][: model.replay_buffer.pos]
    assert set(np.unique(stored)) == {0, 1}, "both tasks' transitions are in the replay buffer"
    action, _ = model.predict(env.reset(), deterministic=True)
    assert action.shape == (2, 19) and np.isfinite(action).all()
    env.close()
