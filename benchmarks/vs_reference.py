"""CPU speed of BRCSAC.train() against the official JAX BRC update (naumix/BiggerRegularizedCategorical), side by side.

    python benchmarks/vs_reference.py --reference /path/to/BiggerRegularizedCategorical --jax-python /path/to/venv/bin/python
    python benchmarks/vs_reference.py --reference REF --jax-python PY --widths 128 256 512 --multi-task-widths 256 \\
        --seconds 3 --threads 1
    python benchmarks/vs_reference.py --reference REF --jax-python PY --widths 128 256 --multi-task-widths 128 \\
        --threads 2 --compile-update      # sb3-brc with torch.compile, against the jitted reference
    python benchmarks/vs_reference.py --reference REF --jax-python PY --widths 512 1024 --threads 2 \\
        --compile-update --mixed-precision    # and with bf16 autocast (CPUs with AVX512-BF16 or AMX)

``--reference`` is a checkout of the reference repository (imported from there, never copied); ``--jax-python`` the
Python of a virtual environment with jax, flax, optax, distrax and gymnasium, which runs the reference in a worker
subprocess (``vs_reference_worker.py``, JSON lines over stdin/stdout): JAX and torch never share a process or their
thread pools.

Settings, as the reference's ``train.py`` runs them:

- single task: observation 24, action 6, batch 256 (``--widths``);
- 10 tasks: observation 39, action 4, batch 1024, one task embedding per task (``--multi-task-widths``);

2 gradient updates per timed call: ``BRCSAC.train(gradient_steps=2, batch_size=...)`` against what ``train.py`` does
after one env step (sample 2 batches from its replay buffer, normalise their rewards, ``agent.update(batches, 2)``,
one jitted function), both including their replay sampling. The two implementations alternate in slices of
``--seconds / --rounds`` (A B A B ...), so machine drift hits both.

Architectures (the worker's parameter tensors are checked against ours before timing): critic ``net_arch qf=[width,
width]`` is the reference's BroNet of depth 2 (input Dense+LayerNorm+ReLU, 2 residual blocks, Dense head of 101
atoms), 2 heads; actor ``pi=[256]`` is its BroNet of depth 1 with mean and log-std heads; multi-task: a 32-wide,
L2-normalised task embedding owned by the critic, appended to critic and (detached) actor inputs.

FLOPs per update are counted analytically from the layer sizes: matmuls only (2 * in * out per sample and dense
layer), as 6 critic forwards (target, online forward + backward in the critic loss, forward + input-only backward
in the actor loss) plus 4 actor forwards (next action; forward + backward in the actor loss), times the batch.
LayerNorm, softmax, the categorical projection and the optimisers are not counted. The peak is the fastest
2048^3 fp32 matmul of torch and of jax.numpy, each measured at the start and at the end of the run with the same
thread count. "cores used" is process CPU time over wall time while timing (1.00: one busy core).
"""

import argparse
import json
import os
import platform
import queue
import subprocess
import sys
import threading
from datetime import datetime, timezone

import gymnasium as gym
import numpy as np
import torch as th
from throughput import peak_matmul_gflops
from vs_reference_worker import time_calls

from sb3_brc import BRCSAC, MultiTaskVecEnv
from sb3_brc.common.utils import native_bf16_matmul

WORKER = os.path.join(os.path.dirname(os.path.abspath(__file__)), "vs_reference_worker.py")
ACTOR_WIDTH = 256
N_ATOMS = 101
N_CRITICS = 2
EMBEDDING_DIM = 32
UPDATES_PER_CALL = 2


class RandomEnv(gym.Env):
    """Random observations and rewards, episodes of 100 steps: only the update is timed."""

    def __init__(self, obs_dim: int, act_dim: int):
        self.observation_space = gym.spaces.Box(-np.inf, np.inf, (obs_dim,), np.float32)
        self.action_space = gym.spaces.Box(-1, 1, (act_dim,), np.float32)
        self.t = 0

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.t = 0
        return self.observation_space.sample().clip(-5, 5), {}

    def step(self, action):
        self.t += 1
        return self.observation_space.sample().clip(-5, 5), float(self.np_random.normal()), False, self.t >= 100, {}


def update_flops(obs: int, act: int, tasks: int, width: int, batch: int) -> float:
    """Matmul FLOPs of one update (see the module docstring)."""
    embedding = EMBEDDING_DIM if tasks > 1 else 0
    critic_in = obs + act + embedding
    critic = N_CRITICS * 2 * (critic_in * width + 4 * width * width + width * N_ATOMS)
    actor = 2 * ((obs + embedding) * ACTOR_WIDTH + 2 * ACTOR_WIDTH * ACTOR_WIDTH + 2 * ACTOR_WIDTH * act)
    return batch * (6 * critic + 4 * actor)


class Worker:
    """The JAX worker subprocess; ``ask`` sends one request and waits for its answer."""

    def __init__(self, python: str, reference: str, threads: int):
        self.proc = subprocess.Popen(
            [python, WORKER, "--reference", reference, "--threads", str(threads)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            bufsize=1,
        )
        self.lines: queue.Queue[str | None] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.put(line)
        self.lines.put(None)

    def ask(self, timeout: float, **request) -> dict:
        assert self.proc.stdin is not None
        self.proc.stdin.write(json.dumps(request) + "\n")
        self.proc.stdin.flush()
        try:
            line = self.lines.get(timeout=timeout)
        except queue.Empty:
            self.proc.kill()
            hint = " (try --jax-init eager)" if request.get("init") == "jit" else ""
            raise TimeoutError(f"JAX worker gave no answer to {request['cmd']!r} within {timeout:.0f} s{hint}") from None
        if line is None:
            raise RuntimeError(f"JAX worker exited (code {self.proc.wait()}); its messages are above")
        reply = json.loads(line)
        if "error" in reply:
            raise RuntimeError(f"JAX worker failed on {request['cmd']!r}:\n{reply['error']}")
        return reply

    def close(self) -> None:
        if self.proc.poll() is None:
            assert self.proc.stdin is not None
            self.proc.stdin.write(json.dumps({"cmd": "quit"}) + "\n")
            self.proc.stdin.close()
            self.proc.wait(timeout=60)


class OurStep:
    """BRCSAC at one setting, its buffer filled with random transitions; ``time`` runs ``train()`` calls."""

    def __init__(self, obs: int, act: int, tasks: int, width: int, batch: int, fill: int, **update_kwargs: bool):
        if tasks == 1:
            env = RandomEnv(obs, act)
        else:
            env = MultiTaskVecEnv(
                [lambda: RandomEnv(obs, act)] * tasks, task_names=[f"random{i}" for i in range(tasks)], seed=0
            )
        self.batch = batch
        self.model = BRCSAC(
            "MlpPolicy",
            env,
            batch_size=batch,
            learning_starts=fill * tasks,
            buffer_size=fill * tasks,
            policy_kwargs=dict(net_arch=dict(pi=[ACTOR_WIDTH], qf=[width, width]), n_atoms=N_ATOMS, n_critics=N_CRITICS),
            seed=0,
            device="cpu",
            **update_kwargs,  # compile_update, mixed_precision
        )
        self.model.learn(fill * tasks)  # random-action transitions only: learning starts after them
        for _ in range(2):  # with compile_update, the first call compiles (untimed, as the reference's jit)
            self()

    def __call__(self) -> None:
        self.model.train(gradient_steps=UPDATES_PER_CALL, batch_size=self.batch)

    def time(self, seconds: float) -> dict:
        return time_calls(self, seconds, UPDATES_PER_CALL)


def param_sizes(model: BRCSAC) -> tuple[list[int], list[int]]:
    """Sizes of the actor's and of the critic's parameter tensors, sorted (compared with the reference's)."""
    actor = sorted(p.numel() for p in model.actor.parameters())
    critic = sorted(p.numel() for p in model.critic.parameters())
    return actor, critic


def add_worker_arguments(parser: argparse.ArgumentParser, jax_python_help: str) -> None:
    """The flags of the reference side, of the alternating timing and of our side's update, shared with
    ``vs_reference_loop.py``."""
    parser.add_argument("--reference", required=True, help="checkout of naumix/BiggerRegularizedCategorical")
    parser.add_argument("--jax-python", required=True, help=jax_python_help)
    parser.add_argument("--rounds", type=int, default=4, help="alternating slices the timing is split into")
    parser.add_argument("--threads", type=int, default=1, help="CPU threads of each implementation")
    parser.add_argument(
        "--jax-init",
        choices=["eager", "jit"],
        default="eager",
        help="build the reference's models eagerly (slow, safe) or with its own jitted init (can hang on some jaxlibs)",
    )
    parser.add_argument("--setup-timeout", type=float, default=1800.0, help="seconds to wait for any worker answer")
    parser.add_argument(
        "--compile-update",
        action="store_true",
        help="time BRCSAC(compile_update=True) (the whole update compiled as one graph)",
    )
    parser.add_argument(
        "--mixed-precision",
        action="store_true",
        help="time BRCSAC(mixed_precision=True) (bf16 autocast where the CPU multiplies bf16 natively; the reference "
        "stays in float32, and %% of peak stays against the float32 peak)",
    )


def our_update_kwargs(args: argparse.Namespace) -> dict[str, bool]:
    """Our side's update options from the flags (``--compile-update``, ``--mixed-precision``; eager without them)."""
    return dict(compile_update=args.compile_update, mixed_precision=args.mixed_precision)


def our_update_line(args: argparse.Namespace) -> str:
    """The header line naming how sb3-brc's update ran (``--compile-update``, ``--mixed-precision``)."""
    kind = "one compiled graph (compile_update=True)" if args.compile_update else "eager"
    if args.mixed_precision:
        native = native_bf16_matmul(th.device("cpu"))
        kind += ", mixed_precision=True (" + ("bf16 autocast" if native else "no native bf16 here: float32") + ")"
    return f"sb3-brc update: {kind}"


def alternate(worker: Worker, ours, args, count: str) -> tuple[dict[str, dict[str, float]], dict[str, list[float]]]:
    """Time the reference (``worker``) and ``ours`` in ``args.rounds`` alternating slices of ``args.seconds /
    args.rounds`` each, so that machine drift hits both: per side, the totals of ``count`` (what a slice counts:
    "updates" or "calls"), "wall" and "cpu", and each slice's ``count`` per second."""
    totals = {side: {count: 0.0, "wall": 0.0, "cpu": 0.0} for side in ("ref", "ours")}
    slices: dict[str, list[float]] = {"ref": [], "ours": []}
    slice_seconds = args.seconds / args.rounds
    for _ in range(args.rounds):
        for side in ("ref", "ours"):
            if side == "ref":
                result = worker.ask(args.setup_timeout, cmd="time", seconds=slice_seconds)
            else:
                result = ours.time(slice_seconds)
            for key in totals[side]:
                totals[side][key] += result[key]
            slices[side].append(result[count] / result["wall"])
    return totals, slices


def check_same_networks(ours: tuple[list[int], list[int]], theirs: dict, label: str) -> None:
    """Same number of parameter tensors with the same sizes, for actor and critic (task embedding included)."""
    for name, mine, ref in (("actor", ours[0], theirs["actor_params"]), ("critic", ours[1], theirs["critic_params"])):
        if mine != ref:
            raise RuntimeError(
                f"{label}: {name} differs from the reference's: {len(mine)} tensors / {sum(mine)} parameters here, "
                f"{len(ref)} / {sum(ref)} there ({mine} vs {ref})"
            )


def run_setting(worker: Worker, args, label: str, obs: int, act: int, tasks: int, width: int, batch: int) -> dict:
    fill = 2048 if tasks == 1 else 512  # transitions per task in each replay buffer
    setting = dict(obs=obs, act=act, tasks=tasks, width=width, batch=batch)
    ref_info = worker.ask(args.setup_timeout, cmd="setup", updates=UPDATES_PER_CALL, fill=fill, init=args.jax_init, **setting)
    ours = OurStep(fill=fill, **our_update_kwargs(args), **setting)
    sizes = param_sizes(ours.model)
    check_same_networks(sizes, ref_info, f"{label} width {width}")
    totals, slices = alternate(worker, ours, args, "updates")
    del ours
    print(
        f"  {label} width {width}: reference init {ref_info['init_seconds']:.0f} s, "
        f"compile {ref_info['compile_seconds']:.0f} s; "
        f"actor {sum(sizes[0])} and critic {sum(sizes[1])} parameters on both sides; "
        f"updates/s per slice: reference {', '.join(f'{x:.1f}' for x in slices['ref'])}; "
        f"sb3-brc {', '.join(f'{x:.1f}' for x in slices['ours'])}",
        file=sys.stderr,
        flush=True,
    )
    return dict(
        label=label,
        width=width,
        batch=batch,
        flops=update_flops(**setting),
        **{f"{side}_ups": t["updates"] / t["wall"] for side, t in totals.items()},
        **{f"{side}_cores": t["cpu"] / t["wall"] for side, t in totals.items()},
    )


def cpu_model() -> str:
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
        return next(line.split(":", 1)[1].strip() for line in out.splitlines() if line.startswith("Model name"))
    except (OSError, subprocess.CalledProcessError, StopIteration):
        return platform.processor() or "unknown CPU"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_worker_arguments(parser, "Python of a virtual environment with jax, flax, optax, distrax")
    parser.add_argument("--widths", type=int, nargs="*", default=[128, 256, 512, 1024, 2048], help="single-task widths")
    parser.add_argument("--multi-task-widths", type=int, nargs="*", help="10-task widths (default: --widths)")
    parser.add_argument("--seconds", type=float, default=10.0, help="timing per implementation and setting")
    args = parser.parse_args()
    th.set_num_threads(args.threads)
    if args.multi_task_widths is None:
        args.multi_task_widths = args.widths

    worker = Worker(args.jax_python, args.reference, args.threads)
    try:
        info = worker.ask(args.setup_timeout, cmd="info")
        torch_peak = peak_matmul_gflops()
        rows = [run_setting(worker, args, "1 task", 24, 6, 1, width, 256) for width in args.widths]
        rows += [run_setting(worker, args, "10 tasks", 39, 4, 10, width, 1024) for width in args.multi_task_widths]
        jax_peak_end = worker.ask(args.setup_timeout, cmd="info")["matmul_gflops"]
        torch_peak_end = peak_matmul_gflops()
    finally:
        worker.close()

    peak = max(info["matmul_gflops"], torch_peak, jax_peak_end, torch_peak_end)
    versions = ", ".join(f"{name} {version}" for name, version in info["versions"].items())
    print(f"{datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC, {cpu_model()}, {args.threads} thread(s) per implementation")
    print(f"sb3-brc: torch {th.__version__}, Python {platform.python_version()}; reference: {versions}")
    print(
        f"fp32 matmul 2048^3 GFLOP/s, start / end of the run: torch {torch_peak:.1f} / {torch_peak_end:.1f}, "
        f"jax {info['matmul_gflops']:.1f} / {jax_peak_end:.1f}; peak used: {peak:.1f}"
    )
    print(f"{args.seconds:g} s per implementation and setting, in {args.rounds} alternating slices; 2 updates per call")
    print(our_update_line(args) + "\n")
    header = (
        "| setting | critic width | batch | GFLOP/update | reference upd/s | sb3-brc upd/s | sb3-brc/reference "
        "| reference % fp32 peak | sb3-brc % fp32 peak | cores used ref / sb3-brc |"
    )
    print(header)
    print("|---" * (header.count("|") - 1) + "|")
    for row in rows:
        ref_pct = 100 * row["ref_ups"] * row["flops"] / 1e9 / peak
        our_pct = 100 * row["ours_ups"] * row["flops"] / 1e9 / peak
        print(
            f"| {row['label']} | {row['width']} | {row['batch']} | {row['flops'] / 1e9:.2f} | {row['ref_ups']:.1f} "
            f"| {row['ours_ups']:.1f} | {row['ours_ups'] / row['ref_ups']:.2f} | {ref_pct:.0f}% | {our_pct:.0f}% "
            f"| {row['ref_cores']:.2f} / {row['ours_cores']:.2f} |"
        )


if __name__ == "__main__":
    main()
