"""The Ray backend of the grid (``sb3-brc bench --backend ray``): each run is a Ray task on a cluster.

The task runs :func:`sb3_brc.bench.runner.run_one`, the local backend's per-run function, asking Ray for
``cpus_per_run`` CPUs and ``gpus_per_run`` GPUs; :func:`sb3_brc.bench.runner.drive_grid` submits the tasks, shows
their progress (a Ray actor relays the runs' messages), retries failed runs and stops them on Ctrl-C.

Retries are the driver's, not Ray's (tasks are submitted with ``max_retries=0``): a run whose worker process or
node dies comes back as a ``WorkerCrashedError`` (or ``NodeDiedError``), one that raises as its own error, and both
are submitted again up to ``--max-retries`` times, resuming from the run's checkpoint. One retry policy for both
backends, an exact bound (``max_retries + 1`` attempts), and each failure shown with its cause.

The progress relay (a Ray actor) is restarted by Ray when its process dies (``max_restarts=-1``): the messages it held
are lost, the runs' later ones arrive, and the driver shows nothing new while it restarts. Progress is never worth a
grid: no run waits on the relay, and the driver carries on without messages whenever it cannot reach it.

Output: workers write their run directories under ``--out`` (made absolute on the driver). On a shared filesystem
that is all. When a worker's filesystem is not the driver's, the driver writes the run's result files (returned by the
task) into its own ``--out``; checkpoints then stay on the worker's node, so a run retried on another node starts
over. With ``--out`` an object-store URI (:mod:`~sb3_brc.bench.storage`) each run's checkpoints are pushed to the store
and a retry on any node resumes from its last one.

Ray is an optional dependency (``pip install sb3-brc[ray]``), imported when the backend is created.
"""

import dataclasses
import math
import os
from collections.abc import Sequence
from typing import Any

from rich.console import Console

from sb3_brc.bench.grid import RunSpec
from sb3_brc.bench.runner import GridBackend, RunProgress, drive_grid, init_worker, run_one

#: Seconds the driver waits for the progress relay's messages before carrying on without them (and asking again)
RELAY_TIMEOUT_SECONDS = 1.0
#: Seconds the runs get to stop on Ctrl-C (KeyboardInterrupt in each) before their workers are killed
STOP_GRACE_SECONDS = 10.0


def import_ray() -> Any:
    """The ``ray`` module, or an ImportError that says how to install it."""
    try:
        import ray
    except ImportError as error:
        raise ImportError(f"The Ray backend needs Ray ({error}): pip install sb3-brc[ray]") from error
    return ray


class ProgressRelay:
    """The Ray actor (no CPU) between the runs and the driver: runs :meth:`put` messages, the driver :meth:`take` s them."""

    def __init__(self):
        self.messages: list[RunProgress] = []

    def put(self, message: RunProgress) -> None:
        """Keep a message."""
        self.messages.append(message)

    def take(self) -> list[RunProgress]:
        """The messages kept since the last call."""
        messages, self.messages = self.messages, []
        return messages


class RelayQueue:
    """What :func:`~sb3_brc.bench.runner.run_one` puts its progress into, in a Ray task: sends each message to the
    :class:`ProgressRelay` without waiting. A task blocked on ``ray.get`` lends its CPUs back to Ray, which then
    starts further runs on them: waiting for each message would put more runs on a node than it has CPUs."""

    def __init__(self, relay: Any):
        self.relay = relay

    def put(self, message: RunProgress) -> None:
        """Send a message (not waiting for it to arrive)."""
        self.relay.put.remote(message)


def run_on_ray_worker(spec: RunSpec, queue: Any, threads: int, checkpoint_every: int | None) -> dict[str, Any]:
    """The Ray task of one run: :func:`~sb3_brc.bench.runner.run_one` in a worker set up for it."""
    init_worker(threads)
    return run_one(spec, queue, checkpoint_every)


class RayBackend(GridBackend):
    """Runs as Ray tasks on the cluster at ``address`` (``None``: a local Ray instance with
    ``workers * cpus_per_run`` CPUs); joins the Ray session of this process when one is already initialised.

    :param address: Ray address (``"auto"``, ``"ray://host:10001"``, ...) or ``None``
    :param workers: Runs at a time on a local instance (its size); ignored with ``address``
    :param cpus_per_run: CPUs Ray reserves per run
    :param gpus_per_run: GPUs Ray reserves per run
    :param threads: Torch threads per run
    :param checkpoint_every: Env steps per task between checkpoints (see :func:`~sb3_brc.bench.runner.run_one`)
    :param console: Where to print notes (resources)
    """

    def __init__(
        self,
        address: str | None,
        workers: int,
        cpus_per_run: float,
        gpus_per_run: float,
        threads: int,
        checkpoint_every: int | None = None,
        console: Console | None = None,
    ):
        self.ray = ray = import_ray()
        self.console = console or Console()
        self.threads, self.checkpoint_every = threads, checkpoint_every
        self.owns_session = not ray.is_initialized()
        if self.owns_session:
            # Workers log to Ray's session logs (/tmp/ray/session_latest/logs), not over the progress display
            if address is None:
                ray.init(num_cpus=math.ceil(workers * cpus_per_run), include_dashboard=False, log_to_driver=False)
            else:
                ray.init(address=address, log_to_driver=False)
        self._check_resources(cpus_per_run, gpus_per_run, strict=address is None and self.owns_session)
        # Restarted (empty) when its process dies, its calls retried meanwhile: a lost relay costs messages, not runs
        self.relay = ray.remote(ProgressRelay).options(num_cpus=0, max_restarts=-1, max_task_retries=-1).remote()
        self.queue = RelayQueue(self.relay)
        self.taking: Any = None  # the driver's call to the relay's take() in flight
        self.task = ray.remote(run_on_ray_worker).options(num_cpus=cpus_per_run, num_gpus=gpus_per_run, max_retries=0)

    def _check_resources(self, cpus: float, gpus: float, strict: bool) -> None:
        nodes = [node["Resources"] for node in self.ray.nodes() if node["Alive"]]
        if any(node.get("CPU", 0) >= cpus and node.get("GPU", 0) >= gpus for node in nodes):
            return
        offered = ", ".join(f"{node.get('CPU', 0):g} CPU / {node.get('GPU', 0):g} GPU" for node in nodes)
        text = f"No Ray node has {cpus:g} CPU(s) and {gpus:g} GPU(s) for a run (nodes: {offered or 'none'})"
        if strict:  # a local instance never grows
            self.close()
            raise ValueError(f"{text}; lower --cpus-per-run / --gpus-per-run or raise --workers.")
        self.console.print(f"{text}: the runs wait until such a node joins (an autoscaling cluster).")

    def submit(self, spec: RunSpec) -> Any:
        return self.task.remote(spec, self.queue, self.threads, self.checkpoint_every)

    def wait(self, handles: list[Any], timeout: float) -> list[Any]:
        ready, _ = self.ray.wait(handles, num_returns=len(handles), timeout=timeout)
        return ready

    def result(self, handle: Any, spec: RunSpec) -> dict[str, Any]:
        try:
            return self.ray.get(handle)
        except self.ray.exceptions.RayTaskError as error:  # the run's own exception, without Ray's wrapping
            raise (error.cause if isinstance(error.cause, Exception) else error) from None

    def messages(self) -> list[RunProgress]:
        # One call to the relay at a time, waited for until it answers: a call given up on would still take the
        # messages it finds once the relay is back (Ray retries it), and they would be lost
        if self.taking is None:
            self.taking = self.relay.take.remote()
        try:
            messages = self.ray.get(self.taking, timeout=RELAY_TIMEOUT_SECONDS)
        except self.ray.exceptions.GetTimeoutError:
            return []  # the relay is restarting (its process or node died): no news this time
        except self.ray.exceptions.RayActorError:
            messages = []  # the relay is gone for good: a new call finds its restarted instance, if any
        self.taking = None
        return messages

    def stop(self, handles: list[Any], pids: Sequence[int]) -> None:
        for handle in handles:
            self.ray.cancel(handle)  # KeyboardInterrupt in the run; queued ones never start
        _, left = self.ray.wait(handles, num_returns=len(handles), timeout=STOP_GRACE_SECONDS)
        for handle in left:
            self.ray.cancel(handle, force=True)

    def close(self) -> None:
        relay = getattr(self, "relay", None)
        if relay is not None:
            self.ray.kill(relay)
            self.relay = None
        if self.owns_session and self.ray.is_initialized():
            self.ray.shutdown()


def run_grid_ray(
    runs: Sequence[RunSpec],
    address: str | None = None,
    workers: int = 1,
    cpus_per_run: float = 1.0,
    gpus_per_run: float = 0.0,
    threads: int = 1,
    progress: bool = True,
    max_retries: int = 2,
    checkpoint_every: int | None = None,
) -> list[dict[str, Any]]:
    """Run the unfinished runs as Ray tasks: :func:`~sb3_brc.bench.runner.drive_grid` on a :class:`RayBackend`.

    The run directories are given as absolute paths (a Ray worker's working directory is not the driver's).

    :return: One dict per run (see :func:`~sb3_brc.bench.runner.drive_grid`)
    """
    ray = import_ray()  # the install hint before anything starts
    runs = [dataclasses.replace(spec, out=os.path.abspath(spec.out)) for spec in runs]
    where = "this process's Ray session" if ray.is_initialized() else address or "a local Ray instance"
    return drive_grid(
        runs,
        lambda console: RayBackend(address, workers, cpus_per_run, gpus_per_run, threads, checkpoint_every, console),
        max_retries=max_retries,
        progress=progress,
        description=f"as Ray tasks ({where}; {cpus_per_run:g} CPU, {gpus_per_run:g} GPU each)",
    )
