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
from collections.abc import Callable, Sequence

import gymnasium as gym
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
        self._shut_down(self._unanswered() if self.waiting else [])

    def _unanswered(self) -> list[int]:
        """Indices of the workers with no answer (nor end of pipe) ``step_timeout`` seconds from now."""
        deadline = time.monotonic() + self.step_timeout
        return [i for i, remote in enumerate(self.remotes) if not remote.poll(max(0.0, deadline - time.monotonic()))]

    def _wait_for_workers(self, operation: str) -> None:
        stuck = self._unanswered()
        if stuck:
            self._shut_down(stuck)
            raise EnvStepTimeout([self.env_names[i] for i in stuck], self.num_steps, self.step_timeout, operation)

    def _shut_down(self, stuck: list[int]) -> None:
        """End the ``stuck`` workers, close the others (reading their pending answers first), close the pipes."""
        for i in stuck:
            self.processes[i].terminate()
        for i, remote in enumerate(self.remotes):
            if i in stuck:
                continue
            try:
                if self.waiting:
                    remote.recv()  # the answer each responsive worker has sent
                remote.send(("close", None))
            except (EOFError, OSError):  # that worker has died already
                pass
        for process in self.processes:
            _join_or_kill(process)
        for remote in self.remotes:
            remote.close()
        self.waiting = False
        self.closed = True


def _join_or_kill(process: mp.process.BaseProcess) -> None:
    process.join(SHUTDOWN_GRACE_S)
    if process.is_alive():
        process.kill()
        process.join()
