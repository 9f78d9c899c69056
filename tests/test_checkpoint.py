import json
import os
import re
import signal
import subprocess
import sys
import time
import warnings
import zipfile

import gymnasium as gym
import numpy as np
import pytest
import torch as th
from conftest import TINY_DQN, TINY_POLICY
from envs import TargetEnv

from sb3_brc import BRCDQN, BRCSAC, SB3_BRC_VERSION
from sb3_brc.common.utils import atomic_file
from sb3_brc.tools.checkpoint import CheckpointCallback, latest_checkpoint, load_checkpoint, save_checkpoint
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


def test_a_checkpoint_holds_its_step_complete(tmp_path):
    # Due at a step, written once that step's transition is stored and its updates are done (SB3 calls on_step
    # before both): a resumed run neither lacks nor repeats anything
    saved = []

    class Recording(CheckpointCallback):
        def _save(self):
            saved.append((self.model.num_timesteps, self.model.replay_buffer.pos, self.model._n_updates))
            super()._save()

    model = BRCSAC("MlpPolicy", TargetEnv(), learning_starts=20, batch_size=32, policy_kwargs=TINY_POLICY, seed=0)
    model.learn(60, callback=Recording(str(tmp_path), save_freq=25))
    # 2 updates per step after the 20 warm-up steps
    assert saved == [(25, 25, 10), (50, 50, 60), (60, 60, 80)]


def test_resumed_replay_ends_the_interrupted_episodes(tmp_path):
    # The resumed run resets its envs: the newest transitions end their episodes by truncation, so n-step sums
    # stop there and bootstrap from the real next observation, not from the reset one (MountainCar: 200-step
    # episodes, mid-episode at step 30)
    model = BRCDQN("MlpPolicy", "MountainCar-v0", n_steps=3, learning_starts=20, policy_kwargs=TINY_DQN, seed=0)
    model.learn(30)
    newest, storage = model.replay_buffer.pos - 1, model.replay_buffer.observations[""]
    assert model.replay_buffer.dones[newest, 0] == 0
    next_obs = storage[newest + 1, 0].copy()  # the newest transition's next observation
    save_checkpoint(model, str(tmp_path))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the saved buffer class takes n_steps: no SB3 warning that it ignores them
        loaded = load_checkpoint(str(tmp_path), gym.make("MountainCar-v0"))
    replay = loaded.replay_buffer
    assert replay.dones[newest, 0] == 1 and replay.timeouts[newest, 0] == 1
    loaded.learn(5, reset_num_timesteps=False)  # the new episode's first observation overwrites slot newest + 1
    assert not np.array_equal(storage[newest + 1, 0], replay.observations[""][newest + 1, 0])
    window = replay._get_samples(np.array([newest - 1]))  # a 3-step window cut after 2 steps, at the old newest
    np.testing.assert_array_equal(window.next_observations[0].numpy(), next_obs)
    assert window.dones.item() == 0 and window.discounts.item() == pytest.approx(loaded.gamma**2)


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


def test_atomic_file_keeps_the_previous_file_on_error(tmp_path):
    path = tmp_path / "config.json"
    with atomic_file(path, "w") as file:
        file.write("first")
    with pytest.raises(RuntimeError, match="mid-write"):
        with atomic_file(path, "w") as file:
            file.write("sec")
            raise RuntimeError("mid-write")
    assert path.read_text() == "first" and os.listdir(tmp_path) == ["config.json"]  # no temporary file left
