"""The default grid backend: runs in a pool of spawned processes on this machine (:class:`LocalBackend`), driven by
:func:`~sb3_brc.bench.runner.drive_grid` as the Ray backend (:mod:`~sb3_brc.bench.ray_backend`) is."""

import multiprocessing
import os
import signal
from collections.abc import Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from typing import Any

from sb3_brc.bench.grid import RunSpec
from sb3_brc.bench.runner import GridBackend, RunProgress, drive_grid, init_worker, run_one


class LocalBackend(GridBackend):
    """Runs in ``workers`` spawned processes on this machine (``threads`` torch threads each).

    A worker that dies breaks the whole process pool: the runs in it then fail together and the next submission
    starts a fresh pool (:func:`drive_grid` counts an attempt only for the runs that had started).
    """

    def __init__(self, workers: int, threads: int, checkpoint_every: int | None = None):
        self.workers, self.threads, self.checkpoint_every = workers, threads, checkpoint_every
        self.context = multiprocessing.get_context("spawn")
        self.manager = self.context.Manager()
        self.queue = self.manager.Queue()
        self.pool = self._new_pool()

    def _new_pool(self) -> ProcessPoolExecutor:
        return ProcessPoolExecutor(self.workers, mp_context=self.context, initializer=init_worker, initargs=(self.threads,))

    def submit(self, spec: RunSpec) -> Future:
        try:
            return self.pool.submit(run_one, spec, self.queue, self.checkpoint_every)
        except BrokenProcessPool:  # a worker died: its runs failed, the pool is unusable
            self.pool.shutdown(wait=False)
            self.pool = self._new_pool()
            return self.pool.submit(run_one, spec, self.queue, self.checkpoint_every)

    def wait(self, handles: list[Future], timeout: float) -> list[Future]:
        finished, _ = wait(handles, timeout=timeout, return_when=FIRST_COMPLETED)
        return list(finished)

    def result(self, handle: Future, spec: RunSpec) -> dict[str, Any]:
        return handle.result()

    def messages(self) -> list[RunProgress]:
        found = []
        while not self.queue.empty():
            found.append(self.queue.get())
        return found

    def stop(self, handles: list[Future], pids: Sequence[int]) -> None:
        self.pool.shutdown(wait=False, cancel_futures=True)  # runs not started yet never start
        for pid in pids:  # KeyboardInterrupt in the runs in flight (their last checkpoint stays in place)
            try:
                os.kill(pid, signal.SIGINT)
            except ProcessLookupError:
                pass

    def close(self) -> None:
        self.pool.shutdown(wait=True, cancel_futures=True)
        self.manager.shutdown()


def run_grid(
    runs: Sequence[RunSpec],
    workers: int = 1,
    threads: int = 1,
    progress: bool = True,
    max_retries: int = 2,
    checkpoint_every: int | None = None,
) -> list[dict[str, Any]]:
    """Run the unfinished runs in ``workers`` spawned processes on this machine (``threads`` torch threads each):
    :func:`~sb3_brc.bench.runner.drive_grid` on a :class:`LocalBackend`.

    :param checkpoint_every: Env steps per task between a run's checkpoints (``None``: at each evaluation; 0: none)
    :return: One dict per run (see :func:`drive_grid`)
    """
    return drive_grid(
        runs,
        lambda console: LocalBackend(workers, threads, checkpoint_every),
        max_retries=max_retries,
        progress=progress,
        description=f"on {workers} local worker(s)",
    )
