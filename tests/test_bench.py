"""Benchmark harness (sb3_brc.bench): grid layout, files, resumption, scores, rliable aggregates, plots, Markdown."""

import argparse
import dataclasses
import json
import math
import os
import pickle

import numpy as np
import pytest
import torch as th

from sb3_brc import cli
from sb3_brc.bench import (
    ALGOS,
    BenchAlgo,
    BenchSettings,
    Normalization,
    RunnerSettings,
    grid,
    load_grid,
    register_algo,
    replace_section,
    resolve_tasks,
    run_benchmark,
    task_normalizations,
)
from sb3_brc.bench.algos import make_multi_task_env
from sb3_brc.bench.grid import is_complete, saved_status
from sb3_brc.bench.harness import run_runs
from sb3_brc.bench.runner import CHECKPOINTS, build_model, restore_model, run_one
from sb3_brc.bench.settings import add_setting_flags, settings_from_args
from sb3_brc.envs.suites import describe_suites
from sb3_brc.sac.functional_update import FunctionalUpdate
from sb3_brc.tools.checkpoint import save_checkpoint
from sb3_brc.tools.evaluation import write_eval_rows
from sb3_brc.tools.report import read_eval_csv

pytest.importorskip("rliable")

FLAGS = dict(steps_per_task=200, eval_every=100, eval_episodes=1, learning_starts=100, batch_size=32, width=16)
SEEDS = [0, 1]


def test_min_max_and_native_scores_by_hand():
    rows = [
        dict(task="pend", mean_return=-900.0, score=None),
        dict(task="pend", mean_return=-400.0, score=None),  # best return of the grid
        dict(task="walker", mean_return=250.0, score=0.25),
        dict(task="walker", mean_return=600.0, score=0.6),
    ]
    norms = task_normalizations(rows, {"pend": [-1100.0, -900.0], "walker": [40.0]})
    pend, walker = norms["pend"], norms["walker"]
    assert (pend.method, pend.random_return, pend.best_return) == ("min-max", -1000.0, -400.0)
    # (R - random) / (best - random): (-700 + 1000) / (-400 + 1000) = 0.5; the best return scores 1, random 0
    assert pend.score(-700.0, None) == pytest.approx(0.5)
    assert pend.score(-400.0, None) == pytest.approx(1.0)
    assert pend.score(-1300.0, None) == pytest.approx(-0.5)  # worse than random: negative, not clipped
    assert walker.method == "native" and walker.score(600.0, 0.6) == 0.6
    # No run beat the random policy: no scale, score 0
    assert Normalization("min-max", -10.0, -10.0).score(-10.0, None) == 0.0


def test_grid_layout_suites_and_registry():
    settings = BenchSettings(**FLAGS)
    runs = grid("out", ["brc_sac", "sac"], ["pendulum-gravity", "Pendulum-v1"], SEEDS, settings)
    keys = [run.key for run in runs]
    # Multi-task BRC: the suite is one run per seed; SAC: one run per task of the suite
    assert "brc_sac/pendulum-gravity/seed0" in keys and "sac/pendulum-g6/seed1" in keys
    assert len(runs) == 2 * (1 + 1) + 2 * (3 + 1)
    assert runs[0].run_dir == os.path.join("out", "brc_sac", "pendulum-gravity", "seed0")
    assert resolve_tasks("Pendulum-v1").task_names == ("Pendulum-v1",)
    with pytest.raises(ValueError, match="multiple of eval_every"):
        grid("out", ["sac"], ["Pendulum-v1"], SEEDS, BenchSettings(steps_per_task=150, eval_every=100))
    with pytest.raises(ValueError, match="Unknown algorithm"):
        grid("out", ["nope"], ["Pendulum-v1"], SEEDS, settings)
    # A task alone and in a suite: two runs would fill one (algorithm, seed, task) cell of the aggregate
    for algo in ("brc_sac", "sac"):
        with pytest.raises(ValueError, match=rf"{algo} would train 'InvertedPendulum-v5' with seed 0 in two runs"):
            grid("out", [algo], ["demo", "InvertedPendulum-v5"], SEEDS, settings)
    assert len(grid("out", ["brc_sac", "brc_sac_st"], ["demo"], SEEDS, settings)) == 2 * (1 + 3)
    with pytest.raises(ValueError, match="already registered"):
        register_algo("sac", BenchAlgo("stable_baselines3:SAC"))
    assert ALGOS["sac"].algo_class().__name__ == "SAC"


def test_task_sets_and_suite_subsets():
    settings = BenchSettings(**FLAGS)
    # A comma-joined set: one multi-task run, one run per task of a single-task algorithm
    runs = grid("out", ["brc_sac", "sac"], ["Pendulum-v1,InvertedPendulum-v5"], SEEDS[:1], settings)
    assert [run.key for run in runs] == [
        "brc_sac/Pendulum-v1,InvertedPendulum-v5/seed0",
        "sac/Pendulum-v1/seed0",
        "sac/InvertedPendulum-v5/seed0",
    ]
    assert runs[0].tasks.task_names == ("Pendulum-v1", "InvertedPendulum-v5") and runs[0].tasks.is_suite
    # Some tasks of a suite: its own envs and names, so per-task runs are the suite's per-task runs
    subset = resolve_tasks("pendulum-gravity:pendulum-g6,pendulum-g12")
    whole = {part.task_names: part for part in resolve_tasks("pendulum-gravity").split()}
    assert subset.split() == [whole[("pendulum-g6",)], whole[("pendulum-g12",)]]
    assert resolve_tasks("pendulum-gravity:pendulum-g6") == whole[("pendulum-g6",)]
    with pytest.raises(ValueError, match=r"unknown task\(s\) \['pendulum-g7'\].*pendulum-gravity's tasks"):
        resolve_tasks("pendulum-gravity:pendulum-g6,pendulum-g7")
    with pytest.raises(ValueError, match="a task twice"):
        resolve_tasks("Pendulum-v1,Pendulum-v1")
    with pytest.raises(ValueError, match=r"holds single tasks; \['pendulum-gravity'\] are suites"):
        resolve_tasks("Pendulum-v1,pendulum-gravity")


def test_editing_a_registered_algorithm_reruns_its_runs(tmp_path):
    settings = BenchSettings(**FLAGS)
    tuned = dict(learning_rate=1e-3, policy_kwargs=dict(activation_fn=th.nn.Tanh))
    register_algo("sac_tuned", BenchAlgo("stable_baselines3:SAC", kwargs=tuned))
    try:
        (spec,) = grid(str(tmp_path), ["sac_tuned"], ["Pendulum-v1"], [0], settings)
        assert spec.config()["algo_kwargs"] == dict(
            learning_rate=1e-3, policy_kwargs=dict(activation_fn="torch.nn.modules.activation:Tanh", net_arch=[16, 16])
        )
        os.makedirs(spec.run_dir)
        config_path = os.path.join(spec.run_dir, "config.json")
        with open(config_path, "w") as file:
            json.dump(dict(spec.config(), status="complete"), file)
        assert is_complete(spec)
        # Another learning rate in the registry: the finished run no longer counts
        register_algo("sac_tuned", BenchAlgo("stable_baselines3:SAC", kwargs=dict(learning_rate=3e-4)), overwrite=True)
        (edited,) = grid(str(tmp_path), ["sac_tuned"], ["Pendulum-v1"], [0], settings)
        assert not is_complete(edited) and saved_status(edited) is None
        # A run directory from before the constructor arguments were recorded is still reused
        old = {key: value for key, value in edited.config().items() if key not in ("policy", "algo_kwargs")}
        with open(config_path, "w") as file:
            json.dump(dict(old, status="complete"), file)
        assert is_complete(edited)
        # A run of another sb3-brc version (code that may compute something else) is never reused
        with open(config_path, "w") as file:
            json.dump(dict(edited.config(), sb3_brc_version="0.2.0", status="complete"), file)
        assert not is_complete(edited)
        del old["sb3_brc_version"]  # nor one recorded before the version was part of a run's identity
        with open(config_path, "w") as file:
            json.dump(dict(old, status="complete"), file)
        assert not is_complete(edited)
    finally:
        del ALGOS["sac_tuned"]


def test_replay_capacity_is_each_algorithms_own(tmp_path):
    # 200k env steps per task: above BRCDQN's 100k transitions per task (DrQ(eps)'s), below SB3's default 1M
    settings = BenchSettings(**dict(FLAGS, steps_per_task=200_000))
    for algo, task, capacity in (("brc_dqn", "CartPole-v1", 100_000), ("sac", "Pendulum-v1", 200_000)):
        (spec,) = grid(str(tmp_path), [algo], [task], [0], settings)
        env = spec.algo.make_env(spec.tasks.tasks, spec.tasks.task_names, 0, spec.tasks.suite)
        try:
            assert build_model(spec, env).buffer_size == capacity
        finally:
            env.close()


def test_compile_update_flag_compiles_the_brcsac_runs_only(tmp_path):
    parser = argparse.ArgumentParser()
    add_setting_flags(parser, RunnerSettings)
    runner = settings_from_args(RunnerSettings, parser.parse_args(["--compile-update"]))
    assert runner.compile_update is True and settings_from_args(RunnerSettings, parser.parse_args([])).compile_update is None
    assert settings_from_args(RunnerSettings, parser.parse_args(["--no-compile-update"])).compile_update is False
    eager_brc, eager_sac = grid(str(tmp_path), ["brc_sac", "sac"], ["Pendulum-v1"], [0], BenchSettings(**FLAGS))
    brc, sac = (dataclasses.replace(spec, compile_update=True) for spec in (eager_brc, eager_sac))
    assert brc.config() == eager_brc.config()  # the same update: not part of the run's identity, finished runs count
    env, sac_env = (spec.algo.make_env(spec.tasks.tasks, spec.tasks.task_names, 0, spec.tasks.suite) for spec in (brc, sac))
    try:
        compiled = build_model(brc, env)
        assert compiled.compile_update is True and isinstance(compiled._updates.functional, FunctionalUpdate)
        assert build_model(eager_brc, env).compile_update == "auto"  # unset: BRCSAC's default
        assert build_model(dataclasses.replace(brc, compile_update=False), env).compile_update is False
        assert not hasattr(build_model(sac, sac_env), "compile_update")  # SAC is built as without the flag
        # A resumed run follows the grid's current choice, whichever the checkpoint was written with
        save_checkpoint(compiled, os.path.join(brc.run_dir, CHECKPOINTS))
        assert restore_model(eager_brc, env).compile_update == "auto"
        assert restore_model(brc, env).compile_update is True
    finally:
        env.close()
        sac_env.close()
    with pytest.raises(ValueError, match=r"--compile-update is an option of none of the grid's algorithms \['sac'\]"):
        run_runs([eager_sac], runner, progress=False)
    # Likewise --cuda-graph (on a machine without CUDA the model warns and updates eagerly)
    graphed = dataclasses.replace(eager_brc, cuda_graph=True)
    assert graphed.config() == eager_brc.config() and graphed.update_kwargs() == dict(compile_update="auto", cuda_graph=True)
    assert sac.update_kwargs() == {}
    cuda_runner = settings_from_args(RunnerSettings, parser.parse_args(["--cuda-graph"]))
    with pytest.raises(ValueError, match=r"--cuda-graph is an option of none of the grid's algorithms \['sac'\]"):
        run_runs([eager_sac], cuda_runner, progress=False)


CLOSED: list[bool] = []  # the ``training`` flag of each env closed by _recording_env


def _recording_env(*args, training: bool = True, **kwargs):
    env = make_multi_task_env(*args, training=training, **kwargs)
    close = env.close
    env.close = lambda: (CLOSED.append(training), close())[-1]
    return env


class _BrokenAlgorithm:
    def __init__(self, policy, env, buffer_size=1_000, **kwargs):
        raise RuntimeError("a broken constructor")


def test_a_failing_run_closes_its_envs(tmp_path, monkeypatch):
    monkeypatch.setitem(ALGOS, "broken", BenchAlgo(_BrokenAlgorithm, make_env=_recording_env))
    (spec,) = grid(str(tmp_path), ["broken"], ["Pendulum-v1"], [0], BenchSettings(**FLAGS))
    CLOSED.clear()
    with pytest.raises(RuntimeError, match="a broken constructor"):
        run_one(spec)
    assert sorted(CLOSED) == [False, True]  # the evaluation env and the training env


def test_settings_flags_are_generated_from_the_fields():
    parser = argparse.ArgumentParser()
    add_setting_flags(parser, BenchSettings)
    # Every field is a flag with the field's default; parsed flags give the settings back
    assert settings_from_args(BenchSettings, parser.parse_args([])) == BenchSettings()
    args = parser.parse_args(["--steps-per-task", "200", "--batch-size", "32", "--size", "small"])
    assert settings_from_args(BenchSettings, args) == BenchSettings(steps_per_task=200, batch_size=32, size="small")
    assert set(vars(parser.parse_args([]))) == {item.name for item in dataclasses.fields(BenchSettings)}
    with pytest.raises(SystemExit):
        parser.parse_args(["--size", "huge"])  # choices from the field
    # Counts no run can use are refused before any run starts, each named by its flag
    BenchSettings(learning_starts=0, gradient_steps=-1).check()  # no warm-up; SB3's "one update per env step"
    with pytest.raises(ValueError, match="--learning-starts must be >= 0, got -5; --batch-size must be >= 1, got 0"):
        BenchSettings(learning_starts=-5, batch_size=0).check()
    with pytest.raises(ValueError, match="--width must be >= 1, got 0; --threads must be >= 1, got 0"):
        BenchSettings(width=0, threads=0).check()
    # Another flag name and default for a field (what `sb3-brc train` does)
    renamed = argparse.ArgumentParser()
    add_setting_flags(renamed, BenchSettings, ["learning_starts"], dict(learning_starts=dict(flag="--ls", default=None)))
    # the value keeps the field's name under the other flag (presets and settings look it up by that name)
    assert renamed.parse_args([]).learning_starts is None and renamed.parse_args(["--ls", "7"]).learning_starts == 7


def test_pendulum_gravity_is_a_suite():
    tasks = resolve_tasks("pendulum-gravity")
    assert tasks.task_names == ("pendulum-g6", "pendulum-g9", "pendulum-g12") and tasks.suite is None
    # Its tasks travel to spawned run processes and build Pendulum-v1 with their gravity
    assert [pickle.loads(pickle.dumps(task))().unwrapped.g for task in tasks.tasks] == [6.0, 9.0, 12.0]
    assert "pendulum-gravity" in describe_suites() and "pendulum-g6, pendulum-g9, pendulum-g12" in describe_suites()


def test_replace_section(tmp_path):
    path = str(tmp_path / "RESULTS.md")
    with open(path, "w") as file:
        file.write("# Results\n\n## A\n\nold a\n\n## B\n\nb\n")
    replace_section(path, "A", "new a")
    replace_section(path, "C", "c")
    text = open(path).read()
    assert text == "# Results\n\n## A\n\nnew a\n\n## B\n\nb\n\n## C\n\nc\n"


def test_tiny_grid_end_to_end_and_resume(tmp_path):
    # InvertedPendulum: a few hundred steps reliably beat the random policy (about 4), so min-max scores reach 1
    out, results_md = str(tmp_path / "bench"), str(tmp_path / "RESULTS.md")
    settings = BenchSettings(**FLAGS)
    result = run_benchmark(
        out, ["brc_sac", "sac"], ["InvertedPendulum-v5"], SEEDS, settings, workers=2, reps=200, results_md=results_md,
        results_title="Tiny grid", command="tiny command", progress=False,
    )  # fmt: skip
    assert sorted(r["status"] for r in result["runs"]) == ["done"] * 4

    # Files of each run
    mtimes = {}
    for algo in ("brc_sac", "sac"):
        for seed in SEEDS:
            run_dir = os.path.join(out, algo, "InvertedPendulum-v5", f"seed{seed}")
            rows = read_eval_csv(os.path.join(run_dir, "evaluations.csv"))
            assert [r["steps_per_task"] for r in rows] == [100, 200]
            assert all(r["task"] == "InvertedPendulum-v5" and r["episodes"] == 1 for r in rows)
            for name in ("config.json", "random.json"):
                assert os.path.getsize(os.path.join(run_dir, name)) > 0
            mtimes[run_dir] = os.path.getmtime(os.path.join(run_dir, "evaluations.csv"))

    # Aggregates: finite, CI around the point estimate
    data, aggregate = result["data"], result["aggregate"]
    assert data.norms["InvertedPendulum-v5"].method == "min-max" and data.steps == [100, 200]
    for algo in ("brc_sac", "sac"):
        assert data.final[algo].shape == (2, 1) and data.curves[algo].shape == (2, 1, 2)
        for value, (low, high) in zip(aggregate["point"][algo], aggregate["ci"][algo], strict=True):
            assert all(math.isfinite(v) for v in (value, low, high))
            assert low - 1e-9 <= value <= high + 1e-9
        assert np.isfinite(aggregate["curves"][algo][0]).all()
    p, low, high = aggregate["poi"]["brc_sac,sac"]
    assert -1e-9 <= low <= p + 1e-9 and p <= high + 1e-9 and high <= 1.0 + 1e-9
    # The best return of the grid scores exactly 1 somewhere
    assert max(np.max(c) for c in data.curves.values()) == pytest.approx(1.0)
    # Return curves: each run's evaluation returns as written, seed by seed
    for algo in ("brc_sac", "sac"):
        for index, seed in enumerate(SEEDS):
            rows = read_eval_csv(os.path.join(out, algo, "InvertedPendulum-v5", f"seed{seed}", "evaluations.csv"))
            assert data.return_curves[algo][index, 0].tolist() == [r["mean_return"] for r in rows]

    # Plots and Markdown
    for name in ("intervals", "performance_profile", "sample_efficiency", "task_curves", "probability_of_improvement"):
        assert os.path.getsize(os.path.join(out, f"{name}.png")) > 1000
    text = open(os.path.join(out, "aggregate.md")).read()
    iqm_rows = [line for line in text.splitlines() if line.startswith(("| brc_sac | 2 |", "| sac | 2 |"))]
    assert len(iqm_rows) == 2
    assert "# Tiny grid" in text and "tiny command" in text and "| InvertedPendulum-v5 | min-max |" in text
    assert "![sample_efficiency](sample_efficiency.png)" in text and "![task_curves](task_curves.png)" in text
    section = open(results_md).read()
    assert section.startswith("## Tiny grid") and "(bench/performance_profile.png)" in section

    # Same grid through `sb3-brc bench`: every run is complete, so nothing retrains; the aggregate is rewritten
    cli.main(
        ["bench", "--algos", "brc_sac", "sac", "--tasks", "InvertedPendulum-v5", "--seeds", "0", "1", "--out", out,
         "--steps-per-task", "200", "--eval-every", "100", "--eval-episodes", "1", "--learning-starts", "100",
         "--batch-size", "32", "--width", "16", "--reps", "200", "--no-progress", "--results-md", results_md,
         "--results-title", "Tiny grid"]
    )  # fmt: skip
    for run_dir, mtime in mtimes.items():
        assert os.path.getmtime(os.path.join(run_dir, "evaluations.csv")) == mtime
    # Same bootstrap CIs when aggregated again (seeded)
    assert all(row in open(os.path.join(out, "aggregate.md")).read() for row in iqm_rows)
    section = open(results_md).read()
    assert section.count("## Tiny grid") == 1 and "sb3-brc bench --algos brc_sac sac" in section


def test_interim_aggregate_of_unfinished_runs(tmp_path):
    out = str(tmp_path / "bench")
    settings = BenchSettings(**dict(FLAGS, steps_per_task=300))
    run_benchmark(out, ["sac"], ["InvertedPendulum-v5"], SEEDS, settings, reps=50, progress=False)
    # Seed 1 as a run interrupted after its second evaluation leaves it: status "running", evaluations so far
    done, unfinished = grid(out, ["sac"], ["InvertedPendulum-v5"], SEEDS, settings)
    config, evaluations = (os.path.join(unfinished.run_dir, name) for name in ("config.json", "evaluations.csv"))
    with open(config, "w") as file:
        json.dump(dict(unfinished.config(), status="running"), file)
    with open(evaluations) as file:
        lines = file.readlines()
    with open(evaluations, "w") as file:
        file.writelines(lines[:-1])  # header, 100, 200
    before = os.path.getmtime(evaluations)

    assert load_grid([done, unfinished]).steps == [100, 200, 300]  # the complete run only
    result = run_benchmark(out, ["sac"], ["InvertedPendulum-v5"], SEEDS, settings, reps=50, progress=False, interim=True)
    data = result["data"]
    assert result["runs"] == [] and os.path.getmtime(evaluations) == before  # nothing trained
    assert data.unfinished == [unfinished.key] and data.steps == [100, 200] and data.final["sac"].shape == (2, 1)
    assert data.final_returns("sac", "InvertedPendulum-v5")[1] == read_eval_csv(evaluations)[-1]["mean_return"]
    assert f"**Interim:** 1 run(s) not finished yet ({unfinished.key})" in open(os.path.join(out, "aggregate.md")).read()
    assert "at 200 env steps per task" in result["markdown"]


def test_an_algorithm_without_a_seed_on_every_task_is_a_clear_error(tmp_path):
    # Single-task runs that failed on different seeds for different tasks: no seed covers both tasks
    settings = BenchSettings(**FLAGS)
    specs = grid(str(tmp_path), ["sac"], ["Pendulum-v1", "InvertedPendulum-v5"], SEEDS, settings)
    for spec in specs:
        if (spec.tasks.label, spec.seed) not in (("Pendulum-v1", 0), ("InvertedPendulum-v5", 1)):
            continue  # the failed runs left nothing
        os.makedirs(spec.run_dir)
        row = dict(task=spec.tasks.label, mean_return=1.0, std_return=0.0, success_rate=None, score=None, episodes=1)
        write_eval_rows(os.path.join(spec.run_dir, "evaluations.csv"), [dict(row, timesteps=200, steps_per_task=200)], False)
        with open(os.path.join(spec.run_dir, "random.json"), "w") as file:
            json.dump([dict(row, mean_return=0.0)], file)
        with open(os.path.join(spec.run_dir, "config.json"), "w") as file:
            json.dump(dict(spec.config(), status="complete"), file)
    with pytest.raises(ValueError, match=r"No seed of sac has runs on all tasks .*\(0, 'Pendulum-v1'\), \(1, 'Inv"):
        load_grid(specs)
