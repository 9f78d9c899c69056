"""Meta-World at the BRC paper's protocol: the ``mt10-paper`` / ``mt50-paper`` suites and goal-observable tasks."""

import numpy as np
import pytest
from stable_baselines3.common.vec_env import SubprocVecEnv

from sb3_brc import MultiTaskVecEnv, make_suite
from sb3_brc.envs.suites import SUITES, _metaworld_benchmark_tasks, describe_suites

metaworld = pytest.importorskip("metaworld", reason="the Meta-World suites need the metaworld extra")

MT10 = [
    "reach-v3",
    "push-v3",
    "pick-place-v3",
    "door-open-v3",
    "drawer-open-v3",
    "drawer-close-v3",
    "button-press-topdown-v3",
    "peg-insert-side-v3",
    "window-open-v3",
    "window-close-v3",
]


@pytest.fixture(scope="module")
def mt10_paper():
    env = make_suite("mt10-paper", seed=0)
    yield env
    env.close()


def goals(obs: dict) -> np.ndarray:
    return obs["observation"][:, 36:39]


def test_mt10_paper_has_mt10_tasks_in_order(mt10_paper):
    assert mt10_paper.task_names == MT10
    assert mt10_paper.layout.score_kinds == ("metaworld",) * 10
    assert mt10_paper.layout.observation_shapes == ((39,),) * 10
    assert mt10_paper.layout.action_sizes == (4,) * 10 and mt10_paper.observation_space["observation"].shape == (39,)
    assert "mt10-paper" in describe_suites() and "mt50-paper" in describe_suites()


def test_mt50_paper_has_all_50_tasks():
    names = _metaworld_benchmark_tasks(SUITES["mt50-paper"].metaworld)
    assert len(names) == 50 and set(names) == set(metaworld.ALL_V3_ENVIRONMENTS)


def test_goal_is_visible_and_fixed(mt10_paper):
    first = goals(mt10_paper.reset())
    targets = [sub_env.unwrapped._target_pos for sub_env in mt10_paper.venv.envs]
    np.testing.assert_allclose(first, np.array(targets, dtype=np.float32))
    assert len({tuple(goal) for goal in first}) > 1, "every task shows the same goal"
    for _ in range(3):
        obs, *_ = mt10_paper.step(mt10_paper.sample_actions())
        np.testing.assert_array_equal(goals(obs), first)
    np.testing.assert_array_equal(goals(mt10_paper.reset()), first)


def test_episodes_end_at_200_steps_with_success(mt10_paper):
    first = mt10_paper.reset()
    for step in range(1, 201):
        obs, _, dones, infos = mt10_paper.step(mt10_paper.sample_actions())
        assert dones.all() == (step == 200) and dones.any() == (step == 200), f"episode ended at step {step}"
    for info in infos:
        assert info["TimeLimit.truncated"] is True
        assert isinstance(info["is_success"], bool)
        np.testing.assert_array_equal(info["terminal_observation"]["observation"][36:], goals(first)[info["task_id"]])
    # Meta-World's goal-observable envs restart from the same state every episode
    np.testing.assert_array_equal(obs["observation"], first["observation"])


def test_seed_reproduces_the_envs(mt10_paper):
    first = mt10_paper.reset()["observation"]
    again = make_suite("mt10-paper", seed=0)
    np.testing.assert_array_equal(again.reset()["observation"], first)
    again.close()
    other_seed = make_suite("reach-v3-goal-observable", seed=1)
    assert other_seed.task_names == ["reach-v3-goal-observable"]
    assert not np.array_equal(goals(other_seed.reset())[0], goals({"observation": first})[0])
    other_seed.close()


def test_mt10_paper_tasks_in_subprocesses(mt10_paper):
    # Two of mt10-paper's tasks, resolved like the suite resolves them (ten fresh workers would take a minute on two
    # cores): each worker imports Meta-World and rebuilds its task, the same env as in-process
    picked = [0, 3]
    tasks = [MT10[i] + "-goal-observable" for i in picked]
    env = MultiTaskVecEnv(tasks, task_names=[MT10[i] for i in picked], vec_env_cls=SubprocVecEnv, seed=0)
    try:
        np.testing.assert_array_equal(env.reset()["observation"], mt10_paper.reset()["observation"][picked])
        _, rewards, dones, infos = env.step(env.sample_actions())
        assert rewards.shape == (2,) and not dones.any()
        assert [info["task_name"] for info in infos] == ["reach-v3", "door-open-v3"]
    finally:
        env.close()


def test_two_mt10_suites_share_no_env():
    # MT10 exists only as Meta-World's vector env: each suite gets its own (training and evaluation envs built
    # alike must not step each other's tasks), with the same tasks and goals from the same seed
    first, second = make_suite("mt10", seed=0), make_suite("mt10", seed=0)
    try:
        assert first.task_names == second.task_names == MT10
        second_envs = [sub_env.unwrapped for sub_env in second.venv.envs]
        assert not any(sub_env.unwrapped is other for sub_env in first.venv.envs for other in second_envs)
        np.testing.assert_array_equal(first.reset()["observation"], second.reset()["observation"])
    finally:
        first.close()
        second.close()


def test_single_task_runs_of_a_meta_world_suite_train_its_envs():
    # A single-task algorithm of a grid trains each task of mt10-paper alone: the same goal-observable env
    from sb3_brc.bench.grid import RunTasks, resolve_tasks

    runs = resolve_tasks("mt10-paper").split()
    assert [run.task_names for run in runs] == [(name,) for name in MT10]
    assert runs[0].tasks == ("reach-v3-goal-observable",) and runs[0].suite is None
    # Some of its tasks (the per-task baselines of a subset): the same runs
    assert resolve_tasks("mt10-paper:reach-v3,door-open-v3").split() == [runs[0], runs[MT10.index("door-open-v3")]]
    # MT10 itself exists only as one vector env: its tasks alone would be other envs (MT1's goals)
    with pytest.raises(ValueError, match=r"exists only as Meta-World's vector env.*'mt10-paper'"):
        RunTasks("mt10", tuple(MT10), tuple(MT10), suite="mt10").split()


def scripted_policy(task: str):
    """Meta-World's hand-written expert for ``task`` (``metaworld.policies``)."""
    import metaworld.policies

    name = "Sawyer" + "".join(part.capitalize() for part in task.removesuffix("-v3").split("-")) + "V3Policy"
    return getattr(metaworld.policies, name.replace("PegInsertSide", "PegInsertionSide"))()


def test_every_mt10_paper_task_can_be_solved_through_our_env():
    # Before blaming a learning budget for a task nobody solves: Meta-World's scripted experts solve each task of
    # the suite as our env lays it out (padded, tagged observations, actions rescaled per task), one episode each
    env = make_suite("mt10-paper", seed=1)
    policies = [scripted_policy(task) for task in env.task_names]
    obs = env.reset()
    solved = np.zeros(env.num_tasks, bool)
    for _ in range(200):
        actions = np.stack([policy.get_action(row) for policy, row in zip(policies, obs["observation"], strict=True)])
        obs, _, dones, infos = env.step(np.clip(actions, -1, 1))
        solved |= [info.get("is_success", False) for info in infos]
        if dones.any():
            break
    env.close()
    assert solved.all(), [task for task, ok in zip(env.task_names, solved, strict=True) if not ok]


def load_claim():
    import importlib.util
    import pathlib

    path = pathlib.Path(__file__).parents[1] / "benchmarks" / "claims" / "mt10.py"
    spec = importlib.util.spec_from_file_location("mt10_claim", path)
    claim = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(claim)
    return claim


def test_the_mt10_claim_grid_trains_the_multi_task_model_on_all_ten_and_the_baselines_on_the_subset():
    import argparse

    claim = load_claim()
    args = argparse.Namespace(
        seeds=[0], subset=["reach-v3", "door-open-v3"], per_task=list(claim.PER_TASK), out="out", steps_per_task=3000,
        eval_every=1000, eval_episodes=1, learning_starts=500, size="tiny", crossq_width=256, threads=1,
    )  # fmt: skip
    runs = {run.key: run for run in claim.claim_runs(args)}
    assert sorted(runs) == sorted(
        ["brc_sac/mt10-paper/seed0"] + [f"{a}/{t}/seed0" for a in claim.PER_TASK for t in ("reach-v3", "door-open-v3")]
    )
    assert runs["brc_sac/mt10-paper/seed0"].tasks.task_names == tuple(MT10)
    assert runs["crossq/reach-v3/seed0"].settings.width == 256 and runs["sac/reach-v3/seed0"].settings.width is None
    # The per-task runs are the suite's own (goal-observable) single tasks
    assert runs["sac/reach-v3/seed0"].tasks.tasks == ("reach-v3-goal-observable",)


def test_the_mt10_claims_late_success_averages_each_runs_last_evaluations():
    from sb3_brc.bench.scoring import GridData

    claim = load_claim()
    # 2 seeds x 2 tasks x 4 evaluations of 0/1 success; brc_sac succeeds late on task 0, sac never
    multi = np.array([[[0, 1, 1, 0], [0, 0, 0, 0]], [[0, 0, 1, 1], [0, 0, 1, 0]]], dtype=float)
    curves = {"brc_sac": multi, "sac": np.zeros_like(multi)}
    data = GridData(
        algos=["brc_sac", "sac"], tasks=["a", "b"], steps=[1, 2, 3, 4], final={a: c[..., -1] for a, c in curves.items()},
        curves=curves, norms={}, return_curves=curves, wall_s={}, cpu_s={},
    )  # fmt: skip
    late = claim.late_success(data, 3).final["brc_sac"]
    expected = [[(1 + 1 + 0) / 3, 0.0], [(0 + 1 + 1) / 3, 1 / 3]]
    np.testing.assert_allclose(late, expected)
    table = claim.late_success_table(data, 3)
    assert "last 3 evaluations (2 to 4 env steps per task)" in table
    mean = float(np.mean(expected))
    assert "| brc_sac | " in table and f"{mean:.3f} [" in table and "| sac | 0.000 [0.000, 0.000] | 0.000" in table
