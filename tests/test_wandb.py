"""Weights & Biases logging (sb3_brc.tools.wandb_logging) in wandb's offline mode: no network, files read back."""

import glob
import json
import os
import struct
import time

import numpy as np
import pytest
import torch as th
from stable_baselines3.common.logger import HParam, Image, Logger, Video
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from sb3_brc.bench import BenchSettings, grid, is_complete, run_benchmark
from sb3_brc.cli import main as cli_main
from sb3_brc.cli import parse_args
from sb3_brc.tools.wandb_logging import WandbRun, WandbSettings, run_name, tasks_label

TASKS = ["Pendulum-v1", "InvertedPendulum-v5"]


@pytest.fixture
def offline(tmp_path, monkeypatch):
    """wandb in offline mode, writing under ``tmp_path``; returns that directory (skips without wandb)."""
    wandb = pytest.importorskip("wandb", reason="the wandb extra is not installed (pip install 'sb3-brc[wandb]')")
    # wandb reads its environment once per service: end one that an earlier test in this process started (e.g. a
    # docs example), so that this test's WANDB_DIR is the one used
    wandb.teardown()
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_DIR", str(tmp_path))
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.setenv("WANDB_DISABLE_GIT", "true")
    yield tmp_path
    wandb.teardown()  # the next test's WANDB_DIR needs a new service too


def read_records(path):
    """The records of a run's ``.wandb`` file: wandb's transaction log, LevelDB's log format (a 7-byte file header
    ``:W&B`` + magic + version, then 32 KiB blocks of chunks with a 7-byte header: CRC32, length, type FULL (1),
    FIRST (2), MIDDLE (3) or LAST (4)) holding ``wandb_internal_pb2.Record`` protobufs."""
    from wandb.proto import wandb_internal_pb2

    data = open(path, "rb").read()
    assert data[:4] == b":W&B", "not a wandb transaction log"
    records, payload, position, block = [], b"", 7, 32768
    while position + 7 <= len(data):
        left = block - position % block
        if left < 7:  # a block's tail too short for a chunk header is padding
            position += left
            continue
        _, length, kind = struct.unpack("<IHB", data[position : position + 7])
        if length == 0 and kind == 0:
            position += left
            continue
        payload += data[position + 7 : position + 7 + length]
        position += 7 + length
        if kind in (1, 4):
            record = wandb_internal_pb2.Record()
            record.ParseFromString(payload)
            records.append(record)
            payload = b""
    return records


def read_offline_run(run_dir):
    """What an offline run wrote: its run record, config, history rows (one dict per ``log()``), summary and media.

    Waits for the run's exit record: wandb's service can still be writing the log when ``finish()`` returns (seen with
    wandb 0.31, about one run in six); it is complete by the time the process ends."""
    (log,) = glob.glob(os.path.join(run_dir, "run-*.wandb"))
    deadline = time.time() + 60
    while (records := read_records(log))[-1:] == [] or records[-1].WhichOneof("record_type") != "exit":
        assert time.time() < deadline, f"{log} has no exit record"
        time.sleep(0.2)
    run, history, summary, config = None, [], {}, {}
    for record in records:
        kind = record.WhichOneof("record_type")
        if kind == "run":
            run = record.run
        elif kind == "history":
            history.append(
                {"/".join(item.nested_key) or item.key: json.loads(item.value_json) for item in record.history.item}
            )
        elif kind == "config":
            config.update({item.key: json.loads(item.value_json) for item in record.config.update})
        elif kind == "summary":
            summary.update(
                {"/".join(item.nested_key) or item.key: json.loads(item.value_json) for item in record.summary.update}
            )
    assert run is not None, "no run record"
    config = {**{item.key: json.loads(item.value_json) for item in run.config.update}, **config}
    media = glob.glob(os.path.join(run_dir, "files", "media", "**", "*.*"), recursive=True)
    return dict(run=run, config=config, history=history, summary=summary, media=media)


def offline_runs(directory):
    """The offline runs under ``directory``, by run name."""
    runs = [read_offline_run(run_dir) for run_dir in glob.glob(os.path.join(directory, "wandb", "offline-run-*"))]
    return {found["run"].display_name: found for found in runs}


def history_keys(found):
    return {key for row in found["history"] for key in row}


def read_table(found):
    """The run's one logged table."""
    (path,) = [path for path in found["media"] if path.endswith(".table.json")]
    with open(path) as file:
        return json.load(file)


def test_run_names():
    assert run_name("brc_sac", tasks_label(TASKS), 3) == "brc_sac-Pendulum-v1+InvertedPendulum-v5-seed3"
    assert tasks_label(["a", "b", "c", "d", "e"]) == "a+4-more"
    args = parse_args(["train", "--tasks", "Pendulum-v1", "--out", "x", "--steps-per-task", "10"])
    assert args.wandb is False  # off by default
    args = parse_args(["bench", "--wandb", "--wandb-project", "p", "--wandb-group", "g"])
    assert (args.wandb, args.wandb_project, args.wandb_group) == (True, "p", "g")


def test_output_format_writes_what_tensorboard_gets(offline):
    from matplotlib.figure import Figure as MplFigure
    from stable_baselines3.common.logger import Figure

    figure = MplFigure()
    figure.subplots().plot([0, 1])
    with WandbRun(WandbSettings(project="test"), "formats", dict(a=1)) as run:
        logger = Logger(folder=None, output_formats=[run.output_format])
        logger.record("train/loss", 0.5)
        logger.record("train/count", np.int64(3))
        logger.record("train/tensor", th.tensor(2.0))
        logger.record("train/weights", np.arange(10.0))
        logger.record("train/name", "brc")
        logger.record("time/fps", 100, exclude="tensorboard")  # SB3 keeps it out of tensorboard: so do we
        logger.record("train/image", Image(np.zeros((3, 8, 8), np.uint8), "CHW"))
        logger.record("train/figure", Figure(figure, close=False))
        logger.record("train/video", Video(th.zeros(1, 2, 3, 8, 8), fps=4))
        logger.record("hparams", HParam(dict(lr=0.1), dict(metric=0.0)))
        logger.dump(step=42)
    (found,) = offline_runs(offline).values()
    (row,) = found["history"]
    assert row["global_step"] == 42 and row["train/loss"] == 0.5 and row["train/count"] == 3 and row["train/tensor"] == 2.0
    assert row["train/name"] == "brc" and row["train/weights/_type"] == "histogram"
    assert row["train/image/_type"] == "image-file" and row["train/figure/_type"] == "image-file"
    assert "time/fps" not in row and not any(key.startswith("train/video") for key in row)
    assert found["config"]["lr"] == 0.1 and found["config"]["a"] == 1
    assert sum(path.endswith(".png") for path in found["media"]) == 2


def test_cli_train_logs_keys_config_table_and_plots_offline(offline):
    out = offline / "run"
    command = [
        "train",
        "--tasks",
        *TASKS,
        "--steps-per-task",
        "100",
        "--learning-starts-per-task",
        "25",
        "--batch-size",
        "32",
        "--eval-episodes",
        "1",
        "--eval-freq",
        "50",
        "--out",
        str(out),
        "--no-progress",
        "--threads",
        "1",
        "--wandb",
        "--wandb-project",
        "sb3-brc-test",
    ]
    cli_main(command)
    (found,) = offline_runs(offline).values()
    run = found["run"]
    assert (run.project, run.display_name) == ("sb3-brc-test", "brc_sac-Pendulum-v1+InvertedPendulum-v5-seed0")
    assert run.run_group == "brc_sac-Pendulum-v1+InvertedPendulum-v5"
    config = found["config"]
    assert config["tasks"] == TASKS and config["steps_per_task"] == 100 and config["seed"] == 0
    assert config["sb3_brc_version"]
    keys = history_keys(found)
    (tb_run,) = (out / "tb").iterdir()
    tensorboard = EventAccumulator(str(tb_run))
    tensorboard.Reload()
    tb_keys = set(tensorboard.Tags()["scalars"])
    assert tb_keys <= keys, tb_keys - keys  # every key tensorboard got
    for task in TASKS:
        assert {f"eval/{task}/mean_reward", f"train/{task}/reward_scale"} <= tb_keys, task
    assert {"train/critic_loss", "train/actor_loss", "train/q_mean", f"rollout/{TASKS[1]}/ep_rew_mean"} <= tb_keys
    for key in tb_keys:  # at the same steps (num_timesteps)
        logged = [(row["global_step"], row[key]) for row in found["history"] if key in row]
        events = [(event.step, event.value) for event in tensorboard.Scalars(key)]
        assert [step for step, _ in logged] == [step for step, _ in events], key
        assert [value for _, value in logged] == pytest.approx([value for _, value in events], rel=1e-5), key
    evaluated_at = sorted({row["global_step"] for row in found["history"] if f"eval/{TASKS[0]}/mean_reward" in row})
    assert evaluated_at == [100, 200]  # every 50 steps per task, at num_timesteps
    assert {"final/per_task/_type", "report/curves/_type", "report/scores/_type", "report/embeddings/_type"} <= keys
    table = read_table(found)
    assert [row[0] for row in table["data"]] == TASKS and table["columns"][:3] == ["task", "steps_per_task", "mean_return"]
    assert sum(path.endswith(".png") for path in found["media"]) == 3
    assert json.loads((out / "wandb_run.json").read_text())["id"] == run.run_id
    cli_main([*command, "--resume"])  # continues the same W&B run (from its final checkpoint: nothing to train)
    run_dirs = glob.glob(os.path.join(offline, "wandb", "offline-run-*"))
    assert [read_offline_run(run_dir)["run"].run_id for run_dir in run_dirs] == [run.run_id, run.run_id]
    assert (out / "report.md").exists()  # the local report as without --wandb


def test_missing_wandb_is_a_clear_error(monkeypatch):
    import builtins

    real_import = builtins.__import__

    def no_wandb(name, *args, **kwargs):
        if name == "wandb":
            raise ImportError("No module named 'wandb'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_wandb)
    with pytest.raises(ImportError, match=r"pip install 'sb3-brc\[wandb\]'"):
        WandbRun(WandbSettings(), "x", {})


def test_bench_logs_each_run_and_the_aggregate_offline(offline):
    pytest.importorskip("rliable")
    settings = BenchSettings(steps_per_task=100, eval_every=50, eval_episodes=1, learning_starts=50, batch_size=16, width=16)
    out = str(offline / "grid")
    wandb_settings = WandbSettings(project="sb3-brc-test", group="grid")
    run_benchmark(out, ["brc_sac"], ["InvertedPendulum-v5"], [0], settings, reps=50, progress=False, wandb=wandb_settings)
    runs = offline_runs(offline)
    assert sorted(runs) == ["aggregate", "brc_sac-InvertedPendulum-v5-seed0"]
    trained = runs["brc_sac-InvertedPendulum-v5-seed0"]
    assert trained["run"].run_group == "grid" and trained["config"]["algo"] == "brc_sac"
    # The run keeps its W&B id, for a resumed attempt to continue it
    with open(os.path.join(out, "brc_sac", "InvertedPendulum-v5", "seed0", "wandb_run.json")) as file:
        assert json.load(file)["id"] == trained["run"].run_id
    assert trained["config"]["steps_per_task"] == 100 and trained["config"]["algorithm"] == "BRCSAC"
    assert {"eval/InvertedPendulum-v5/mean_reward", "train/critic_loss", "final/per_task/_type"} <= history_keys(trained)
    assert read_table(trained)["data"][0][:2] == ["InvertedPendulum-v5", 100]
    aggregate = runs["aggregate"]
    assert {"aggregate/intervals/_type", "aggregate/performance_profile/_type"} <= history_keys(aggregate)
    table = read_table(aggregate)
    assert table["columns"][:2] == ["algo", "iqm"] and [row[0] for row in table["data"]] == ["brc_sac"]
    # W&B is no run setting: the finished run is reused without it
    assert all(is_complete(spec) for spec in grid(out, ["brc_sac"], ["InvertedPendulum-v5"], [0], settings))
