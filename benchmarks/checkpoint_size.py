"""Size and save time of an Atari replay buffer in a checkpoint, early in a run.

    python benchmarks/checkpoint_size.py
    python benchmarks/checkpoint_size.py --capacity 100000 --filled 5000

BRCDQN's replay (``CompactNStepReplayBuffer``, ``(4, 84, 84)`` uint8 frame stacks, the Atari-100k capacity of 100k
transitions) after ``--filled`` transitions, pickled as ``save_checkpoint`` / ``save_replay_buffer`` pickle it:
prints the file size, the time to write it and to read it back.
"""

import argparse
import os
import pickle
import tempfile
import time

import numpy as np
from gymnasium import spaces

from sb3_brc.common.buffers import CompactNStepReplayBuffer


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--capacity", type=int, default=100_000, help="replay capacity (transitions)")
    parser.add_argument("--filled", type=int, default=5000, help="transitions added before saving")
    args = parser.parse_args()
    if not 0 < args.filled <= args.capacity:
        parser.error(f"--filled must be in 1..{args.capacity}, got {args.filled}")

    space = spaces.Box(0, 255, (4, 84, 84), np.uint8)
    buffer = CompactNStepReplayBuffer(args.capacity, space, spaces.Discrete(18), device="cpu", n_steps=10)
    frames = np.random.default_rng(0).integers(0, 255, (1, 4, 84, 84), dtype=np.uint8)
    for step in range(args.filled):
        buffer.add(frames, frames, np.array([1]), np.array([0.0]), np.array([step % 1000 == 999]), [{}])

    with tempfile.TemporaryDirectory() as directory:
        path = os.path.join(directory, "replay_buffer.pkl")
        start = time.perf_counter()
        with open(path, "wb") as file:
            pickle.dump(buffer, file)
        save_s = time.perf_counter() - start
        start = time.perf_counter()
        with open(path, "rb") as file:
            pickle.load(file)
        load_s = time.perf_counter() - start
        size_mb = os.path.getsize(path) / 1e6
    print(
        f"{args.filled} of {args.capacity} transitions: file {size_mb:.0f} MB, save {save_s:.1f} s, load {load_s:.1f} s "
        f"(in memory: {buffer.nbytes / 1e6:.0f} MB allocated)"
    )


if __name__ == "__main__":
    main()
