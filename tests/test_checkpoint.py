import json
import os
import re
import signal
import subprocess
import sys
import time
import warnings
import zipfile

import numpy as np
import pytest
import torch as th
from conftest import TINY_POLICY
from envs import TargetEnv

from sb3_brc import BRCSAC, SB3_BRC_VERSION
from sb3_brc.tools.checkpoint import latest_checkpoint, load_checkpoint, save_checkpoint
from sb3_brc.tools.report import read_eval_csv


def trained_model():
    model = BRCSAC("MlpPolicy", TargetEnv(), learning_starts=50, batch_size=32, policy_kwargs=TINY_POLICY, seed=0)
    model.learn(100)
    return model


def test_checkpoint_round_trip_restores_everything(tmp_path):
    model = trained_model()
    save_checkpoint(model, str(tmp_path))
    expected_draw = np.random.rand()  # the RNG stream right after the checkpoint
    np.random.rand(100)
    loaded = load_checkpoint(str(tmp_path), TargetEnv())
    assert np.random.rand() == expected_draw
    assert loaded.num_timesteps == 100 and loaded.replay_buffer.pos == model.replay_buffer.pos
    np.testing.assert_array_equal(loaded.replay_buffer.observations, model.replay_buffer.observations)
    np.testing.assert_array_equal(loaded.return_normalizer.max_returns, model.return_normalizer.max_returns)
    assert th.equal(loaded.log_ent_coef, model.log_ent_coef)
    loaded.learn(60, reset_num_timesteps=False)
    assert loaded.num_timesteps == 160


def test_checkpoints_and_saves_record_the_version_that_wrote_them(tmp_path):
    model = trained_model()
    path = save_checkpoint(model, str(tmp_path), replay_buffer=False)
    meta_path = os.path.join(path, "checkpoint.json")
    with open(meta_path) as file:
        meta = json.load(file)
    assert meta["sb3_brc_version"] == SB3_BRC_VERSION and meta["algorithm"] == "BRCSAC"
    with zipfile.ZipFile(os.path.join(path, "model.zip")) as archive:
        assert json.loads(archive.read("data"))["sb3_brc_version"] == SB3_BRC_VERSION
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the same version: no warning
        load_checkpoint(str(tmp_path), TargetEnv())
    with open(meta_path, "w") as file:
        json.dump(dict(meta, sb3_brc_version="0.2.9"), file)
    with pytest.warns(UserWarning, match=rf"written by sb3-brc 0\.2\.9, with sb3-brc {re.escape(SB3_BRC_VERSION)}"):
        assert load_checkpoint(str(tmp_path), TargetEnv()).num_timesteps == 100


def test_crash_during_checkpoint_keeps_the_previous_one(tmp_path, monkeypatch):
    model = trained_model()
    first = save_checkpoint(model, str(tmp_path))
    model.learn(20, reset_num_timesteps=False)

    def disk_full(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(model, "save_replay_buffer", disk_full)
    with pytest.raises(OSError, match="No space left"):
        save_checkpoint(model, str(tmp_path))
    assert latest_checkpoint(str(tmp_path)) == first
    assert sorted(os.listdir(tmp_path)) == ["latest", "step-100"]  # no half-written directory left
    assert load_checkpoint(str(tmp_path), TargetEnv()).num_timesteps == 100


def test_no_checkpoint_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="No complete checkpoint"):
        load_checkpoint(str(tmp_path), TargetEnv())


def test_sigkill_then_resume_finishes_the_run(tmp_path):
    out = tmp_path / "run"
    command = [
        sys.executable,
        "-m",
        "sb3_brc",
        "train",
        "--tasks",
        "Pendulum-v1",
        "InvertedPendulum-v5",
        "--steps-per-task",
        "600",
        "--learning-starts-per-task",
        "100",
        "--batch-size",
        "32",
        "--eval-freq",
        "150",
        "--eval-episodes",
        "1",
        "--threads",
        "1",
        "--no-progress",
        "--out",
        str(out),
    ]
    env = dict(os.environ, MUJOCO_GL="disable")
    process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 300
        while latest_checkpoint(str(out / "checkpoints")) is None:
            assert process.poll() is None, "training ended before its first checkpoint"
            assert time.time() < deadline
            time.sleep(0.2)
        process.send_signal(signal.SIGKILL)
        process.wait()
    finally:
        if process.poll() is None:
            process.kill()
    killed_at = json.loads(
        (out / "checkpoints" / os.path.basename(latest_checkpoint(str(out / "checkpoints"))) / "checkpoint.json").read_text()
    )["num_timesteps"]
    assert killed_at < 1200
    with pytest.raises(subprocess.CalledProcessError):  # the same command without --resume refuses to clobber it
        subprocess.run(command, env=env, check=True, capture_output=True)
    subprocess.run([*command, "--resume"], env=env, check=True, capture_output=True)
    model = BRCSAC.load(out / "model.zip")
    assert model.num_timesteps == 1200
    steps = [row["steps_per_task"] for row in read_eval_csv(str(out / "eval.csv"))]
    assert steps == [150, 150, 300, 300, 450, 450, 600, 600]  # schedule carried on, nothing evaluated twice
    assert (out / "report.md").exists()
