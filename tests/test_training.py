"""The training driver shared by `sb3-brc train` and the benchmark harness (sb3_brc.tools.training)."""

import functools
import json

import pytest

from sb3_brc import BRCSAC, MultiTaskVecEnv
from sb3_brc.bench.settings import PRESETS
from sb3_brc.cli import main as cli_main
from sb3_brc.cli import new_model, parse_args
from sb3_brc.common.policies import SIZE_PRESETS
from sb3_brc.envs.vec_env import DiscreteMultiTaskVecEnv
from sb3_brc.tools.evaluation import write_eval_rows
from sb3_brc.tools.report import read_eval_csv
from sb3_brc.tools.training import brc_sac_policy_kwargs, per_task_budget, train_and_evaluate


def test_per_task_budget_scales_with_the_tasks_and_caps_the_buffer_at_the_run():
    assert per_task_budget(3, 500, 100, 1_000) == dict(learning_starts=300, buffer_size=1_500)
    assert per_task_budget(2, 5_000, 100, 1_000) == dict(learning_starts=200, buffer_size=2_000)


def test_schedule_off_the_last_step_gets_a_final_evaluation_and_resume_keeps_the_run(tmp_path):
    env = MultiTaskVecEnv(["Pendulum-v1"], seed=0)
    eval_env = MultiTaskVecEnv(["Pendulum-v1"], seed=100)
    make_model = functools.partial(
        BRCSAC, "MlpPolicy", env, learning_starts=50, batch_size=16, seed=0, policy_kwargs=brc_sac_policy_kwargs("tiny", 16)
    )
    eval_csv, baseline_json = str(tmp_path / "eval.csv"), str(tmp_path / "random.json")
    seen = []
    plan = dict(steps_per_task=150, eval_every=100, eval_episodes=1, eval_csv=eval_csv, baseline_json=baseline_json, seed=0)
    result = train_and_evaluate(env, eval_env, make_model, on_evaluation=seen.append, **plan)

    assert result.model.num_timesteps == 150
    # Every 100 steps per task, then once more at the last step, which the schedule missed
    assert [row["steps_per_task"] for row in read_eval_csv(eval_csv)] == [100, 150]
    assert [rows[0]["steps_per_task"] for rows in seen] == [100, 150]
    assert [row["steps_per_task"] for row in result.final] == [150] and result.final[0]["task"] == "Pendulum-v1"
    with open(baseline_json) as file:
        assert json.load(file) == result.random_baseline
    assert result.random_baseline[0]["task"] == "Pendulum-v1" and result.random_baseline[0]["episodes"] == 1

    # Resumed at its last step: the baseline is read back, rows written after that step are dropped, nothing retrains
    marked = [dict(row, mean_return=-1.0) for row in result.random_baseline]
    with open(baseline_json, "w") as file:
        json.dump(marked, file)
    write_eval_rows(eval_csv, [dict(result.final[0], timesteps=999, steps_per_task=999)], append=True)
    resumed = train_and_evaluate(env, eval_env, lambda: result.model, resume=True, **plan)
    assert resumed.random_baseline == marked and resumed.model.num_timesteps == 150
    assert [row["steps_per_task"] for row in read_eval_csv(eval_csv)] == [100, 150]

    # Resumed from the final checkpoint, killed before the final evaluation: a loaded model (no logger yet) is
    # evaluated at its step without training
    result.model.save(tmp_path / "final")
    write_eval_rows(eval_csv, read_eval_csv(eval_csv)[:1], append=False)
    loaded = BRCSAC.load(tmp_path / "final", env=env)
    again = train_and_evaluate(env, eval_env, lambda: loaded, resume=True, **plan)
    assert [(row["timesteps"], row["steps_per_task"]) for row in read_eval_csv(eval_csv)] == [(100, 100), (150, 150)]
    assert again.final[0]["steps_per_task"] == 150 and again.model.num_timesteps == 150


def test_paper_preset_sets_the_reference_settings_unless_a_flag_does():
    args = parse_args(["train", "--suite", "dmc-hard", "--out", "runs/x", "--preset", "paper"])
    assert (args.size, args.steps_per_task, args.eval_every, args.eval_episodes) == ("256M", 1_000_000, 50_000, 10)
    assert args.learning_starts == 5_000 and args.batch_size is None  # batch: the algorithm's 256 / 1024
    assert SIZE_PRESETS["256M"] == dict(pi=[256], qf=[4096, 4096])  # the reference's 4096-wide critic, actor 256
    args = parse_args(
        ["train", "--suite", "dmc-hard", "--out", "x", "--preset", "paper", "--size", "tiny", "--eval-freq", "7"]
    )
    assert (args.size, args.eval_every, args.steps_per_task) == ("tiny", 7, 1_000_000)  # explicit flags win
    args = parse_args(["train", "--tasks", "Pendulum-v1", "--out", "x", "--steps-per-task", "100"])
    assert (args.preset, args.size, args.learning_starts) == ("cpu", "tiny", None)  # the cheap default
    with pytest.raises(SystemExit):  # the cpu preset sets no budget
        parse_args(["train", "--tasks", "Pendulum-v1", "--out", "x"])
    bench = parse_args(["bench", "--tasks", "dmc-hard", "--preset", "paper"])
    assert {name: getattr(bench, name) for name in PRESETS["paper"]} == PRESETS["paper"]


def test_resume_refuses_another_evaluation_schedule(tmp_path, capsys):
    run = ["train", "--tasks", "Pendulum-v1", "--out", str(tmp_path), "--steps-per-task", "10", "--eval-episodes", "1"]
    cli_main([*run, "--eval-freq", "5", "--no-progress"])
    with pytest.raises(SystemExit) as exit_info:
        cli_main([*run, "--eval-freq", "2", "--resume"])
    assert exit_info.value.code == 2 and "these differ: ['eval_freq']" in capsys.readouterr().err


def test_compile_update_flag_reaches_brcsac_and_brcdqn(tmp_path, capsys):
    run = ["train", "--out", str(tmp_path), "--steps-per-task", "10"]
    args = parse_args([*run, "--tasks", "Pendulum-v1", "--compile-update"])
    assert new_model(args, MultiTaskVecEnv(["Pendulum-v1"], seed=0)).compile_update is True
    unset = new_model(parse_args([*run, "--tasks", "Pendulum-v1"]), MultiTaskVecEnv(["Pendulum-v1"]))
    assert unset.compile_update == "auto"  # BRCSAC's default
    off = parse_args([*run, "--tasks", "Pendulum-v1", "--no-compile-update"])
    assert new_model(off, MultiTaskVecEnv(["Pendulum-v1"])).compile_update is False
    # BRCDQN has the option too
    for flag, value in (("--no-compile-update", False), ("--compile-update", True)):
        args = parse_args([*run, "--tasks", "CartPole-v1", flag])
        assert new_model(args, DiscreteMultiTaskVecEnv(["CartPole-v1"])).compile_update is value
    # part of the run's config: a resume with another choice is refused
    cli_main([*run, "--tasks", "Pendulum-v1", "--eval-episodes", "1", "--no-progress"])
    with pytest.raises(SystemExit) as exit_info:
        cli_main([*run, "--tasks", "Pendulum-v1", "--eval-episodes", "1", "--compile-update", "--resume"])
    assert exit_info.value.code == 2 and "these differ: ['compile_update']" in capsys.readouterr().err


def test_cuda_graph_flag_reaches_brcsac_and_is_refused_for_brcdqn():
    run = ["train", "--out", "unused", "--steps-per-task", "10"]
    with pytest.warns(UserWarning, match="cuda_graph=True ignored: cpu is not a CUDA device"):
        assert new_model(
            parse_args([*run, "--tasks", "Pendulum-v1", "--cuda-graph"]), MultiTaskVecEnv(["Pendulum-v1"])
        ).cuda_graph
    assert not new_model(parse_args([*run, "--tasks", "Pendulum-v1"]), MultiTaskVecEnv(["Pendulum-v1"])).cuda_graph
    with pytest.raises(ValueError, match="--cuda-graph is a BRCSAC option; BRCDQN"):
        new_model(parse_args([*run, "--tasks", "CartPole-v1", "--cuda-graph"]), DiscreteMultiTaskVecEnv(["CartPole-v1"]))


@pytest.mark.parametrize("kind", ["brcsac", "brcdqn"])
def test_training_estimate_times_updates_and_leaves_the_model_as_it_was(kind):
    import torch as th
    from conftest import TINY_POLICY

    from sb3_brc import BRCDQN
    from sb3_brc.common.utils import remaining_updates
    from sb3_brc.tools.training import training_estimate

    def build():
        if kind == "brcdqn":
            env = DiscreteMultiTaskVecEnv(["CartPole-v1", "Acrobot-v1"], seed=0)
            return BRCDQN("MlpPolicy", env, policy_kwargs=dict(net_arch=[16, 16], n_atoms=11), learning_starts=40,
                          batch_size=16, seed=0)  # fmt: skip
        env = MultiTaskVecEnv(["Pendulum-v1", "InvertedPendulum-v5"], seed=0)
        return BRCSAC("MlpPolicy", env, policy_kwargs=TINY_POLICY, learning_starts=40, batch_size=16, seed=0)

    estimated = build()
    text = training_estimate(estimated, 100)
    # (100 - 40) env steps over 2 tasks = 30 vector steps, each with the algorithm's updates per step
    assert remaining_updates(estimated, 100) == 30 * estimated.gradient_steps // estimated.train_freq.frequency
    assert f"{remaining_updates(estimated, 100):,} gradient updates of batch 16 at" in text and "Faster" not in text
    assert estimated.replay_buffer.size() == 0 and estimated._n_updates == 0
    estimated.learn(100)
    plain = build()  # (the constructor seeds the global random streams)
    plain.learn(100)  # the same run: the estimate left parameters, optimisers and random streams as they were
    for one, other in zip(estimated.policy.state_dict().values(), plain.policy.state_dict().values(), strict=True):
        th.testing.assert_close(one, other, rtol=0, atol=0)
    assert estimated._n_updates == plain._n_updates > 0


def test_a_long_run_names_the_faster_settings_and_still_starts(monkeypatch):
    # The paper's preset on a CPU: the estimate says months and names the faster settings; nothing is refused
    from sb3_brc.tools import training

    model = BRCSAC("MlpPolicy", MultiTaskVecEnv(["Pendulum-v1"]), learning_starts=5000, batch_size=1024)
    monkeypatch.setattr(training, "seconds_per_update", lambda model: 44.3)
    text = training.training_estimate(model, 1_000_000)
    assert "1,990,000 gradient updates of batch 1024 at 44.3 s each on cpu" in text and "about 1,020 days" in text
    assert "Faster: " in text and "a smaller --size (tiny, small) or --compile-update on this CPU" in text
