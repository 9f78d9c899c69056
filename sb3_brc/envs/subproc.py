"""Subprocess envs with a deadline: a ``step()`` or ``reset()`` that does not return in time is a fault.

A task whose ``step()`` never returns (a simulator stuck in a C loop, a deadlocked renderer, a remote env that
stopped answering) would otherwise hang training forever. :class:`TimeoutSubprocVecEnv` runs each env in its own
process (SB3's ``SubprocVecEnv``) and waits at most ``step_timeout`` seconds for each vector step or reset. When a
worker does not answer in time it ends that worker (``SIGTERM``, then ``SIGKILL``), shuts the other workers down
and raises :class:`EnvStepTimeout`, naming the task and the step. The exception leaves ``learn()`` like any other
error, so no callback runs after it: the run's last checkpoint (``sb3_brc.tools.checkpoint``) is the one written
before the hang, and a retry resumes from it.

Why only subprocess envs: a step running in the training process itself (``DummyVecEnv``) cannot be interrupted
safely. A ``SIGALRM`` handler (or any Python-level timer) only runs between Python bytecodes, so it cannot
interrupt a MuJoCo (or other C extension) call that holds the GIL; a watchdog thread can notice the hang but can
neither stop the main thread nor free what the stuck call holds. The one reliable way to end a hung step is to end
the process running it, and in-process that is the training process, model and replay buffer included: the same
outcome as a crash, which an outer supervisor (a wall-clock limit on the whole run, the benchmark's retries)
handles by resuming from the last checkpoint. ``step_timeout`` therefore requires subprocess envs.
"""

import math
import multiprocessing as mp
import numbers
import time
import traceback
from collections.abc import Callable, Sequence
from typing import Any, SupportsFloat

import gymnasium as gym
import numpy as np
from stable_baselines3.common.vec_env import SubprocVecEnv
from stable_baselines3.common.vec_env.base_vec_env import VecEnvObs, VecEnvStepReturn
from stable_baselines3.common.vec_env.subproc_vec_env import _stack_obs

#: Seconds a worker gets to exit after "close" (or after SIGTERM) before it is killed
SHUTDOWN_GRACE_S = 5.0


class EnvStepTimeout(RuntimeError):
    """A sub-env's ``step()`` or ``reset()`` did not return within the timeout. When it is raised, the stuck
    workers have been ended and the vector env is closed: build a new env (or resume the run) to go on.

    :param tasks: Names of the sub-envs that did not answer (the first is :attr:`task`)
    :param step: The env step that hung (``operation="step"``: the sub-env's ``step``-th step since the vector env
        was built, the same count for every sub-env as all of them step together); for a reset, the steps before it
    :param timeout: The timeout, in seconds
    :param operation: ``"step"`` or ``"reset"``
    """

    def __init__(self, tasks: Sequence[str], step: int, timeout: float, operation: str = "step"):
        self.tasks, self.step, self.timeout, self.operation = tuple(tasks), step, timeout, operation
        names = ", ".join(repr(name) for name in self.tasks)
        what = f"step {step}" if operation == "step" else f"reset (after {step} steps)"
        super().__init__(
            f"Task {names} did not return from {what} within {timeout:g} s (step_timeout): its worker process was "
            "ended and the env closed."
        )

    @property
    def task(self) -> str:
        """Name of the (first) task that did not answer."""
        return self.tasks[0]

    def __reduce__(self):  # picklable with its fields, so it crosses process boundaries (process pools, Ray)
        return type(self), (self.tasks, self.step, self.timeout, self.operation)


class EnvWorkerError(RuntimeError):
    """A task running in its own process raised, or its process died: the task's name and what happened there
    (the worker's traceback, or its exit code), instead of SB3's bare ``EOFError`` from the broken pipe.

    :param task: Name of the task
    :param details: The worker's traceback, or how its process ended
    """

    def __init__(self, task: str, details: str):
        self.task, self.details = task, details
        super().__init__(f"Task {task!r} failed in its worker process:\n{details.rstrip()}")

    def __reduce__(self):  # picklable with its fields, so it crosses process boundaries (process pools, Ray)
        return type(self), (self.task, self.details)


#: Info key under which a worker's task reports the traceback of an exception (:class:`ReportErrors`)
WORKER_ERROR_KEY = "sb3_brc_worker_error"


class ReportErrors(gym.Wrapper):
    """Runs in a worker process around its task: an exception in ``step()`` or ``reset()`` becomes a last,
    terminal step whose info holds the traceback under :data:`WORKER_ERROR_KEY`, which the parent's multi-task env
    raises as :class:`EnvWorkerError`. SB3's worker would die instead and leave the parent a bare ``EOFError``,
    the real error only in the worker's stderr. The placeholder observation (zeros) never reaches the learner."""

    def reset(self, **kwargs: Any) -> tuple[Any, dict]:
        try:
            return self.env.reset(**kwargs)
        except Exception:
            return self._placeholder(), {WORKER_ERROR_KEY: traceback.format_exc()}

    def step(self, action: Any) -> tuple[Any, SupportsFloat, bool, bool, dict]:
        try:
            return self.env.step(action)
        except Exception:
            return self._placeholder(), 0.0, True, False, {WORKER_ERROR_KEY: traceback.format_exc()}

    def _placeholder(self) -> Any:
        space = self.observation_space
        return np.zeros(space.shape, space.dtype)


def raise_worker_errors(infos: Sequence[dict], names: Sequence[str]) -> None:
    """Raise :class:`EnvWorkerError` for the first task whose info carries a worker's traceback."""
    for info, name in zip(infos, names, strict=True):
        if WORKER_ERROR_KEY in info:
            raise EnvWorkerError(name, info[WORKER_ERROR_KEY])


def wait_for_answers(venv: SubprocVecEnv, names: Sequence[str], timeout: float = math.inf) -> list[int]:
    """Wait up to ``timeout`` seconds for every worker of a vector env that is waiting on them; for one whose process
    has died, shut the env down and raise :class:`EnvWorkerError`. With the ``fork`` start method a dead worker's
    pipe never reports its end (the other workers inherited its write end): a plain receive would wait forever.
    Returns the indices of the workers with no answer by then."""
    deadline = time.monotonic() + timeout
    for i, (remote, process, name) in enumerate(zip(venv.remotes, venv.processes, names, strict=True)):
        while not remote.poll(max(0.0, min(1.0, deadline - time.monotonic()))):
            if process.exitcode is not None:
                shut_down(venv, [i])
                raise _ended(process, name)
            if time.monotonic() >= deadline:
                break
    return [i for i, remote in enumerate(venv.remotes) if not remote.poll(0)]


def _ended(process: mp.process.BaseProcess, name: str) -> EnvWorkerError:
    code = process.exitcode or 0
    how = f"signal {-code}" if code < 0 else f"exit code {code}"
    return EnvWorkerError(name, f"its process ended ({how}); its own output above may say why")


def dead_worker_error(venv: Any, names: Sequence[str]) -> EnvWorkerError | None:
    """For a broken pipe to a subprocess vector env: shut it down and return the error naming the first task whose
    process has died (``None`` if none has)."""
    if not isinstance(venv, SubprocVecEnv):
        return None
    for i, (process, name) in enumerate(zip(venv.processes, names, strict=True)):
        process.join(0.5)  # a dying worker may still be exiting
        if process.exitcode is not None:
            shut_down(venv, [i])
            return _ended(process, name)
    return None


def check_step_timeout(step_timeout: float) -> float:
    """``step_timeout`` as a float, or a ``ValueError`` unless it is a positive finite number of seconds."""
    if isinstance(step_timeout, bool) or not isinstance(step_timeout, numbers.Real):
        raise TypeError(f"step_timeout must be a number of seconds, got {step_timeout!r}")
    if not (math.isfinite(step_timeout) and step_timeout > 0):
        raise ValueError(f"step_timeout must be a positive, finite number of seconds, got {step_timeout!r}")
    return float(step_timeout)


class TimeoutSubprocVecEnv(SubprocVecEnv):
    """SB3's ``SubprocVecEnv`` that waits at most ``step_timeout`` seconds for each vector ``step`` and ``reset``.

    The deadline is per vector step: all workers step in parallel and must all have answered within
    ``step_timeout`` seconds of the wait starting. A worker that has not is ended (``SIGTERM``, ``SIGKILL`` if it
    is still alive :data:`SHUTDOWN_GRACE_S` seconds later), the other workers are shut down, the env is closed and
    :class:`EnvStepTimeout` is raised. Building the envs (the constructor returns once every worker has built
    its env) and the other worker calls (``get_attr``, ``env_method``, ...) are not timed.
    :meth:`~TimeoutSubprocVecEnv.close` is bounded too: a worker still busy after ``step_timeout`` seconds is ended
    instead of waited for.

    Choose the timeout well above the slowest legitimate step, including the env's automatic reset at the end
    of an episode (which runs inside ``step``) and the first step after start-up.

    :param env_fns: Env factories, one per sub-env (picklable: they are sent to the worker processes)
    :param step_timeout: Seconds to wait for a step or reset
    :param env_names: Names of the sub-envs in errors (default ``env0``, ``env1``, ...)
    :param start_method: ``multiprocessing`` start method (default: SB3's, ``forkserver`` where available)
    """

    def __init__(
        self,
        env_fns: list[Callable[[], gym.Env]],
        step_timeout: float,
        env_names: Sequence[str] | None = None,
        start_method: str | None = None,
    ):
        self.step_timeout = check_step_timeout(step_timeout)
        if env_names is not None and len(env_names) != len(env_fns):
            raise ValueError(f"{len(env_fns)} envs but {len(env_names)} env names")
        self.env_names = list(env_names) if env_names is not None else [f"env{i}" for i in range(len(env_fns))]
        self.num_steps = 0  # vector steps sent (each sub-env's own step count)
        super().__init__(env_fns, start_method)  # waits for the first worker's env to be built
        # ... and this for the others', so that start-up does not count against the first reset
        for remote in self.remotes[1:]:
            remote.send(("get_spaces", None))
        for remote in self.remotes[1:]:
            remote.recv()

    def step_async(self, actions) -> None:
        super().step_async(actions)
        self.num_steps += 1

    def step_wait(self) -> VecEnvStepReturn:
        self._wait_for_workers("step")
        return super().step_wait()  # every worker has answered: no receive blocks

    def reset(self) -> VecEnvObs:
        # SubprocVecEnv.reset with the wait between sending and receiving
        for env_idx, remote in enumerate(self.remotes):
            remote.send(("reset", (self._seeds[env_idx], self._options[env_idx])))
        self._wait_for_workers("reset")
        results = [remote.recv() for remote in self.remotes]
        obs, self.reset_infos = zip(*results, strict=True)  # type: ignore[assignment]
        self._reset_seeds()
        self._reset_options()
        return _stack_obs(obs, self.observation_space)

    def close(self) -> None:
        """Close the workers; one still busy after the grace period is ended rather than waited on."""
        if self.closed:
            return
        shut_down(self, self._unanswered() if self.waiting else [])

    def _unanswered(self) -> list[int]:
        """Indices of the workers with no answer (nor end of pipe) ``step_timeout`` seconds from now."""
        deadline = time.monotonic() + self.step_timeout
        return [i for i, remote in enumerate(self.remotes) if not remote.poll(max(0.0, deadline - time.monotonic()))]

    def _wait_for_workers(self, operation: str) -> None:
        stuck = wait_for_answers(self, self.env_names, self.step_timeout)
        if stuck:
            shut_down(self, stuck)
            raise EnvStepTimeout([self.env_names[i] for i in stuck], self.num_steps, self.step_timeout, operation)


def shut_down(venv: SubprocVecEnv, stuck: list[int]) -> None:
    """End the ``stuck`` (or dead) workers, close the others (reading their pending answers first), close the pipes:
    SB3's ``close()`` would wait for an answer from each of them."""
    for i in stuck:
        venv.processes[i].terminate()
    for i, remote in enumerate(venv.remotes):
        if i in stuck:
            continue
        try:
            if venv.waiting:
                remote.recv()  # the answer each responsive worker has sent
            remote.send(("close", None))
        except (EOFError, OSError):  # that worker has died already
            pass
    for process in venv.processes:
        _join_or_kill(process)
    for remote in venv.remotes:
        remote.close()
    venv.waiting = False
    venv.closed = True


def _join_or_kill(process: mp.process.BaseProcess) -> None:
    process.join(SHUTDOWN_GRACE_S)
    if process.is_alive():
        process.kill()
        process.join()
