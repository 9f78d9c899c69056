"""What ``BRCSAC.learn()`` adds around the gradient updates: env steps/s of ``learn()`` against the rate the updates
alone would allow, with the loop's time split into updates, env steps, action selection, replay adds and the rest
(SB3's loop: callbacks, logging, episode bookkeeping, BRCSAC's per-call checks), all measured in one run.

    MUJOCO_GL=disable python benchmarks/learn_overhead.py --threads 2 --widths 128 256 512 1024
    MUJOCO_GL=disable python benchmarks/learn_overhead.py --tasks demo --widths 256     # a multi-task suite

``--tasks``: one or more Gymnasium ids (one run on all of them) or a suite name. Each configuration first fills the
replay with ``--learning-starts`` random steps per task (not timed), then times ``--steps`` env steps per task of
training (2 updates per env step, BRCSAC's default). "updates only" is env steps per second if the updates were the
only cost (env steps / seconds inside ``train()``); "loop share" is the fraction of ``learn()``'s time outside
``train()``.
"""

import argparse
import os
import time
from collections import defaultdict
from collections.abc import Callable
from typing import Any

import torch as th

from sb3_brc import BRCSAC
from sb3_brc.envs.suites import SUITES, make_suite
from sb3_brc.envs.vec_env import MultiTaskVecEnv


def timed(totals: dict[str, float], key: str, function: Callable[..., Any]) -> Callable[..., Any]:
    """``function``, adding its wall time to ``totals[key]`` on each call."""

    def wrapper(*args: Any, **kwargs: Any) -> Any:
        start = time.perf_counter()
        try:
            return function(*args, **kwargs)
        finally:
            totals[key] += time.perf_counter() - start

    return wrapper


def make_env(tasks: list[str], seed: int) -> MultiTaskVecEnv:
    if len(tasks) == 1 and tasks[0] in SUITES:
        env = make_suite(tasks[0], seed=seed)
        assert isinstance(env, MultiTaskVecEnv), f"{tasks[0]} is not a continuous-action suite"
        return env
    return MultiTaskVecEnv(tasks, seed=seed)


def measure(tasks: list[str], width: int, steps: int, learning_starts: int, seed: int = 0) -> dict[str, float]:
    """Seconds spent in each part of ``learn()`` over ``steps`` env steps per task, after the warm-up."""
    env = make_env(tasks, seed)
    n = env.num_envs
    model = BRCSAC(
        "MlpPolicy",
        env,
        learning_starts=learning_starts * n,
        policy_kwargs=dict(net_arch=dict(pi=[256], qf=[width, width])),
        seed=seed,
    )
    model.learn(learning_starts * n + 2 * n)  # warm-up and the first updates (lazy initialisations), not timed
    totals: dict[str, float] = defaultdict(float)
    model.train = timed(totals, "updates", model.train)  # type: ignore[method-assign]
    model._sample_action = timed(totals, "action selection", model._sample_action)  # type: ignore[method-assign]
    assert model.env is not None and model.replay_buffer is not None
    model.env.step = timed(totals, "env steps", model.env.step)  # type: ignore[method-assign]
    model.replay_buffer.add = timed(totals, "replay add", model.replay_buffer.add)  # type: ignore[method-assign]
    start = time.perf_counter()
    model.learn(steps * n, reset_num_timesteps=False)
    totals["learn"] = time.perf_counter() - start
    env.close()
    return dict(totals, env_steps=steps * n)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tasks", nargs="+", default=["HalfCheetah-v5"])
    parser.add_argument("--widths", type=int, nargs="+", default=[128, 256, 512, 1024])
    parser.add_argument("--steps", type=int, default=200, help="timed env steps per task")
    parser.add_argument("--learning-starts", type=int, default=300, help="random steps per task before the timing")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    os.environ.setdefault("MUJOCO_GL", "disable")
    th.set_num_threads(args.threads)
    parts = ["updates", "env steps", "action selection", "replay add"]
    print(f"torch {th.__version__}, {th.get_num_threads()} threads, tasks {' '.join(args.tasks)}")
    header = "| width | learn() env steps/s | updates only env steps/s | loop share |"
    header += "".join(f" {part} |" for part in parts) + " rest of the loop |"
    print(header)
    print("|---" * (header.count("|") - 1) + "|")
    for width in args.widths:
        t = measure(args.tasks, width, args.steps, args.learning_starts)
        rest = t["learn"] - sum(t[part] for part in parts)
        shares = "".join(f" {100 * t[part] / t['learn']:.1f}% |" for part in parts)
        print(
            f"| {width} | {t['env_steps'] / t['learn']:.1f} | {t['env_steps'] / t['updates']:.1f} "
            f"| {100 * (1 - t['updates'] / t['learn']):.1f}% |{shares} {100 * rest / t['learn']:.1f}% |",
            flush=True,
        )


if __name__ == "__main__":
    main()
