"""Grids kept in an object store (sb3_brc.bench.storage): checkpoints committed by their metadata, a grid on a real
S3-compatible server (moto's, on the loopback address) whose run, its worker killed, resumes from the store's
checkpoint alone, and the driver's mirror of the store."""

import importlib.util
import json
import os
import pathlib
import shutil
import signal
import socket
import threading

import pytest

from sb3_brc.bench import BenchSettings, grid, run_benchmark
from sb3_brc.bench.grid import ATTEMPTS, CHECKPOINTS, RunSpec
from sb3_brc.bench.local_backend import run_grid
from sb3_brc.bench.storage import GridStore, StoredRun, is_storage_uri, local_mirror
from sb3_brc.tools.checkpoint import CHECKPOINT_META, checkpoint_timesteps
from sb3_brc.tools.report import read_eval_csv

FAST = dict(eval_every=100, eval_episodes=1, learning_starts=100, batch_size=32, gradient_steps=1, width=16)
BUCKET = "grids"


@pytest.fixture(scope="module")
def s3_endpoint():
    """A moto S3 server on the loopback address for this module's tests, with a bucket; its endpoint and credentials
    in the environment (this process's and the worker processes', which inherit it)."""
    moto_server = pytest.importorskip("moto.server", reason="the S3 tests need moto[server]: pip install sb3-brc[dev]")
    pytest.importorskip("s3fs", reason="S3 URIs need s3fs: pip install sb3-brc[s3]")
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    endpoint = f"http://127.0.0.1:{port}"
    env = dict(AWS_ACCESS_KEY_ID="test", AWS_SECRET_ACCESS_KEY="test", AWS_DEFAULT_REGION="us-east-1",
               AWS_ENDPOINT_URL=endpoint)  # fmt: skip
    saved = {name: os.environ.get(name) for name in env}
    os.environ.update(env)
    GridStore(f"s3://{BUCKET}").fs.mkdir(BUCKET)
    yield endpoint
    server.stop()
    for name, value in saved.items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value


def _spec(out: str, storage: str | None, steps: int = 300, seed: int = 0) -> RunSpec:
    (spec,) = grid(out, ["sac"], ["InvertedPendulum-v5"], [seed], BenchSettings(steps_per_task=steps, **FAST), storage=storage)
    return spec


def _fake_checkpoint(root: str, step: int, meta: bool = True) -> str:
    path = os.path.join(root, f"step-{step}")
    os.makedirs(path)
    with open(os.path.join(path, "model.zip"), "wb") as file:
        file.write(os.urandom(64))
    if meta:
        with open(os.path.join(path, CHECKPOINT_META), "w") as file:
            json.dump(dict(num_timesteps=step), file)
    return path


def test_a_stored_checkpoint_counts_once_its_metadata_is_uploaded(tmp_path, monkeypatch):
    uri = (tmp_path / "store").as_uri()
    assert is_storage_uri(uri) and not is_storage_uri(str(tmp_path))
    stored = StoredRun(_spec(str(tmp_path / "staging"), uri))
    local = os.path.join(stored.spec.run_dir, CHECKPOINTS)
    uploads = []
    upload = GridStore.upload

    def recording_upload(self, path, relative):
        uploads.append(relative.rsplit("/", 1)[-1])
        upload(self, path, relative)

    monkeypatch.setattr(GridStore, "upload", recording_upload)
    stored.push_checkpoint(_fake_checkpoint(local, 100))
    assert uploads == ["model.zip", CHECKPOINT_META]  # the commit comes last
    # Uploads cut short: a later checkpoint without its metadata, one with its metadata half written
    in_store = tmp_path.joinpath("store", *stored.spec.run_path, CHECKPOINTS)
    (in_store / "step-200").mkdir()
    (in_store / "step-200" / "model.zip").write_bytes(b"partial")
    (in_store / "step-300").mkdir()
    (in_store / "step-300" / CHECKPOINT_META).write_text('{"num_')
    stored.pull()  # a fresh staging copy: the newest committed checkpoint
    assert checkpoint_timesteps(local) == 100 and sorted(os.listdir(local)) == ["latest", "step-100"]
    # The next push removes the others, committed or not
    stored.push_checkpoint(_fake_checkpoint(local, 400))
    assert sorted(os.listdir(in_store)) == ["step-400"]
    # The result files: config.json last
    for name in ("config.json", "evaluations.csv", ATTEMPTS):
        pathlib.Path(stored.spec.run_dir, name).write_text("{}")
    uploads.clear()
    stored.push_results()
    assert uploads == ["evaluations.csv", ATTEMPTS, "config.json"]


def test_an_unknown_protocol_is_a_clear_error(tmp_path):
    with pytest.raises(ImportError, match="Cannot open the grid's store 'nosuchproto://bucket/grid'"):
        run_benchmark("nosuchproto://bucket/grid", ["sac"], ["InvertedPendulum-v5"], [0], BenchSettings(**FAST))


def _committed_checkpoint(store: GridStore, spec: RunSpec) -> bool:
    return any(
        store.read(f"{'/'.join(spec.run_path)}/{CHECKPOINTS}/{name}/{CHECKPOINT_META}") is not None
        for name in store.listdir(f"{'/'.join(spec.run_path)}/{CHECKPOINTS}")
    )


def test_a_killed_run_of_a_grid_in_s3_resumes_from_the_store(tmp_path, s3_endpoint, monkeypatch):
    pytest.importorskip("rliable")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    uri = f"s3://{BUCKET}/equal"
    store = GridStore(uri)
    settings = BenchSettings(steps_per_task=300, **FAST)
    run_benchmark(str(tmp_path / "local"), ["sac"], ["InvertedPendulum-v5"], [0], settings, reps=50, progress=False)
    # The stored grid: its worker killed once its first checkpoint is in the store; the retry starts in a fresh staging
    # directory, so it can only resume from the store
    (spec,) = grid(local_mirror(uri), ["sac"], ["InvertedPendulum-v5"], [0], settings, storage=uri)
    killed = []

    def kill_after_first_checkpoint():
        while not _committed_checkpoint(store, spec):
            if finished.wait(0.05):
                return
        attempts = [json.loads(line) for line in store.read(f"{'/'.join(spec.run_path)}/{ATTEMPTS}").splitlines()]
        os.kill(attempts[-1]["pid"], signal.SIGKILL)
        killed.append(attempts[-1]["pid"])

    finished = threading.Event()
    threading.Thread(target=kill_after_first_checkpoint, daemon=True).start()
    stored = run_benchmark(uri, ["sac"], ["InvertedPendulum-v5"], [0], settings, reps=50, progress=False)
    finished.set()
    (status,) = stored["runs"]
    assert killed and status["status"] == "done" and status["attempts"] == 2 and status["start_steps"] >= 100
    # The store holds the run's results (checkpoints gone) and the aggregate; the driver's mirror the same results
    run = "/".join(spec.run_path)
    assert sorted(store.listdir(run)) == sorted([ATTEMPTS, "config.json", "evaluations.csv", "random.json"])
    first, second = (json.loads(line) for line in store.read(f"{run}/{ATTEMPTS}").splitlines())
    assert first["start_steps_per_task"] == 0 and second["start_steps_per_task"] == status["start_steps"]
    assert store.read("aggregate.md").decode().startswith("# Benchmark: sac")
    assert stored["out"] == local_mirror(uri)
    # Evaluations without gaps or duplicates, those of the first attempt the undisturbed local run's (the resumed
    # attempt starts new episodes where the checkpoint was taken, so it goes on differently)
    rows = read_eval_csv(os.path.join(spec.run_dir, "evaluations.csv"))
    assert store.read(f"{run}/evaluations.csv") == pathlib.Path(spec.run_dir, "evaluations.csv").read_bytes()
    assert [row["steps_per_task"] for row in rows] == [100, 200, 300]
    undisturbed = read_eval_csv(str((tmp_path / "local").joinpath(*spec.run_path, "evaluations.csv")))
    before_resume = [row for row in undisturbed if row["steps_per_task"] <= status["start_steps"]]
    assert before_resume and rows[: len(before_resume)] == before_resume
    # Run again: complete in the store, nothing trains
    again = run_benchmark(uri, ["sac"], ["InvertedPendulum-v5"], [0], settings, reps=50, progress=False)
    assert [status["status"] for status in again["runs"]] == ["skipped"]


def test_the_driver_mirror_follows_the_store(tmp_path, monkeypatch):
    # A stored run deleted from the store is gone from the mirror too (the store is the truth), and a mirror without the
    # run is filled from the store
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    uri = (tmp_path / "store").as_uri()
    spec = _spec(local_mirror(uri), uri, steps=100)
    run_grid([spec], progress=False)
    store = GridStore(uri)
    assert store.read(f"{'/'.join(spec.run_path)}/config.json") is not None
    shutil.rmtree(local_mirror(uri))
    store.pull_results([spec])
    assert sorted(os.listdir(spec.run_dir)) == sorted([ATTEMPTS, "config.json", "evaluations.csv", "random.json"])
    store.remove("/".join(spec.run_path))
    store.pull_results([spec])
    assert not os.path.exists(spec.run_dir)


def _node_of(cluster, pid: int):
    """The cluster's node whose raylet started the worker process ``pid``."""
    import psutil

    raylets = {node.all_processes["raylet"][0].process.pid: node for node in cluster.worker_nodes}
    for parent in psutil.Process(pid).parents():
        if parent.pid in raylets:
            return raylets[parent.pid]
    raise AssertionError(f"process {pid} runs on no worker node of the cluster")


@pytest.mark.slow  # a three-node cluster and three runs: minutes on two cores
@pytest.mark.skipif(importlib.util.find_spec("ray") is None, reason="the Ray backend needs the ray extra")
def test_a_lost_node_costs_its_run_one_checkpoint_interval(tmp_path, s3_endpoint, monkeypatch):
    # A real multi-node Ray cluster on this machine (a head without CPUs, two nodes of one CPU each), no shared disk
    # in use: the grid is kept in S3. The node of one run is removed once both runs have a checkpoint in the store: that
    # run resumes on the other node from its last checkpoint, and the other run equals an undisturbed run's
    import ray
    from ray.cluster_utils import Cluster

    from sb3_brc.bench.ray_backend import run_grid_ray

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    uri, settings = f"s3://{BUCKET}/nodes", BenchSettings(steps_per_task=500, **FAST)
    runs = grid(local_mirror(uri), ["sac"], ["InvertedPendulum-v5", "Pendulum-v1"], [0], settings, storage=uri)
    store = GridStore(uri)
    cluster = Cluster(initialize_head=True, head_node_args=dict(num_cpus=0))
    for _ in range(2):
        cluster.add_node(num_cpus=1)
    ray.init(address=cluster.address, log_to_driver=False)
    removed = []

    def remove_a_node():
        while not all(_committed_checkpoint(store, spec) for spec in runs):
            if finished.wait(0.05):
                return
        attempts = store.read(f"{'/'.join(runs[0].run_path)}/{ATTEMPTS}").splitlines()
        node = _node_of(cluster, json.loads(attempts[-1])["pid"])
        cluster.remove_node(node, allow_graceful=False)
        removed.append(node)

    finished = threading.Event()
    threading.Thread(target=remove_a_node, daemon=True).start()
    try:
        results = {result["key"]: result for result in run_grid_ray(runs, progress=False)}
    finally:
        finished.set()
        ray.shutdown()
        cluster.shutdown()
    lost, untouched = (results[spec.key] for spec in runs)
    assert removed and lost["status"] == untouched["status"] == "done"
    assert lost["attempts"] == 2 and lost["start_steps"] >= 100 and untouched["attempts"] == 1
    assert any(name in lost["errors"][0] for name in ("NodeDiedError", "WorkerCrashedError")), lost["errors"]
    for spec in runs:  # evaluations without gaps or duplicates, in the store and the mirror alike
        csv = pathlib.Path(spec.run_dir, "evaluations.csv")
        assert store.read(f"{'/'.join(spec.run_path)}/evaluations.csv") == csv.read_bytes()
        assert [row["steps_per_task"] for row in read_eval_csv(str(csv))] == [100, 200, 300, 400, 500]
        assert store.listdir(f"{'/'.join(spec.run_path)}/{CHECKPOINTS}") == []
    # The run the loss did not touch equals the same run undisturbed on a local disk
    (alone,) = grid(str(tmp_path / "local"), ["sac"], ["Pendulum-v1"], [0], settings)
    run_grid([alone], progress=False)
    assert (
        pathlib.Path(alone.run_dir, "evaluations.csv").read_bytes()
        == pathlib.Path(runs[1].run_dir, "evaluations.csv").read_bytes()
    )
