"""Gradient-update throughput of BRCDQN.train() against SB3 DQN.train() on Atari-shaped data, in one process.

Both use the Nature-CNN encoder on ``(4, 84, 84)`` uint8 frame stacks and a replay buffer filled with random
transitions, so only the update is timed. What BRCDQN adds per update: a 2-block BroNet head with 101 atoms
per action, DrQ random shifts of both observations, a double-Q forward pass of the online network on the
next observations, the categorical projection and n-step sampling. Prints updates/s of each, their ratio, and
BRCDQN's share of the time spent in the augmentation. Each update follows a target update, as in ``learn()``
(DrQ(eps) copies the online network every step, which lets BRCDQN skip the double-Q forward pass).

BRCDQN runs twice: eagerly and with its update compiled as one graph (``compile_update=True``); the ratio of the two
is printed per batch.

Efficiency rather than raw rate: each algorithm's achieved GFLOP/s (the FLOPs of one update counted by torch's
``FlopCounterMode``: convolutions and matmuls, forward and backward) as a share of the machine's fp32 matmul peak
measured in the same run, for BRCDQN, SB3 DQN and sb3-contrib's QR-DQN (200 quantiles) with the same encoder and
batch. The three algorithms' updates alternate in ``--slices`` timing windows so that machine drift hits all three.

    python benchmarks/dqn_throughput.py --threads 2                 # batch 32 (DrQ(eps)) and 160 (5 games)
"""

import argparse
import time

import gymnasium as gym
import numpy as np
import torch as th
from sb3_contrib import QRDQN
from stable_baselines3 import DQN
from throughput import peak_matmul_gflops
from torch.utils.flop_counter import FlopCounterMode

from sb3_brc import BRCDQN
from sb3_brc.common.augmentation import random_shift


class RandomFrames(gym.Env):
    """Atari-shaped random observations and 18 actions."""

    observation_space = gym.spaces.Box(0, 255, (4, 84, 84), np.uint8)
    action_space = gym.spaces.Discrete(18)

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        return self.observation_space.sample(), {}

    def step(self, action):
        return self.observation_space.sample(), float(self.np_random.normal()), bool(self.np_random.random() < 0.01), False, {}


def make_model(algo: str, batch: int):
    common = dict(buffer_size=5000, learning_starts=2000, batch_size=batch, seed=0, device="cpu")
    if algo.startswith("brcdqn"):  # eager, or the update compiled as one graph
        return BRCDQN("CnnPolicy", RandomFrames(), compile_update=algo == "brcdqn_compiled", **common)
    if algo == "qrdqn":  # its defaults (200 quantiles, 1-step), Adam eps as DrQ(eps)
        return QRDQN("CnnPolicy", RandomFrames(), policy_kwargs=dict(optimizer_kwargs=dict(eps=1.5e-4)), **common)
    # DrQ(eps)-like SB3 DQN: Adam(1e-4, eps 1.5e-4), same encoder, linear head, n-step 10
    return DQN("CnnPolicy", RandomFrames(), n_steps=10, policy_kwargs=dict(optimizer_kwargs=dict(eps=1.5e-4)), **common)


def prepared(model, batch: int):
    """The model with its buffer filled and warmed up (a compiled update compiled), and the FLOPs of one update
    (counted eagerly for a compiled update: the same maths)."""
    model.learn(2000)  # fill the buffer (all within learning_starts: no update yet)
    start = time.perf_counter()
    model.train(2, batch)  # warm-up
    compiled = getattr(model, "_functional_update", None)
    if compiled is not None:
        print(f"(batch {batch}: compiling BRCDQN's update and its first 2 updates: {time.perf_counter() - start:.0f} s)")
        model._functional_update = None
    with FlopCounterMode(display=False) as counter:
        model._on_step()
        model.train(1, batch)
    model._functional_update = compiled
    return model, counter.get_total_flops()


def timed_updates(model, batch: int, updates: int) -> float:
    """Seconds for ``updates`` updates, each after a target update as in ``learn()``."""
    start = time.perf_counter()
    for _ in range(updates):
        model._on_step()
        model.train(1, batch)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=2, help="torch.set_num_threads")
    parser.add_argument("--batches", type=int, nargs="+", default=[32, 160])
    parser.add_argument("--updates", type=int, default=30, help="timed updates per algorithm and batch")
    parser.add_argument("--slices", type=int, default=3, help="alternating timing windows the updates are split into")
    args = parser.parse_args()
    th.set_num_threads(args.threads)
    peak = peak_matmul_gflops()
    print(f"torch {th.__version__}, threads {th.get_num_threads()}, peak fp32 matmul (2048^3): {peak:.0f} GFLOP/s\n")
    print("| batch | algorithm | upd/s | GFLOP per update | GFLOP/s | % of peak | upd/s vs DQN |")
    print("|---|---|---|---|---|---|---|")
    algorithms = (("dqn", "SB3 DQN"), ("qrdqn", "QR-DQN"), ("brcdqn", "BRCDQN"), ("brcdqn_compiled", "BRCDQN compiled"))
    for batch in args.batches:
        models = {algo: prepared(make_model(algo, batch), batch) for algo, _ in algorithms}
        seconds, per_slice = dict.fromkeys(models, 0.0), args.updates // args.slices
        for _ in range(args.slices):  # alternating, so that machine drift hits every algorithm alike
            for algo, (model, _) in models.items():
                seconds[algo] += timed_updates(model, batch, per_slice)
        rates = {algo: args.slices * per_slice / seconds[algo] for algo in models}
        for algo, name in algorithms:
            ups, flops = rates[algo], models[algo][1]
            print(
                f"| {batch} | {name} | {ups:.1f} | {flops / 1e9:.2f} | {ups * flops / 1e9:.0f} "
                f"| {100 * ups * flops / 1e9 / peak:.0f}% | {ups / rates['dqn']:.2f} |",
                flush=True,
            )
        frames = th.randint(0, 256, (batch, 4, 84, 84), dtype=th.uint8)
        start = time.perf_counter()
        for _ in range(args.updates):
            random_shift(frames), random_shift(frames)
        augment = (time.perf_counter() - start) / args.updates
        print(f"| {batch} | BRCDQN's share of time in the augmentation: {augment * rates['brcdqn']:.0%} | | | | | |")
        print(f"| {batch} | BRCDQN compiled / eager: {rates['brcdqn_compiled'] / rates['brcdqn']:.2f}x | | | | | |")


if __name__ == "__main__":
    main()
