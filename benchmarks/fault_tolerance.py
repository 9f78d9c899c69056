"""Fault and load: what crashes cost a run, with checkpoints on.

    MUJOCO_GL=disable python benchmarks/fault_tolerance.py --kills 3

1. Repeated SIGKILL / ``--resume`` cycles of ``sb3-brc train`` on a two-task run: the run must finish with
   the full step count and one evaluation per scheduled step; each resume restarts from the last checkpoint.
2. A full disk during a checkpoint (ENOSPC while writing the replay buffer): the previous checkpoint must
   survive and load.
3. An env that raises in one task of a multi-task run: training stops with the env's error; the run resumes
   from the last checkpoint with a fresh env and finishes.

Prints what was kept and what was lost (target: nothing beyond the last checkpoint interval).
"""

import argparse
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import time

import gymnasium as gym
import numpy as np

from sb3_brc import BRCSAC, CheckpointCallback, MultiTaskVecEnv, load_checkpoint, save_checkpoint
from sb3_brc.tools.checkpoint import latest_checkpoint
from sb3_brc.tools.report import read_eval_csv

STEPS_PER_TASK, CHECKPOINT_FREQ = 1500, 250


def checkpoint_step(root: str) -> int:
    path = latest_checkpoint(root)
    if path is None:
        return 0
    with open(os.path.join(path, "checkpoint.json")) as file:
        return json.load(file)["num_timesteps"]


def kill_resume_cycles(kills: int, workdir: str) -> None:
    out = os.path.join(workdir, "run")
    command = [
        sys.executable,
        "-m",
        "sb3_brc",
        "train",
        "--tasks",
        "Pendulum-v1",
        "InvertedPendulum-v5",
        "--steps-per-task",
        str(STEPS_PER_TASK),
        "--learning-starts-per-task",
        "200",
        "--batch-size",
        "64",
        "--eval-freq",
        str(CHECKPOINT_FREQ),
        "--eval-episodes",
        "1",
        "--threads",
        "1",
        "--no-progress",
        "--out",
        out,
    ]
    env = dict(os.environ, MUJOCO_GL="disable")
    rng = random.Random(0)
    print(f"1. {kills} SIGKILL/resume cycles, {STEPS_PER_TASK} steps per task, checkpoint every {CHECKPOINT_FREQ}")
    for cycle in range(kills + 1):
        start_from = checkpoint_step(os.path.join(out, "checkpoints")) // 2
        process = subprocess.Popen(
            [*command, "--resume"] if cycle else command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
        )
        if cycle == kills:
            _, err = process.communicate()
            if process.returncode:
                raise RuntimeError(err.decode())
            print(f"   final run resumed at {start_from} steps/task and finished")
            break
        time.sleep(rng.uniform(6.0, 12.0))
        process.send_signal(signal.SIGKILL)
        process.wait()
        kept = checkpoint_step(os.path.join(out, "checkpoints")) // 2
        print(
            f"   cycle {cycle}: started at {start_from} steps/task, killed; last checkpoint at {kept} steps/task "
            f"(work after it is redone: at most {CHECKPOINT_FREQ} steps/task)"
        )
    model = BRCSAC.load(os.path.join(out, "model.zip"))
    steps = [row["steps_per_task"] for row in read_eval_csv(os.path.join(out, "eval.csv"))]
    expected = [s for s in range(CHECKPOINT_FREQ, STEPS_PER_TASK + 1, CHECKPOINT_FREQ) for _ in range(2)]
    print(
        f"   final num_timesteps {model.num_timesteps} (expected {2 * STEPS_PER_TASK}); evaluation rows "
        f"{'complete, no duplicates' if steps == expected else f'UNEXPECTED: {steps}'}"
    )


def full_disk(workdir: str) -> None:
    root = os.path.join(workdir, "disk")
    model = BRCSAC(
        "MlpPolicy",
        "Pendulum-v1",
        learning_starts=100,
        batch_size=32,
        seed=0,
        policy_kwargs=dict(net_arch=dict(pi=[32], qf=[64, 64])),
    )
    model.learn(200)
    save_checkpoint(model, root)
    model.learn(100, reset_num_timesteps=False)

    def no_space(*args, **kwargs):
        raise OSError(28, "No space left on device")

    model.save_replay_buffer = no_space
    try:
        save_checkpoint(model, root)
        outcome = "UNEXPECTED: the save went through"
    except OSError as error:
        outcome = f"save failed ({error.strerror})"
    restored = load_checkpoint(root, gym.make("Pendulum-v1"))
    leftovers = sorted(os.listdir(root))
    print(
        f"2. full disk during a checkpoint: {outcome}; previous checkpoint loads at step {restored.num_timesteps} "
        f"(lost: the 100 steps since it); directory holds {leftovers}"
    )


class FlakyTask(gym.Wrapper):
    """Raises once, at its ``fail_at``-th step (the class-level flag makes the rebuilt env healthy)."""

    failed = False

    def __init__(self, env: gym.Env, fail_at: int):
        super().__init__(env)
        self.fail_at, self.steps = fail_at, 0

    def step(self, action):
        self.steps += 1
        if self.steps == self.fail_at and not FlakyTask.failed:
            FlakyTask.failed = True
            raise RuntimeError("simulated simulator crash in task 'flaky'")
        return self.env.step(action)


def failing_env(workdir: str) -> None:
    root = os.path.join(workdir, "flaky")

    def make() -> MultiTaskVecEnv:
        return MultiTaskVecEnv(
            ["Pendulum-v1", lambda: FlakyTask(gym.make("InvertedPendulum-v5"), 700)], task_names=["pendulum", "flaky"], seed=0
        )

    model = BRCSAC(
        "MlpPolicy",
        make(),
        learning_starts=200,
        batch_size=64,
        seed=0,
        policy_kwargs=dict(net_arch=dict(pi=[32], qf=[64, 64])),
    )
    try:
        model.learn(2000, callback=CheckpointCallback(root, save_freq=250))
        crash = "UNEXPECTED: no crash"
    except RuntimeError as error:
        crash = f"stopped with the env's error ({error}) at {model.num_timesteps // 2} steps/task"
    resumed = load_checkpoint(root, make())
    kept = resumed.num_timesteps // 2
    resumed.learn(2000 - resumed.num_timesteps, reset_num_timesteps=False)
    print(
        f"3. env raising in one task: {crash}; resumed from the checkpoint at {kept} steps/task "
        f"(lost {model.num_timesteps // 2 - kept}), finished at {resumed.num_timesteps // 2} steps/task"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--kills", type=int, default=3)
    args = parser.parse_args()
    np.random.seed(0)
    with tempfile.TemporaryDirectory() as workdir:
        kill_resume_cycles(args.kills, workdir)
        full_disk(workdir)
        failing_env(workdir)
    print(
        "Not handled: an env that hangs (never returns from step()) blocks training; run tasks in "
        "SubprocVecEnv under an external watchdog and use --resume."
    )


if __name__ == "__main__":
    main()
