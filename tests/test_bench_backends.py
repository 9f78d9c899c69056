"""Grid backends (sb3_brc.bench.runner, sb3_brc.bench.ray_backend): the local process pool and Ray tasks run the same
per-run function; killed workers are retried and resume from their checkpoint; a run that keeps failing is reported;
Ctrl-C leaves resumable runs. The Ray tests run a real local Ray instance (2 CPUs)."""

import argparse
import dataclasses
import functools
import importlib.util
import json
import os
import pathlib
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from datetime import datetime

import pytest
from envs import HangEnv

from sb3_brc import cli
from sb3_brc.bench import ALGOS, BenchSettings, RunSpec, RunTasks, aggregate, grid, load_grid, ray_backend, run_benchmark
from sb3_brc.bench.grid import ATTEMPTS, CHECKPOINTS, is_complete, run_files, saved_status, write_run_files
from sb3_brc.bench.harness import run_runs
from sb3_brc.bench.local_backend import run_grid
from sb3_brc.bench.ray_backend import RayBackend, run_grid_ray
from sb3_brc.bench.runner import RunProgress, drive_grid, is_resumable
from sb3_brc.bench.settings import RunnerSettings, add_setting_flags, settings_from_args
from sb3_brc.tools.checkpoint import checkpoint_timesteps
from sb3_brc.tools.report import read_eval_csv

requires_ray = pytest.mark.skipif(
    importlib.util.find_spec("ray") is None, reason="the Ray backend needs the ray extra: pip install sb3-brc[ray]"
)
# Small runs: a checkpoint at each evaluation (every 100 steps per task)
FAST = dict(eval_every=100, eval_episodes=1, learning_starts=100, batch_size=32, gradient_steps=1, width=16)
BACKENDS = ["local", pytest.param("ray", marks=requires_ray)]


@pytest.fixture(scope="module")
def ray_session():
    """A local Ray instance with 2 CPUs for this module's tests (the backend joins it)."""
    import ray

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ray
    ray.shutdown()


def _run(backend: str, runs: list[RunSpec], request: pytest.FixtureRequest, **kwargs) -> list[dict]:
    if backend == "ray":
        request.getfixturevalue("ray_session")
        return run_grid_ray(runs, workers=2, **kwargs)
    return run_grid(runs, workers=2, **kwargs)


def _attempts(spec: RunSpec) -> list[dict]:
    path = os.path.join(spec.run_dir, ATTEMPTS)
    if not os.path.exists(path):
        return []
    with open(path) as file:
        return [json.loads(line) for line in file.read().splitlines()]


def _after_first_checkpoint(spec: RunSpec, action: Callable[[list[dict]], None], ready=lambda: True) -> threading.Event:
    """Calls ``action(attempts)`` from a thread once the run has a checkpoint and ``ready()``, unless the returned
    event is set first."""
    cancelled = threading.Event()

    def watch():
        while not (checkpoint_timesteps(os.path.join(spec.run_dir, CHECKPOINTS)) > 0 and ready()):
            if cancelled.wait(0.02):
                return
        action(_attempts(spec))

    threading.Thread(target=watch, daemon=True).start()
    return cancelled


def _unknown_task_run(out: str, settings: BenchSettings) -> RunSpec:
    # A run that fails in its worker at every attempt (as a task whose package a worker lacks would)
    return RunSpec("sac", ALGOS["sac"], RunTasks("NoSuchTask-v0", ("NoSuchTask-v0",), ("NoSuchTask-v0",)), 0, settings, out)


def _evaluation_steps(spec: RunSpec) -> list[int]:
    return [row["steps_per_task"] for row in read_eval_csv(os.path.join(spec.run_dir, "evaluations.csv"))]


def test_runner_settings_flags_and_checks():
    parser = argparse.ArgumentParser()
    add_setting_flags(parser, RunnerSettings)
    assert settings_from_args(RunnerSettings, parser.parse_args([])) == RunnerSettings()
    args = parser.parse_args(["--backend", "ray", "--address", "auto", "--cpus-per-run", "2", "--gpus-per-run", "0.5"])
    assert settings_from_args(RunnerSettings, args) == RunnerSettings("ray", address="auto", cpus_per_run=2, gpus_per_run=0.5)
    with pytest.raises(SystemExit):
        parser.parse_args(["--backend", "slurm"])
    with pytest.raises(ValueError, match="Ray options: add --backend ray"):
        RunnerSettings(gpus_per_run=1).check()
    with pytest.raises(ValueError, match="max_retries must be >= 0"):
        RunnerSettings(max_retries=-1).check()
    with pytest.raises(ValueError, match="cpus_per_run must be > 0"):
        RunnerSettings("ray", cpus_per_run=0).check()
    assert settings_from_args(RunnerSettings, parser.parse_args(["--step-timeout", "30"])).step_timeout == 30.0
    with pytest.raises(ValueError, match="step_timeout must be a positive"):
        RunnerSettings(step_timeout=0).check()


def test_a_hanging_env_fails_its_run_and_the_retry_resumes_from_the_checkpoint(tmp_path, capsys):
    # Step 101 of each env it builds never returns: right after the checkpoint at 100 steps, in every attempt
    stuck = RunTasks("stuck", (functools.partial(HangEnv, hang_after=100),), ("stuck",))
    run = RunSpec("brc_sac", ALGOS["brc_sac"], stuck, 0, BenchSettings(steps_per_task=300, **FAST), str(tmp_path))
    (result,) = run_runs([run], RunnerSettings(max_retries=1, step_timeout=2), progress=False)
    assert result["status"] == "failed" and result["attempts"] == 2
    assert "Task 'stuck' did not return from step 101 within 2 s" in result["error"]
    first, second = _attempts(run)
    assert first["start_steps_per_task"] == 0 and second["start_steps_per_task"] == 100  # resumed from the checkpoint
    assert saved_status(run) == "running" and is_resumable(run)
    output = capsys.readouterr().out  # without the progress display, its lines still say what happened
    assert f"retry  {run.key}" in output and f"failed  {run.key}" in output


def test_missing_ray_names_the_extra(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # what `import ray` meets without the extra
    runs = grid(str(tmp_path), ["sac"], ["Pendulum-v1"], [0], BenchSettings(steps_per_task=100, **FAST))
    with pytest.raises(ImportError, match=r"pip install sb3-brc\[ray\]"):
        run_grid_ray(runs)


def test_written_back_result_files_complete_a_run(tmp_path):
    settings = BenchSettings(steps_per_task=100, **FAST)
    (worker_spec,) = grid(str(tmp_path / "worker"), ["sac"], ["InvertedPendulum-v5"], [0], settings)
    run_grid([worker_spec], progress=False)
    driver_spec = dataclasses.replace(worker_spec, out=str(tmp_path / "driver"))
    assert saved_status(driver_spec) is None
    write_run_files(driver_spec, run_files(worker_spec))
    assert is_complete(driver_spec) and _evaluation_steps(driver_spec) == [100]
    assert sorted(os.listdir(driver_spec.run_dir)) == sorted(["config.json", "evaluations.csv", "random.json", ATTEMPTS])


@pytest.mark.parametrize("backend", BACKENDS)
def test_killed_worker_is_retried_from_its_checkpoint_and_a_failing_run_is_reported(backend, tmp_path, request, capsys):
    settings = BenchSettings(steps_per_task=600, **FAST)  # long enough to be killed before its end
    (run,) = grid(str(tmp_path), ["sac"], ["InvertedPendulum-v5"], [0], settings)
    failing = _unknown_task_run(str(tmp_path), settings)
    killed = []

    def kill(attempts):
        killed.append(attempts[-1]["pid"])
        os.kill(attempts[-1]["pid"], signal.SIGKILL)  # the worker process running the run

    # Kill once the failing run is done with its two attempts (so that only the killed run is in flight)
    watcher = _after_first_checkpoint(run, kill, ready=lambda: len(_attempts(failing)) == 2)
    results = {r["key"]: r for r in _run(backend, [run, failing], request, max_retries=1, progress=True)}
    watcher.set()
    output = capsys.readouterr().out

    done = results[run.key]
    assert killed and done["status"] == "done" and done["attempts"] == 2
    assert ("WorkerCrashedError" if backend == "ray" else "BrokenProcessPool") in done["errors"][0]
    # The second attempt resumed from the checkpoint the first one left: a later start, fresh worker
    first, second = _attempts(run)
    assert len(_attempts(failing)) == 2 and first["start_steps_per_task"] == 0 and first["pid"] == killed[0]
    assert second["start_steps_per_task"] == done["start_steps"] >= 100 and second["pid"] != killed[0]
    assert done["redone_steps"] >= 0
    # Evaluations complete and duplicate-free; the complete run keeps no checkpoint
    assert _evaluation_steps(run) == [100, 200, 300, 400, 500, 600]
    assert is_complete(run) and not os.path.exists(os.path.join(run.run_dir, CHECKPOINTS))

    bad = results[failing.key]
    assert bad["status"] == "failed" and bad["attempts"] == 2 and "Unknown task 'NoSuchTask-v0'" in bad["error"]
    assert "retry  sac/InvertedPendulum-v5/seed0" in output and "failed  sac/NoSuchTask-v0/seed0" in output


def test_a_dying_worker_costs_no_attempt_of_the_runs_waiting_in_the_pool(tmp_path):
    # One worker: the second run waits in the pool while the first one's worker is killed (after its first
    # checkpoint, at 100 of 300 steps), which breaks the pool
    settings = BenchSettings(steps_per_task=300, **FAST)
    first, waiting = grid(str(tmp_path), ["sac"], ["InvertedPendulum-v5"], [0, 1], settings)
    watcher = _after_first_checkpoint(first, lambda attempts: os.kill(attempts[-1]["pid"], signal.SIGKILL))
    results = {r["key"]: r for r in run_grid([first, waiting], workers=1, max_retries=1, progress=False)}
    watcher.set()
    assert results[first.key]["attempts"] == 2 and "BrokenProcessPool" in results[first.key]["errors"][0]
    # The run's wall time counts the killed attempt up to its last evaluation too, not just the last attempt
    with open(os.path.join(first.run_dir, "config.json")) as file:
        assert json.load(file)["wall_s"] > results[first.key]["wall_s"] + 0.1
    assert results[waiting.key]["status"] == "done" and results[waiting.key]["attempts"] == 1
    assert results[waiting.key]["errors"] == [] and len(_attempts(waiting)) == 1


@pytest.mark.parametrize("backend", BACKENDS)
def test_ctrl_c_stops_the_grid_and_leaves_resumable_runs(backend, tmp_path, request):
    # long enough not to end before Ctrl-C stops it (1500 steps did end first on a fast CPU with the Ray backend)
    flags = dict(steps_per_task=4000, **FAST)
    (run,) = grid(str(tmp_path), ["sac"], ["InvertedPendulum-v5"], [0], BenchSettings(**flags))
    # `sb3-brc bench` in its own process (as in a terminal; the Ray backend joins this module's Ray instance), and
    # Ctrl-C (SIGINT) to it once its run has a checkpoint. The child restores Python's SIGINT handler: a test run
    # started in the background by a non-interactive shell (`pytest ... &`) ignores SIGINT, and children inherit that
    main = "import runpy, signal; signal.signal(signal.SIGINT, signal.default_int_handler); "
    main += "runpy.run_module('sb3_brc', run_name='__main__')"
    argv = [sys.executable, "-c", main, "bench", "--backend", backend, "--algos", "sac", "--tasks", "InvertedPendulum-v5",
            "--seeds", "0", "--out", str(tmp_path), "--no-progress"]  # fmt: skip
    if backend == "ray":
        argv += ["--address", request.getfixturevalue("ray_session").get_runtime_context().gcs_address]
    for name, value in flags.items():
        argv += [f"--{name.replace('_', '-')}", str(value)]
    process = subprocess.Popen(argv, env=dict(os.environ, MUJOCO_GL="disable"), stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True)  # fmt: skip
    try:
        deadline = time.time() + 300
        while checkpoint_timesteps(os.path.join(run.run_dir, CHECKPOINTS)) == 0:
            assert process.poll() is None, process.communicate()[0]
            assert time.time() < deadline, "no checkpoint within 300 s"
            time.sleep(0.05)
        process.send_signal(signal.SIGINT)
        output = process.communicate(timeout=120)[0]
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == cli.EXIT_INTERRUPTED, output
    assert "run the same command again to resume them" in output and "Traceback" not in output, output
    assert saved_status(run) == "running" and is_resumable(run)
    # The same grid again resumes the run from its checkpoint
    (result,) = _run(backend, [run], request, progress=False)
    assert result["status"] == "done" and result["start_steps"] >= 100
    assert _evaluation_steps(run) == list(range(100, 4100, 100)) and len(_attempts(run)) == 2


@requires_ray
def test_ray_grid_matches_the_local_backend(tmp_path, ray_session):
    pytest.importorskip("rliable")
    flags = dict(steps_per_task=200, **FAST)
    algos, tasks, seeds = ["brc_sac", "sac"], ["InvertedPendulum-v5", "InvertedDoublePendulum-v5"], [0, 1]
    local = run_benchmark(str(tmp_path / "local"), algos, tasks, seeds, BenchSettings(**flags), workers=2, reps=100,
                          command="cmd", progress=False)  # fmt: skip
    assert sorted(r["status"] for r in local["runs"]) == ["done"] * 8
    # `sb3-brc bench --backend ray` (it joins this process's Ray session; without one it starts a local instance)
    argv = ["bench", "--backend", "ray", "--workers", "2", "--algos", *algos, "--tasks", *tasks, "--seeds", "0", "1",
            "--out", str(tmp_path / "ray"), "--reps", "100", "--no-progress"]  # fmt: skip
    for name, value in flags.items():
        argv += [f"--{name.replace('_', '-')}", str(value)]
    cli.main(argv)
    # Same evaluations, run by run, and the same aggregate (the runs are seeded)
    for spec in grid(str(tmp_path / "ray"), algos, tasks, seeds, BenchSettings(**flags)):
        run_dir = os.path.relpath(spec.run_dir, spec.out)
        ray_rows, local_rows = ((tmp_path / out / run_dir / "evaluations.csv").read_text() for out in ("ray", "local"))
        assert ray_rows == local_rows, spec.key
    # Never more runs at a time than Ray's 2 CPUs (a run waiting on Ray, as for a blocking queue put, lends its CPU)
    spans = []
    for spec in grid(str(tmp_path / "ray"), algos, tasks, seeds, BenchSettings(**flags)):
        (attempt,) = _attempts(spec)
        start = datetime.fromisoformat(attempt["time"]).timestamp()
        spans.append((start, start + json.loads((pathlib.Path(spec.run_dir) / "config.json").read_text())["wall_s"] - 0.3))
    assert max(sum(start <= t < end for start, end in spans) for t, _ in spans) <= 2, spans
    ray_aggregate = aggregate(load_grid(grid(str(tmp_path / "ray"), algos, tasks, seeds, BenchSettings(**flags))), reps=100)
    for name in ("point", "ci", "poi", "curves"):
        assert ray_aggregate[name] == local["aggregate"][name], name
    assert "| brc_sac | 2 |" in (tmp_path / "ray" / "aggregate.md").read_text()


@requires_ray
def test_ray_driver_writes_back_results_from_another_filesystem(tmp_path, ray_session, capsys):
    settings = BenchSettings(steps_per_task=100, **FAST)
    (driver_spec,) = grid(str(tmp_path / "driver-disk"), ["sac"], ["InvertedPendulum-v5"], [0], settings)

    class OtherDiskBackend(RayBackend):
        def submit(self, spec):  # the worker writes where the driver does not look
            return super().submit(dataclasses.replace(spec, out=str(tmp_path / "worker-disk")))

    (result,) = drive_grid([driver_spec], lambda console: OtherDiskBackend(None, 1, 1.0, 0.0, threads=1), progress=False)
    assert result["status"] == "done" and "files" not in result
    assert "was written on another filesystem" in capsys.readouterr().out
    assert is_complete(driver_spec) and _evaluation_steps(driver_spec) == [100]
    assert (tmp_path / "worker-disk").joinpath(*driver_spec.run_path, "config.json").exists()


@requires_ray
def test_a_killed_progress_relay_costs_no_run(tmp_path, ray_session, monkeypatch, capsys):
    # The grid's own Ray actor (the progress relay) killed mid-grid: Ray restarts it, the driver carries on without
    # the lost messages, every run finishes in its first attempt and the aggregate is written
    pytest.importorskip("rliable")
    backends = []
    original_init = RayBackend.__init__

    def recording_init(self, *args, **kwargs):
        original_init(self, *args, **kwargs)
        backends.append(self)

    monkeypatch.setattr(RayBackend, "__init__", recording_init)
    flags = dict(steps_per_task=400, **FAST)
    runs = grid(str(tmp_path), ["sac"], ["InvertedPendulum-v5", "Pendulum-v1"], [0], BenchSettings(**flags))
    killed = []

    def kill_relay(_):
        pid = ray_session.get(backends[0].relay.__ray_call__.remote(lambda relay: os.getpid()))
        os.kill(pid, signal.SIGKILL)
        killed.append(pid)

    watcher = _after_first_checkpoint(runs[0], kill_relay, ready=lambda: bool(backends))
    argv = ["bench", "--backend", "ray", "--workers", "2", "--algos", "sac", "--tasks", "InvertedPendulum-v5",
            "Pendulum-v1", "--seeds", "0", "--out", str(tmp_path), "--reps", "100"]  # fmt: skip
    for name, value in flags.items():
        argv += [f"--{name.replace('_', '-')}", str(value)]
    cli.main(argv)
    watcher.set()
    assert killed
    for spec in runs:
        assert is_complete(spec) and len(_attempts(spec)) == 1, spec.key
        assert _evaluation_steps(spec) == [100, 200, 300, 400]
    assert "| sac | 1 |" in (tmp_path / "aggregate.md").read_text()


@requires_ray
def test_a_relay_call_the_driver_stopped_waiting_for_still_delivers_its_messages(ray_session, monkeypatch):
    # While the relay is busy or restarting, the driver's wait for its messages times out; the same call must be waited
    # for next time, or the messages it takes when the relay answers are lost
    monkeypatch.setattr(ray_backend, "RELAY_TIMEOUT_SECONDS", 0.05)
    with RayBackend(None, 1, 1.0, 0.0, threads=1) as backend:
        ray_session.get(backend.relay.put.remote(RunProgress("sac/Pendulum-v1/seed0", 100)))
        busy = backend.relay.__ray_call__.remote(lambda relay: time.sleep(1.0))  # an actor runs one call at a time
        assert backend.messages() == []
        ray_session.get(busy)
        assert [(message.key, message.steps) for message in backend.messages()] == [("sac/Pendulum-v1/seed0", 100)]
