"""Gradient-update throughput of BRCSAC.train() against SB3 SAC.train(), in one process.

For each critic width and batch size it prints full updates/s (critic + Polyak + actor + temperature), the
achieved GFLOP/s from an exact count of the update's matmul FLOPs (torch's FlopCounterMode on one update),
the same for SB3 SAC with an equally wide plain MLP (4 width x width critic layers, as BroNet's two blocks;
actor 2 layers of 256, as BroNet's 256-wide block), their ratio, and the machine's peak fp32 matmul GFLOP/s
measured in the same run.

    python benchmarks/throughput.py --threads 2                      # widths 256 512 1024, batch 256
    python benchmarks/throughput.py --threads 2 --widths 256 512 1024 2048 --batches 256 1024 --bf16
    python benchmarks/throughput.py --threads 2 --env-steps          # env steps/s of learn() on DMC
    python benchmarks/throughput.py --threads 2 --widths 128 256 --compile   # compile_update=True vs eager
    python benchmarks/throughput.py --threads 2 --widths 256 512 --batches 1024 --tasks 10 --compile

``--bf16`` adds BRCSAC under bf16 autocast; its GFLOP/s can exceed the fp32 peak. On a device without native bf16
matmuls ``mixed_precision=True`` trains in float32, so the script forces autocast there to measure the emulated
bf16 path (the header says which it is).
"""

import argparse
import time

import gymnasium as gym
import numpy as np
import torch as th
from stable_baselines3 import SAC
from torch.utils.flop_counter import FlopCounterMode

from sb3_brc import BRCSAC, MultiTaskVecEnv
from sb3_brc.common.utils import native_bf16_matmul


class RandomEnv(gym.Env):
    """Walker-sized spaces (24-dim observation, 6-dim action), random transitions: only the update is timed."""

    observation_space = gym.spaces.Box(-np.inf, np.inf, (24,), np.float32)
    action_space = gym.spaces.Box(-1, 1, (6,), np.float32)

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        return self.observation_space.sample().clip(-5, 5), {}

    def step(self, action):
        return self.observation_space.sample().clip(-5, 5), float(self.np_random.normal()), False, False, {}


def peak_matmul_gflops(size: int = 2048, repeats: int = 20) -> float:
    a, b = th.randn(size, size), th.randn(size, size)
    for _ in range(3):
        a @ b
    start = time.perf_counter()
    for _ in range(repeats):
        a @ b
    return 2 * size**3 * repeats / (time.perf_counter() - start) / 1e9


def make_model(algo: str, width: int, batch: int, device: str = "cpu", tasks: int = 1, **brc_kwargs):
    """``algo``: "brc", "brc-bf16" (BRCSAC with mixed_precision=True) or "sac"; ``brc_kwargs`` go to BRCSAC; with
    ``tasks`` > 1 BRCSAC learns that many RandomEnv tasks (task embeddings)."""
    env = RandomEnv() if tasks == 1 else MultiTaskVecEnv([RandomEnv] * tasks)
    if algo.startswith("brc"):
        model = BRCSAC(
            "MlpPolicy",
            env,
            batch_size=batch,
            learning_starts=2048 * tasks,
            buffer_size=10_000 * tasks,
            policy_kwargs=dict(net_arch=dict(pi=[256], qf=[width, width])),
            seed=0,
            mixed_precision=algo == "brc-bf16",
            device=device,
            **brc_kwargs,
        )
    else:
        model = SAC(
            "MlpPolicy",
            env,
            batch_size=batch,
            learning_starts=2048,
            buffer_size=10_000,
            gradient_steps=2,
            policy_kwargs=dict(net_arch=dict(pi=[256, 256], qf=[width] * 5)),
            seed=0,
            device=device,
        )
    model.learn(2048 * tasks)  # fills the buffer with random-action transitions, no update yet
    if algo == "brc-bf16":
        model._updates.autocast_bf16 = True  # measure bf16 autocast also where mixed_precision would fall back to float32
    return model


def flops_per_update(model, batch: int) -> float:
    """Matmul FLOPs of one update, counted after a warm-up."""
    model.train(gradient_steps=2, batch_size=batch)
    with FlopCounterMode(display=False) as counter:
        model.train(gradient_steps=1, batch_size=batch)
    return counter.get_total_flops()


def measure(model, batch: int, seconds: float) -> tuple[float, float]:
    """(updates per second, matmul FLOPs per update)."""
    flops = flops_per_update(model, batch)
    return updates_per_second(model, batch, seconds), flops


def updates_per_second(model, batch: int, seconds: float) -> float:
    steps, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        model.train(gradient_steps=2, batch_size=batch)
        steps += 2
    return steps / (time.perf_counter() - start)


def compile_vs_eager(widths: list[int], batch: int, seconds: float, slices: int = 4, tasks: int = 1) -> None:
    """BRCSAC with ``compile_update=True`` (the whole update in one graph) against the eager update, alternating
    ``slices`` timing windows per model so that machine drift hits both; the first compiled update's time is the
    compilation cost."""
    print("| tasks | width | batch | eager upd/s | compiled upd/s | compiled / eager | first compiled update (s) |")
    print("|---|---|---|---|---|---|---|")
    for width in widths:
        eager = make_model("brc", width, batch, tasks=tasks, compile_update=False)
        compiled = make_model("brc", width, batch, tasks=tasks, compile_update=True)
        start = time.perf_counter()
        compiled.train(gradient_steps=2, batch_size=batch)
        compile_seconds = time.perf_counter() - start
        eager.train(gradient_steps=2, batch_size=batch)  # warm-up
        rates: dict[str, list[float]] = {"eager": [], "compiled": []}
        for _ in range(slices):
            for name, model in (("eager", eager), ("compiled", compiled)):
                rates[name].append(updates_per_second(model, batch, seconds / slices))
        eager_ups, compiled_ups = float(np.mean(rates["eager"])), float(np.mean(rates["compiled"]))
        print(
            f"| {tasks} | {width} | {batch} | {eager_ups:.2f} | {compiled_ups:.2f} | {compiled_ups / eager_ups:.2f} "
            f"| {compile_seconds:.0f} |",
            flush=True,
        )


def env_steps_per_second(task: str, seconds: float) -> None:
    """Env steps/s of BRCSAC.learn() on one DMC task: random warm-up, then training (default sizes)."""
    from sb3_brc import MultiTaskVecEnv

    env = MultiTaskVecEnv([task], seed=0)
    model = BRCSAC("MlpPolicy", env, learning_starts=1000, seed=0)
    start = time.perf_counter()
    model.learn(1000)
    warmup = 1000 / (time.perf_counter() - start)
    steps, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        model.learn(20, reset_num_timesteps=False)
        steps += 20
    training = steps / (time.perf_counter() - start)
    print(
        f"learn() on {task}, default sizes (critic 512, batch 256, 2 updates per step): "
        f"{warmup:.0f} env steps/s during random warm-up, {training:.1f} env steps/s while training"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--widths", type=int, nargs="+", default=[256, 512, 1024])
    parser.add_argument("--batches", type=int, nargs="+", default=[256])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seconds", type=float, default=5.0, help="timing window per configuration")
    parser.add_argument("--bf16", action="store_true", help="also time BRCSAC with mixed_precision=True")
    parser.add_argument("--env-steps", action="store_true", help="only time learn() on a DMC task")
    parser.add_argument("--task", default="dm_control/walker-walk-v0")
    parser.add_argument("--compile", action="store_true", help="only time compile_update=True against eager")
    parser.add_argument("--tasks", type=int, default=1, help="--compile: tasks of the BRCSAC model (task embeddings)")
    args = parser.parse_args()
    th.set_num_threads(args.threads)
    if args.env_steps:
        env_steps_per_second(args.task, args.seconds)
        return
    if args.compile:
        for batch in args.batches:
            compile_vs_eager(args.widths, batch, args.seconds, tasks=args.tasks)
        return
    peak = peak_matmul_gflops()
    native = "native" if native_bf16_matmul(th.device("cpu")) else "emulated (mixed_precision=True trains in float32 here)"
    print(f"torch {th.__version__}, {th.get_num_threads()} threads, peak fp32 matmul (2048^3): {peak:.0f} GFLOP/s")
    print(f"bf16 matmul on this CPU: {native}\n")
    header = "| width | batch | BRC upd/s | BRC GFLOP/s | BRC % peak | SAC upd/s | SAC GFLOP/s | SAC % peak | BRC/SAC upd/s |"
    if args.bf16:
        header += " BRC bf16 upd/s | bf16 GFLOP/s | bf16/fp32 |"
    print(header)
    print("|---" * (header.count("|") - 1) + "|")
    for batch in args.batches:
        for width in args.widths:
            brc_ups, brc_flops = measure(make_model("brc", width, batch), batch, args.seconds)
            sac_ups, sac_flops = measure(make_model("sac", width, batch), batch, args.seconds)
            brc_gf, sac_gf = brc_ups * brc_flops / 1e9, sac_ups * sac_flops / 1e9
            row = (
                f"| {width} | {batch} | {brc_ups:.2f} | {brc_gf:.0f} | {100 * brc_gf / peak:.0f}% | {sac_ups:.2f} "
                f"| {sac_gf:.0f} | {100 * sac_gf / peak:.0f}% | {brc_ups / sac_ups:.2f} |"
            )
            if args.bf16:
                bf16_ups, _ = measure(make_model("brc-bf16", width, batch), batch, args.seconds)
                row += f" {bf16_ups:.2f} | {bf16_ups * brc_flops / 1e9:.0f} | {bf16_ups / brc_ups:.2f} |"
            print(row, flush=True)


if __name__ == "__main__":
    main()
