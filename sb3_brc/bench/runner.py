"""Running a grid: each unfinished run trains in a worker, checkpointing as it goes, under a progress display.

One per-run function, :func:`run_one`, for every backend: a local process pool
(:mod:`~sb3_brc.bench.local_backend`, the default) or Ray tasks (:mod:`~sb3_brc.bench.ray_backend`). One driver
loop, :func:`drive_grid`, for both: it submits the runs, shows their progress, starts a failed run again (an error,
or a worker that died) up to ``max_retries`` times, each time resuming from the run's last checkpoint, reports a run
that keeps failing with its error without stopping the others, and on Ctrl-C stops the runs in flight, leaving
resumable run directories.
"""

import contextlib
import dataclasses
import functools
import inspect
import json
import os
import shutil
import socket
import tempfile
import time
from collections.abc import Callable, Sequence
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

import numpy as np
import torch as th
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.callbacks import BaseCallback

from sb3_brc.bench.grid import (
    ATTEMPTS,
    CHECKPOINTS,
    WANDB_ID,
    RunSpec,
    is_complete,
    read_json,
    run_files,
    saved_status,
    write_run_files,
)
from sb3_brc.bench.storage import StoredRun
from sb3_brc.envs.vec_env import MultiTaskVecEnv
from sb3_brc.tools.checkpoint import CheckpointCallback, checkpoint_timesteps, load_checkpoint
from sb3_brc.tools.training import per_task_budget, train_and_evaluate, write_json_atomic
from sb3_brc.tools.wandb_logging import open_wandb_run, run_name

#: Seconds between a running run's step-count reports to the progress display
REPORT_SECONDS = 1.0


@dataclass(frozen=True)
class RunProgress:
    """A message from a running run to the driver.

    :param key: The run's key
    :param steps: Env steps per task done
    :param note: Text for the display (``None``: keep the previous one)
    :param pid: The worker process's id (with ``start``)
    :param start: The first message of an attempt (``steps``: where it starts, > 0 when resumed)
    """

    key: str
    steps: int
    note: str | None = None
    pid: int | None = None
    start: bool = False


def build_model(spec: RunSpec, env: MultiTaskVecEnv) -> BaseAlgorithm:
    """The algorithm of a run, with the harness's budget settings on top of the registry defaults."""
    settings = spec.settings
    kwargs = spec.algo_kwargs()
    algo_class = spec.algo.algo_class()
    # Replay capacity per task (the run's transitions, up to this many): an sb3-brc algorithm's own, else the
    # algorithm's default buffer_size (SB3's)
    capacity = (
        getattr(algo_class, "buffer_size_per_task", None) or inspect.signature(algo_class).parameters["buffer_size"].default
    )
    kwargs.update(
        per_task_budget(env.num_tasks, settings.steps_per_task, settings.learning_starts, capacity),
        **spec.update_kwargs(),
        seed=spec.seed,
        device=settings.device,
        verbose=0,
    )
    if settings.batch_size is not None:
        kwargs["batch_size"] = settings.batch_size
    if settings.gradient_steps is not None:
        kwargs["gradient_steps"] = settings.gradient_steps
    return algo_class(spec.algo.policy, env, **kwargs)


def restore_model(spec: RunSpec, env: MultiTaskVecEnv) -> BaseAlgorithm:
    """The run's model from its last checkpoint (replay buffer and RNG states included)."""
    checkpoints = os.path.join(spec.run_dir, CHECKPOINTS)
    return load_checkpoint(checkpoints, env, spec.algo.algo_class(), device=spec.settings.device, **spec.update_kwargs())


def is_resumable(spec: RunSpec) -> bool:
    """An unfinished run with the same settings, a random baseline and a complete checkpoint."""
    return (
        saved_status(spec) == "running"
        and os.path.exists(os.path.join(spec.run_dir, "random.json"))
        and checkpoint_timesteps(os.path.join(spec.run_dir, CHECKPOINTS)) > 0
    )


class _ReportSteps(BaseCallback):
    """Puts the step count into the progress queue at most every :data:`REPORT_SECONDS`."""

    def __init__(self, queue: Any, key: str):
        super().__init__()
        self.queue, self.key, self.last = queue, key, time.monotonic()

    def _on_step(self) -> bool:
        if time.monotonic() - self.last >= REPORT_SECONDS:
            self.queue.put(RunProgress(self.key, self.num_timesteps // self.training_env.num_envs))
            self.last = time.monotonic()
        return True


def _report_evaluation(queue: Any, key: str, rows: list[dict[str, Any]]) -> None:
    mean_return = float(np.mean([row["mean_return"] for row in rows]))
    queue.put(RunProgress(key, rows[0]["steps_per_task"], f"return {mean_return:.4g}"))


def _log_attempt(spec: RunSpec, start_steps: int, fresh: bool) -> None:
    # fresh: the directory held another run (other settings) or none: a new log
    line = dict(
        pid=os.getpid(),
        host=socket.gethostname(),
        start_steps_per_task=start_steps,
        time=datetime.now(timezone.utc).isoformat(timespec="milliseconds"),
    )
    with open(os.path.join(spec.run_dir, ATTEMPTS), "w" if fresh else "a") as file:
        file.write(json.dumps(line) + "\n")


def run_one(spec: RunSpec, queue: Any = None, checkpoint_every: int | None = None) -> dict[str, Any]:
    """Train and evaluate one run, writing its directory; an unfinished run with the same settings resumes from its
    last checkpoint. A run of a stored grid (``spec.storage``) trains in a local staging directory that starts as the
    store's copy of the run and is pushed back as it goes (:class:`~sb3_brc.bench.storage.StoredRun`).

    Returns ``{"key", "status", "wall_s", "start_steps", "files"}`` (``wall_s``: this attempt's; the run's
    ``config.json`` keeps the wall time of all its attempts up to their last evaluation; ``start_steps``: env steps per
    task it resumed at, 0 for a fresh start; ``files``: the run's result files, :func:`~sb3_brc.bench.grid.run_files`,
    for a driver that does not see the worker's directory).

    :param spec: The run
    :param queue: Optional queue receiving :class:`RunProgress` messages: one when the run starts (with the
        worker's pid), then its step count every :data:`REPORT_SECONDS` and after each evaluation
    :param checkpoint_every: Env steps per task between checkpoints (``None``: at each evaluation; 0: none)
    """
    if spec.storage is None:
        result = _run_attempt(spec, queue, checkpoint_every)
        return dict(result, files=run_files(spec))
    staging = tempfile.mkdtemp(prefix="sb3-brc-run-")
    try:
        stored = StoredRun(dataclasses.replace(spec, out=staging))
        stored.pull()
        result = _run_attempt(stored.spec, queue, checkpoint_every, stored)
        return dict(result, files=run_files(stored.spec))
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _run_attempt(spec: RunSpec, queue: Any, checkpoint_every: int | None, stored: StoredRun | None = None) -> dict[str, Any]:
    """:func:`run_one` in the run's directory (``stored``: a staging directory, pushed to the grid's store)."""
    if is_complete(spec):
        return dict(key=spec.key, status="skipped", wall_s=0.0, start_steps=0)
    start = time.time()
    settings, tasks = spec.settings, spec.tasks
    checkpoints = os.path.join(spec.run_dir, CHECKPOINTS)
    resume, same_run = is_resumable(spec), saved_status(spec) is not None
    if not resume:
        shutil.rmtree(checkpoints, ignore_errors=True)  # another run's (other settings), or one without a baseline
    os.makedirs(spec.run_dir, exist_ok=True)
    config_path = os.path.join(spec.run_dir, "config.json")
    # Wall and CPU time of the earlier attempts, up to their last evaluation (a resumed run redoes what came after it)
    earlier = (read_json(config_path) or {}) if resume else {}
    earlier_s, earlier_cpu_s, start_cpu = (
        float(earlier.get("wall_s", 0.0)),
        float(earlier.get("cpu_s", 0.0)),
        time.process_time(),
    )

    def write_config(status: str) -> None:
        # cpu_s: the run's process CPU time (its training and evaluation; env worker processes not counted)
        times = dict(
            wall_s=round(earlier_s + time.time() - start, 1), cpu_s=round(earlier_cpu_s + time.process_time() - start_cpu, 1)
        )
        write_json_atomic(config_path, dict(spec.config(), status=status, **times))

    def on_evaluation(rows: list[dict[str, Any]]) -> None:
        write_config("running")  # the wall time up to this evaluation, for a later attempt
        if stored is not None:
            stored.push_results()
        if queue is not None:
            _report_evaluation(queue, spec.key, rows)

    write_config("running")
    start_steps = checkpoint_timesteps(checkpoints) // len(tasks.task_names) if resume else 0
    _log_attempt(spec, start_steps, fresh=not same_run)
    if stored is not None:
        stored.push_results()
    if queue is not None:
        queue.put(RunProgress(spec.key, start_steps, f"resumed at {start_steps}" if resume else "starting", os.getpid(), True))
    # Only with a timeout: env builders registered without a step_timeout parameter keep working
    timeout = {} if spec.step_timeout is None else dict(step_timeout=spec.step_timeout)
    make_env = functools.partial(spec.algo.make_env, tasks.tasks, tasks.task_names, **timeout)
    callbacks: list[BaseCallback] = [make_callback() for make_callback in spec.algo.callbacks]
    if checkpoint_every != 0:
        on_save = None if stored is None else stored.push_checkpoint
        callbacks.append(CheckpointCallback(checkpoints, checkpoint_every or settings.eval_every, on_save=on_save))
    if queue is not None:
        callbacks.append(_ReportSteps(queue, spec.key))
    # The envs are closed however the run ends: a worker process lives on for the grid's next runs and retries
    with contextlib.ExitStack() as closing:
        env = make_env(spec.seed, tasks.suite)
        closing.callback(env.close)
        # Separate evaluation envs, seeded away from the training envs
        eval_env = make_env(spec.seed + 10_000, tasks.suite, training=False)
        closing.callback(eval_env.close)
        # A resumed attempt (a retry, or the grid run again) continues the run's W&B run
        name, id_file = run_name(spec.algo_name, spec.tasks.label, spec.seed), os.path.join(spec.run_dir, WANDB_ID)
        wandb = closing.enter_context(open_wandb_run(spec.wandb, name, spec.config(), "bench", id_file, resume))
        train_and_evaluate(
            env,
            eval_env,
            functools.partial(restore_model if resume else build_model, spec, env),
            steps_per_task=settings.steps_per_task,
            eval_every=settings.eval_every,
            eval_episodes=settings.eval_episodes,
            eval_csv=os.path.join(spec.run_dir, "evaluations.csv"),
            baseline_json=os.path.join(spec.run_dir, "random.json"),
            seed=spec.seed,
            resume=resume,
            callbacks=callbacks,
            on_evaluation=on_evaluation,
            wandb_run=wandb,
        )
    write_config("complete")
    shutil.rmtree(checkpoints, ignore_errors=True)  # a complete run is never resumed
    if stored is not None:
        stored.push_results()
        stored.remove_checkpoints()
    return dict(key=spec.key, status="done", wall_s=time.time() - start, start_steps=start_steps)


def init_worker(threads: int) -> None:
    """Set up a worker process: headless MuJoCo, ``threads`` torch threads."""
    os.environ.setdefault("MUJOCO_GL", "disable")
    th.set_num_threads(threads)


class GridBackend:
    """Where the runs of :func:`drive_grid` execute: submits runs, waits for them, relays their progress.

    A context manager: leaving it releases the workers.
    """

    def submit(self, spec: RunSpec) -> Any:
        """Start :func:`run_one` on ``spec`` (an attempt); returns a handle."""
        raise NotImplementedError

    def wait(self, handles: list[Any], timeout: float) -> list[Any]:
        """The handles among ``handles`` whose run has ended, waiting at most ``timeout`` seconds for one."""
        raise NotImplementedError

    def result(self, handle: Any, spec: RunSpec) -> dict[str, Any]:
        """The result of an ended run (:func:`run_one`'s); raises the run's error when it failed."""
        raise NotImplementedError

    def messages(self) -> list[RunProgress]:
        """The progress messages received since the last call."""
        raise NotImplementedError

    def stop(self, handles: list[Any], pids: Sequence[int]) -> None:
        """Stop the runs in flight (Ctrl-C); ``pids``: the worker processes of those that started."""
        raise NotImplementedError

    def close(self) -> None:
        """Release the workers."""

    def __enter__(self) -> "GridBackend":
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.close()


def _error_text(error: BaseException) -> str:
    return f"{type(error).__name__}: {error}".strip()


class _GridDisplay:
    """The progress display: a bar for the grid (runs done / running / failed, ETA from the steps of all runs)
    and one per run in flight; a line per finished, retried or failed run."""

    def __init__(self, runs: Sequence[RunSpec], done: int, console: Console, enabled: bool):
        self.total, self.done, self.failed, self.retrying = len(runs), done, 0, 0
        self.steps = {spec.key: spec.settings.steps_per_task for spec in runs}
        columns = (TextColumn("{task.description}"), BarColumn(), TextColumn("{task.fields[count]}"))
        self.bar = Progress(
            *columns,
            TextColumn("{task.fields[note]}"),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
            console=console,
            disable=not enabled,
        )
        self.grid = self.bar.add_task("runs", total=sum(self.steps.values()), count="", note="")
        self.rows: dict[str, Any] = {}
        self.at: dict[str, int] = {}  # steps per task of the runs in flight
        self.completed = 0  # steps per task of the runs that ended

    def __enter__(self) -> "_GridDisplay":
        self.bar.__enter__()
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.bar.__exit__(*exc_info)

    def skipped(self, key: str) -> None:
        self.completed += self.steps[key]

    def progress(self, message: RunProgress) -> None:
        if message.key not in self.rows:
            self.rows[message.key] = self.bar.add_task(f"  {message.key}", total=self.steps[message.key], count="", note="")
        self.at[message.key] = message.steps
        fields: dict[str, Any] = dict(count=f"{message.steps}/{self.steps[message.key]} steps/task")
        if message.note is not None:
            fields["note"] = message.note
        self.bar.update(self.rows[message.key], completed=message.steps, **fields)

    def ended(self, key: str, status: str, line: str) -> None:
        """A run's attempt ended: ``status`` done / skipped / failed / retry."""
        if key in self.rows:
            self.bar.remove_task(self.rows.pop(key))
        self.at.pop(key, None)
        if status == "retry":
            self.retrying += 1
        else:
            self.completed += self.steps[key]
            self.done += status != "failed"
            self.failed += status == "failed"
        self.bar.console.print(f"{status:>7s}  {key}  ({line})")

    def refresh(self, in_flight: int) -> None:
        running = len(self.rows)
        count = f"{self.done}/{self.total} done"
        note = f"{running} running, {in_flight - running} queued, {self.failed} failed, {self.retrying} retried"
        self.bar.update(self.grid, completed=self.completed + sum(self.at.values()), count=count, note=note)


class _Ledger:
    """What :func:`drive_grid` knows of each run: attempts, their errors, steps redone, worker pids."""

    def __init__(self, runs: Sequence[RunSpec]):
        self.attempts = {spec.key: 0 for spec in runs}
        self.errors: dict[str, list[str]] = {spec.key: [] for spec in runs}
        self.redone = dict.fromkeys(self.attempts, 0)
        self.reached: dict[str, int] = {}  # steps per task a failed attempt had reported (until the next one starts)
        self.pids: dict[str, int] = {}  # the worker of each run's current attempt
        self.any_started = False  # a run has started on the backend (its workers do come up)

    def read(self, messages: list[RunProgress], in_flight: set[str], display: "_GridDisplay | None") -> None:
        for message in messages:
            if message.key not in in_flight:
                continue  # late news of a run that has ended
            if message.start and message.pid is not None:
                self.pids[message.key] = message.pid
                self.any_started = True
                self.redone[message.key] += max(0, self.reached.pop(message.key, message.steps) - message.steps)
            if display is not None:
                display.progress(message)

    def failed(self, key: str, error: str, max_retries: int, display: "_GridDisplay") -> dict[str, Any] | None:
        """``None`` when the run is to be started again, else its failed result."""
        self.pids.pop(key, None)
        self.reached[key] = display.at.get(key, self.reached.get(key, 0))
        if self.attempts[key] <= max_retries:
            self.errors[key].append(error)
            display.ended(key, "retry", f"attempt {self.attempts[key] + 1}/{max_retries + 1} after {error}")
            return None
        return dict(key=key, status="failed", wall_s=0.0, start_steps=0, error=error)

    def ended(self, result: dict[str, Any], display: "_GridDisplay") -> dict[str, Any]:
        key = result["key"]
        self.pids.pop(key, None)
        result.update(attempts=self.attempts[key], redone_steps=self.redone[key], errors=self.errors[key])
        detail = result.get("error") or f"{result['wall_s']:.0f} s"
        if result.get("start_steps"):
            detail += f", resumed at {result['start_steps']} steps/task"
        display.ended(key, result["status"], detail)
        return result


def drive_grid(
    runs: Sequence[RunSpec],
    backend: Callable[[Console], GridBackend],
    max_retries: int = 2,
    progress: bool = True,
    description: str = "",
) -> list[dict[str, Any]]:
    """Run the unfinished runs of a grid on a backend; finished ones are skipped.

    A run that fails (raises, or its worker dies) is submitted again, up to ``max_retries`` times; each attempt
    resumes from the run's last checkpoint. A run that still fails is reported with its error and does not stop
    the others. Ctrl-C stops the runs in flight (their directories keep their last checkpoint, so running the
    grid again resumes them) and raises ``KeyboardInterrupt``.

    :param runs: The grid's runs
    :param backend: Creates the backend (only when a run is left to do), given the display's console for its notes
    :param max_retries: Further attempts of a failed run
    :param progress: Show the progress display
    :param description: Where the runs go, for the first line of the display
    :return: One dict per run: ``key``, ``status`` (done / skipped / failed), ``wall_s`` (of its last attempt),
        ``attempts``, ``start_steps`` (steps per task its last attempt resumed at), ``redone_steps`` (steps per task
        trained again after failures: at least the steps reported before each failure, minus where the next attempt
        resumed) and for a failed run ``error`` (the last attempt's); ``errors``: the errors of the retried attempts
    """
    console = Console(soft_wrap=True)  # whole lines, also with --no-progress: logs stay greppable
    results: list[dict[str, Any]] = [
        dict(key=spec.key, status="skipped", wall_s=0.0, attempts=0) for spec in runs if is_complete(spec)
    ]
    pending = [spec for spec in runs if not is_complete(spec)]
    console.print(f"{len(runs)} runs: {len(results)} already complete, {len(pending)} to run {description}".rstrip())
    if not pending:
        return results
    ledger = _Ledger(pending)
    with _GridDisplay(runs, len(results), console, progress) as display, backend(display.bar.console) as grid_backend:
        for result in results:
            display.skipped(result["key"])
        in_flight: dict[Any, RunSpec] = {}
        noted_elsewhere = False  # the note on runs written on another filesystem, shown once

        def keep_files(spec: RunSpec, files: dict[str, bytes]) -> None:
            nonlocal noted_elsewhere
            if is_complete(spec):  # the worker wrote into this run directory: a shared filesystem
                return
            write_run_files(spec, files)  # a store's run (here a mirror), or a worker's disk this machine does not see
            if spec.storage is None and not noted_elsewhere:
                display.bar.console.print(
                    f"{spec.run_dir} was written on another filesystem: the driver writes each run's results into its "
                    "--out (checkpoints stay on the workers' nodes: make --out shared or a store URI, see "
                    "docs/guide/scaling.md).",
                )
                noted_elsewhere = True

        def submit(spec: RunSpec) -> None:
            ledger.attempts[spec.key] += 1
            in_flight[grid_backend.submit(spec)] = spec

        try:
            for spec in pending:
                submit(spec)
            while in_flight:
                finished = grid_backend.wait(list(in_flight), timeout=0.5)
                ledger.read(grid_backend.messages(), {spec.key for spec in in_flight.values()}, display)
                for handle in finished:
                    spec = in_flight.pop(handle)
                    try:
                        result = grid_backend.result(handle, spec)
                        keep_files(spec, result.pop("files"))
                    except Exception as error:  # report; start it again or go on with the grid
                        if isinstance(error, BrokenProcessPool) and spec.key not in ledger.pids and ledger.any_started:
                            # It waited in a pool that another run's dying worker broke: it never started, so this
                            # was no attempt of its own (without any run ever starting, the workers themselves fail)
                            ledger.attempts[spec.key] -= 1
                            submit(spec)
                            continue
                        failure = ledger.failed(spec.key, _error_text(error), max_retries, display)
                        if failure is None:
                            submit(spec)
                            continue
                        result = failure
                    results.append(ledger.ended(result, display))
                display.refresh(len(in_flight))
        except KeyboardInterrupt:
            keys = {spec.key for spec in in_flight.values()}
            ledger.read(grid_backend.messages(), keys, None)  # runs that started since the last look
            grid_backend.stop(list(in_flight), [pid for key, pid in ledger.pids.items() if key in keys])
            console.print(
                f"Interrupted: {len(in_flight)} run(s) stopped at their last checkpoint; "
                "run the same command again to resume them.",
            )
            raise
    return results
