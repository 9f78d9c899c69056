"""End-to-end CPU training speed of ``BRCSAC.learn()`` against the official JAX BRC training loop
(naumix/BiggerRegularizedCategorical), side by side on one DMC task: env steps per second while training, updates
included.

    python benchmarks/vs_reference_loop.py --reference /path/to/BiggerRegularizedCategorical \\
        --jax-python /path/to/venv/bin/python
    python benchmarks/vs_reference_loop.py --reference REF --jax-python PY --task walker-walk --widths 256 512 1024 \\
        --seconds 60 --rounds 6 --threads 1

``--reference`` and ``--jax-python`` as in ``vs_reference.py``; the JAX virtual environment also needs mujoco,
dm_control, shimmy, imageio and packaging (the reference's env code builds DMC tasks through shimmy, which imports
Gymnasium's MuJoCo renderer), the versions this package is tested with:

    pip install mujoco==3.3.0 dm_control==1.0.28 shimmy==2.0.1 imageio packaging

The reference runs in the
worker subprocess ``vs_reference_worker.py``: its training loop is ``train.py``'s, rebuilt there from the
reference's own classes (see that file), without evaluation or wandb.

Settings, on both sides: the DMC task ``--task`` (a short name, ``cheetah-run``), seed 0, a single task (batch 256),
2 updates per env step, critic ``net_arch qf=[width, width]`` (``--widths``; the reference's BroNet of depth 2; the
parameter tensors of both sides are compared before timing), actor ``pi=[256]``, replay capacity
``--buffer-size``. Each side first takes ``--warmup`` env steps with random actions and no updates (SB3's
``learning_starts``; the reference's ``start_training = warmup + 1``), then a few training steps (JAX compiles its
action sampling and its update; our side estimates its speed), none of it timed. Then each side trains for
``--seconds`` per width, in ``--rounds`` alternating slices (reference, sb3-brc, reference, ...), so machine drift
hits both. A reference slice runs loop iterations until its time is up and waits for the last update; an sb3-brc
slice is one ``model.learn(n, reset_num_timesteps=False)`` call, n from the speed measured so far. "cores used" is
process CPU time over wall time while timing (1.00: one busy core).
"""

import argparse
import os
import platform
import sys
import time
from datetime import datetime, timezone
from importlib.metadata import version

import torch as th
from vs_reference import (
    ACTOR_WIDTH,
    N_ATOMS,
    N_CRITICS,
    UPDATES_PER_CALL,
    Worker,
    add_worker_arguments,
    alternate,
    check_same_networks,
    cpu_model,
    our_update_kwargs,
    our_update_line,
    param_sizes,
)

from sb3_brc import BRCSAC, MultiTaskVecEnv

BATCH = 256  # single-task batch of the reference's train.py
ENV_PACKAGES = ("gymnasium", "mujoco", "dm_control", "shimmy")


class OurLoop:
    """BRCSAC on one DMC task after its random warm-up; ``time`` trains it with ``learn()`` for about ``seconds``."""

    def __init__(
        self, task: str, width: int, warmup: int, buffer: int, seed: int, calibrate_seconds: float, **update_kwargs: bool
    ):
        self.env = MultiTaskVecEnv([task], seed=seed)
        self.model = BRCSAC(
            "MlpPolicy",
            self.env,
            learning_starts=warmup,
            buffer_size=buffer,
            batch_size=BATCH,
            gradient_steps=UPDATES_PER_CALL,
            policy_kwargs=dict(net_arch=dict(pi=[ACTOR_WIDTH], qf=[width, width]), n_atoms=N_ATOMS, n_critics=N_CRITICS),
            seed=seed,
            device="cpu",
            **update_kwargs,  # compile_update, mixed_precision
        )
        self.model.learn(warmup)  # random actions, no updates
        self.model.learn(1, reset_num_timesteps=False)  # the first updates (with compile_update: the compilation)
        # First training steps (lazy initialisations) and a speed estimate: learn() calls of doubling length
        steps = 1
        while True:
            result = self.time_steps(steps)
            if result["wall"] >= calibrate_seconds:
                break
            steps *= 2

    def time_steps(self, steps: int) -> dict:
        before, cpu0, start = self.model.num_timesteps, time.process_time(), time.perf_counter()
        self.model.learn(steps, reset_num_timesteps=False)
        wall, cpu = time.perf_counter() - start, time.process_time() - cpu0
        assert self.model.num_timesteps - before == steps, "learn() ran another number of env steps"
        self.rate = steps / wall
        return {"calls": steps, "updates": steps * UPDATES_PER_CALL, "wall": wall, "cpu": cpu}

    def time(self, seconds: float) -> dict:
        return self.time_steps(max(1, round(self.rate * seconds)))

    def close(self) -> None:
        self.env.close()


def run_width(worker: Worker, args, width: int) -> dict:
    slice_seconds = args.seconds / args.rounds
    ref_info = worker.ask(
        args.setup_timeout,
        cmd="setup_loop",
        task=args.task,
        width=width,
        batch=BATCH,
        updates=UPDATES_PER_CALL,
        warmup=args.warmup,
        buffer=args.buffer_size,
        seed=args.seed,
        init=args.jax_init,
    )
    start = time.perf_counter()
    ours = OurLoop(
        args.task,
        width,
        args.warmup,
        args.buffer_size,
        args.seed,
        calibrate_seconds=min(1.0, slice_seconds / 4),
        **our_update_kwargs(args),
    )
    our_setup = time.perf_counter() - start
    sizes = param_sizes(ours.model)
    check_same_networks(sizes, ref_info, f"{args.task} width {width}")
    totals, slices = alternate(worker, ours, args, "calls")
    ours.close()
    del ours
    print(
        f"  width {width}: obs {ref_info['obs']}, action {ref_info['act']}; reference init {ref_info['init_seconds']:.0f} s, "
        f"warm-up and first updates {ref_info['compile_seconds']:.0f} s; sb3-brc set-up and warm-up {our_setup:.0f} s; "
        f"actor {sum(sizes[0])} and critic {sum(sizes[1])} parameters on both sides; "
        f"env steps/s per slice: reference {', '.join(f'{x:.1f}' for x in slices['ref'])}; "
        f"sb3-brc {', '.join(f'{x:.1f}' for x in slices['ours'])}; "
        f"env steps timed: reference {totals['ref']['calls']:.0f}, sb3-brc {totals['ours']['calls']:.0f}",
        file=sys.stderr,
        flush=True,
    )
    return dict(
        width=width,
        **{f"{side}_sps": t["calls"] / t["wall"] for side, t in totals.items()},
        **{f"{side}_cores": t["cpu"] / t["wall"] for side, t in totals.items()},
    )


def our_versions() -> str:
    names = ("torch", "stable_baselines3", *ENV_PACKAGES)
    return ", ".join(f"{name} {version(name)}" for name in names) + f", Python {platform.python_version()}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_worker_arguments(parser, "Python of a JAX virtual environment (see above)")
    parser.add_argument("--task", default="cheetah-run", help="DMC task, short name (domain-task)")
    parser.add_argument("--widths", type=int, nargs="+", default=[256, 512], help="critic widths")
    parser.add_argument("--seconds", type=float, default=20.0, help="timed training per implementation and width")
    parser.add_argument("--warmup", type=int, default=1000, help="random-action env steps before training (not timed)")
    parser.add_argument("--buffer-size", type=int, default=1_000_000, help="replay capacity (train.py's default)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    if args.task.startswith("dm_control/") or "-" not in args.task:
        parser.error("--task takes a DMC short name such as cheetah-run (the reference's env names)")
    if args.rounds < 1 or args.seconds <= 0:
        parser.error("--rounds must be at least 1 and --seconds positive")
    os.environ["MUJOCO_GL"] = "disable"  # no rendering; the worker inherits it too
    th.set_num_threads(args.threads)

    worker = Worker(args.jax_python, args.reference, args.threads)
    try:
        ref_versions = worker.ask(args.setup_timeout, cmd="versions", packages=list(ENV_PACKAGES))["versions"]
        rows = [run_width(worker, args, width) for width in args.widths]
    finally:
        worker.close()

    print(f"{datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC, {cpu_model()}, {args.threads} thread(s) per implementation")
    print(f"sb3-brc: {our_versions()}; reference: {', '.join(f'{k} {v}' for k, v in ref_versions.items())}")
    print(
        f"{args.task}, seed {args.seed}: {args.warmup} random steps (not timed), then {args.seconds:g} s of training per "
        f"implementation and width in {args.rounds} alternating slices; batch {BATCH}, {UPDATES_PER_CALL} updates per "
        "env step, no evaluation"
    )
    print(our_update_line(args) + "\n")
    header = (
        "| critic width | reference env steps/s | sb3-brc env steps/s | sb3-brc/reference | reference updates/s "
        "| sb3-brc updates/s | cores used ref / sb3-brc |"
    )
    print(header)
    print("|---" * (header.count("|") - 1) + "|")
    for row in rows:
        print(
            f"| {row['width']} | {row['ref_sps']:.1f} | {row['ours_sps']:.1f} | {row['ours_sps'] / row['ref_sps']:.2f} "
            f"| {UPDATES_PER_CALL * row['ref_sps']:.1f} | {UPDATES_PER_CALL * row['ours_sps']:.1f} "
            f"| {row['ref_cores']:.2f} / {row['ours_cores']:.2f} |"
        )


if __name__ == "__main__":
    main()
