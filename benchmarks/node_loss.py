"""What a lost node costs a grid kept in an object store: steps redone and seconds to recover, per checkpoint interval.

    MUJOCO_GL=disable python benchmarks/node_loss.py --checkpoint-every 250 1000

A real multi-node Ray cluster on this machine (``ray.cluster_utils.Cluster``: a head without CPUs and two nodes of one
CPU each) and the grid kept in S3 (``--out``; by default a local moto S3 server started here, so that no disk is
shared in use). For each checkpoint interval, one run (``--algo`` on ``--task``) trains on one node; once it reports
``--lose-at`` env steps per task, its node is removed (all its processes killed, as a lost machine). The driver retries
the run, which resumes on the other node from its last checkpoint in the store. Printed per interval:

- steps redone: the steps per task the run had reached when the node went, minus where the retry resumed (at most
  one checkpoint interval);
- seconds to restart: from the node's loss to the retry's start on the other node (Ray noticing the loss, the task
  failing, the driver resubmitting, a fresh worker);
- seconds to recover: from the node's loss until the run is back at the step it had reached (restart, pulling the
  checkpoint from the store, restoring the model with its replay buffer, redoing the lost steps).

Step counts come from the runs' progress messages (one per second at most), so times are good to about a second.
"""

import argparse
import json
import os
import socket
import tempfile
import time
from datetime import datetime
from typing import Any

import psutil
import ray
from ray.cluster_utils import Cluster

from sb3_brc.bench import BenchSettings, grid
from sb3_brc.bench.grid import ATTEMPTS
from sb3_brc.bench.ray_backend import RayBackend
from sb3_brc.bench.runner import RunProgress, drive_grid
from sb3_brc.bench.storage import GridStore, local_mirror


def start_moto() -> Any:
    """A moto S3 server on the loopback address, its endpoint and credentials in this process's environment (which the
    cluster's nodes inherit), with the bucket ``grids``."""
    from moto.server import ThreadedMotoServer

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    os.environ.update(
        AWS_ACCESS_KEY_ID="bench", AWS_SECRET_ACCESS_KEY="bench", AWS_DEFAULT_REGION="us-east-1",
        AWS_ENDPOINT_URL=f"http://127.0.0.1:{port}",
    )  # fmt: skip
    GridStore("s3://grids").fs.mkdir("grids")
    return server


class NodeLoss:
    """Watches the run's progress messages (the driver's loop calls :meth:`seen`); removes the run's node once it
    reports ``lose_at`` steps per task, and notes when the run is back at that step."""

    def __init__(self, cluster: Cluster, lose_at: int):
        self.cluster, self.lose_at = cluster, lose_at
        self.pid: int | None = None
        self.lost_at: tuple[float, int] | None = None  # (time, steps per task reached)
        self.relay_lost = self.retried = False
        self.back: float | None = None

    def seen(self, message: RunProgress, relay_node: str) -> None:
        if message.start:  # an attempt's first message: the run's first attempt, or the retry after the loss
            self.pid, self.retried = message.pid, self.lost_at is not None
        elif self.lost_at is None and message.steps >= self.lose_at:
            assert self.pid is not None
            raylets = {node.all_processes["raylet"][0].process.pid: node for node in self.cluster.worker_nodes}
            (node,) = [raylets[parent.pid] for parent in psutil.Process(self.pid).parents() if parent.pid in raylets]
            self.relay_lost = node.node_id == relay_node
            self.cluster.remove_node(node, allow_graceful=False)
            self.lost_at = (time.time(), message.steps)
        elif self.retried and self.back is None and self.lost_at is not None and message.steps >= self.lost_at[1]:
            self.back = time.time()


def one_loss(uri: str, args: argparse.Namespace, checkpoint_every: int) -> dict[str, Any]:
    cluster = Cluster(initialize_head=True, head_node_args=dict(num_cpus=0))
    for _ in range(2):
        cluster.add_node(num_cpus=1)
    ray.init(address=cluster.address, log_to_driver=False)
    settings = BenchSettings(steps_per_task=args.steps, eval_every=args.eval_every, eval_episodes=1, size=args.size)
    (spec,) = grid(local_mirror(uri), [args.algo], [args.task], [0], settings, storage=uri)
    loss = NodeLoss(cluster, args.lose_at)

    class WatchedBackend(RayBackend):
        def messages(self) -> list[RunProgress]:
            found = super().messages()
            relay_node = ray.get(self.relay.__ray_call__.remote(lambda relay: ray.get_runtime_context().get_node_id()))
            for message in found:
                loss.seen(message, relay_node)
            return found

    start = time.monotonic()
    try:
        (result,) = drive_grid(
            [spec], lambda console: WatchedBackend(None, 1, 1.0, 0.0, 1, checkpoint_every, console), 2, False
        )
    finally:
        ray.shutdown()
        cluster.shutdown()
    assert result["status"] == "done" and result["attempts"] == 2 and loss.lost_at and loss.back, (result, vars(loss))
    lost_time, lost_steps = loss.lost_at
    # The retry's start, as its worker logged it
    retry = json.loads(GridStore(uri).read(f"{'/'.join(spec.run_path)}/{ATTEMPTS}").splitlines()[-1])
    return dict(
        checkpoint_every=checkpoint_every,
        lost_at=lost_steps,
        resumed_at=retry["start_steps_per_task"],
        redone=lost_steps - retry["start_steps_per_task"],
        restart_s=datetime.fromisoformat(retry["time"]).timestamp() - lost_time,
        recover_s=loss.back - lost_time,
        relay_lost=loss.relay_lost,
        wall_s=time.monotonic() - start,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint-every", type=int, nargs="+", default=[250, 1000], help="env steps per task")
    parser.add_argument("--algo", default="brc_sac")
    parser.add_argument("--task", default="InvertedPendulum-v5")
    parser.add_argument("--size", default="tiny")
    parser.add_argument("--steps", type=int, default=2000, help="env steps per task of the run")
    parser.add_argument("--eval-every", type=int, default=1000)
    parser.add_argument("--lose-at", type=int, default=1400, help="steps per task at which the run's node is lost")
    parser.add_argument("--out", default=None, help="store URI (default: a local moto S3 server, bucket grids)")
    args = parser.parse_args()
    os.environ.setdefault("MUJOCO_GL", "disable")
    os.environ["XDG_CACHE_HOME"] = tempfile.mkdtemp(prefix="node-loss-")  # the driver's mirror
    server = start_moto() if args.out is None else None
    rows = []
    for every in args.checkpoint_every:
        base = args.out or "s3://grids"
        rows.append(one_loss(f"{base.rstrip('/')}/node-loss-{every}-{time.time_ns()}", args, every))
        print(rows[-1], flush=True)
    if server is not None:
        server.stop()
    print(f"\n{args.algo} ({args.size}) on {args.task}, {args.steps} steps/task, node lost at {args.lose_at} steps/task")
    print("| checkpoint every | lost at | resumed at | steps redone | s to restart | s to recover | relay on the lost node |")
    print("|---|---|---|---|---|---|---|")
    for row in rows:
        print(
            f"| {row['checkpoint_every']} | {row['lost_at']} | {row['resumed_at']} | {row['redone']} | "
            f"{row['restart_s']:.1f} | {row['recover_s']:.1f} | {'yes' if row['relay_lost'] else 'no'} |"
        )


if __name__ == "__main__":
    main()
