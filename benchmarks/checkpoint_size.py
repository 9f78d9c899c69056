"""Size and save time of a replay buffer in a checkpoint, early in a run.

    python benchmarks/checkpoint_size.py                                       # Atari, BRCDQN's buffer
    python benchmarks/checkpoint_size.py --capacity 100000 --filled 5000
    python benchmarks/checkpoint_size.py --layout mt10 --capacity 10000000 --filled 50000

``--layout atari``: BRCDQN's replay (``CompactNStepReplayBuffer``, ``(4, 84, 84)`` uint8 frame stacks, the
Atari-100k capacity of 100k transitions). ``--layout mt10``: BRCSAC's default replay for a 10-task Meta-World env
(``Dict(observation=39 float32, task_id=int64)``, 4 action entries, 10 envs; BRCSAC's default capacity is 1M
transitions per task), as SB3's ``DictReplayBuffer`` and as ``TrimmedDictReplayBuffer``, measured one after the
other in this process. After ``--filled`` transitions each buffer is saved as ``save_checkpoint`` /
``save_replay_buffer`` save it (SB3's ``save_to_pkl``): prints the file size, the time to write it and to read it back.
"""

import argparse
import os
import tempfile
import time

import numpy as np
from gymnasium import spaces
from stable_baselines3.common.buffers import DictReplayBuffer, ReplayBuffer
from stable_baselines3.common.save_util import load_from_pkl, save_to_pkl

from sb3_brc.common.buffers import CompactNStepReplayBuffer, TrimmedDictReplayBuffer


def atari_buffer(capacity: int, filled: int) -> ReplayBuffer:
    space = spaces.Box(0, 255, (4, 84, 84), np.uint8)
    buffer = CompactNStepReplayBuffer(capacity, space, spaces.Discrete(18), device="cpu", n_steps=10)
    frames = np.random.default_rng(0).integers(0, 255, (1, 4, 84, 84), dtype=np.uint8)
    for step in range(filled):
        buffer.add(frames, frames, np.array([1]), np.array([0.0]), np.array([step % 1000 == 999]), [{}])
    return buffer


def mt10_buffer(buffer_class: type[DictReplayBuffer], capacity: int, filled: int) -> ReplayBuffer:
    n_envs = 10
    space = spaces.Dict(observation=spaces.Box(-np.inf, np.inf, (39,), np.float32), task_id=spaces.Box(0, 9, (1,), np.int64))
    buffer = buffer_class(capacity, space, spaces.Box(-1, 1, (4,), np.float32), device="cpu", n_envs=n_envs)
    rng = np.random.default_rng(0)
    obs = {"observation": rng.normal(size=(n_envs, 39)).astype(np.float32), "task_id": np.arange(n_envs)[:, None]}
    infos = [{"TimeLimit.truncated": False}] * n_envs
    for step in range(filled // n_envs):
        done = np.full(n_envs, step % 500 == 499)
        buffer.add(obs, obs, rng.uniform(-1, 1, (n_envs, 4)), rng.normal(size=n_envs), done, infos)
    return buffer


def measure(name: str, buffer: ReplayBuffer, capacity: int, filled: int) -> None:
    with tempfile.TemporaryDirectory() as directory:
        path = os.path.join(directory, "replay_buffer.pkl")
        start = time.perf_counter()
        save_to_pkl(path, buffer)  # what save_replay_buffer (and save_checkpoint) runs
        save_s = time.perf_counter() - start
        start = time.perf_counter()
        load_from_pkl(path)
        load_s = time.perf_counter() - start
        size_mb = os.path.getsize(path) / 1e6
    print(f"{name}: {filled} of {capacity} transitions: file {size_mb:.0f} MB, save {save_s:.1f} s, load {load_s:.1f} s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--layout", choices=["atari", "mt10"], default="atari", help="which run's replay")
    parser.add_argument("--capacity", type=int, default=100_000, help="replay capacity (transitions, all tasks)")
    parser.add_argument("--filled", type=int, default=5000, help="transitions added before saving")
    args = parser.parse_args()
    if not 0 < args.filled <= args.capacity:
        parser.error(f"--filled must be in 1..{args.capacity}, got {args.filled}")

    if args.layout == "atari":
        buffer = atari_buffer(args.capacity, args.filled)
        measure("CompactNStepReplayBuffer", buffer, args.capacity, args.filled)
        print(f"(in memory: {buffer.nbytes / 1e6:.0f} MB allocated)")
    else:
        for buffer_class in (DictReplayBuffer, TrimmedDictReplayBuffer):
            buffer = mt10_buffer(buffer_class, args.capacity, args.filled)
            measure(buffer_class.__name__, buffer, args.capacity, args.filled)
            del buffer


if __name__ == "__main__":
    main()
