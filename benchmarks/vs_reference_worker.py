"""JAX side of ``vs_reference.py``: times the official BRC update (naumix/BiggerRegularizedCategorical) on request.

Started by ``vs_reference.py`` with the Python of a virtual environment that has jax, flax, optax, distrax and
gymnasium (the reference's modules import them); it never imports torch. It reads one JSON request per line on
stdin and answers one JSON line on stdout:

    {"cmd": "info"}                                  -> versions and the fp32 matmul GFLOP/s of jax.numpy.dot
    {"cmd": "setup", "obs": 24, "act": 6, "tasks": 1, "width": 512, "batch": 256, "updates": 2,
     "fill": 2048, "init": "eager"}                  -> builds the reference agent, compiles its update
    {"cmd": "time", "seconds": 1.0}                  -> calls of one env step's updates, wall and CPU seconds
    {"cmd": "quit"}

One timed call is what the reference's ``train.py`` does after each env step once training has started:
``ParallelReplayBuffer.sample(batch, updates)``, ``RewardNormalizer.normalize(batches, agent.get_temperature())``
and ``agent.update(batches, updates, step)`` (one jitted function running the updates with ``fori_loop``), then
waiting for the new parameters. The buffer and the normaliser are the reference's own classes, filled with random
transitions of the requested shapes.

Run by hand (for debugging):

    python benchmarks/vs_reference_worker.py --reference /path/to/BiggerRegularizedCategorical --threads 1
"""

import argparse
import json
import os
import sys
import time
import traceback


def configure_threads(threads: int) -> None:
    """Restrict XLA's CPU threads; must run before jax is imported."""
    if threads == 1:
        flags = os.environ.get("XLA_FLAGS", "")
        os.environ["XLA_FLAGS"] = f"{flags} --xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1".strip()
    elif hasattr(os, "sched_setaffinity") and threads < len(os.sched_getaffinity(0)):
        # XLA sizes its CPU thread pool from the CPUs this process may run on
        os.sched_setaffinity(0, sorted(os.sched_getaffinity(0))[:threads])


def matmul_gflops(size: int = 2048, repeats: int = 10) -> float:
    import jax
    import jax.numpy as jnp

    a = jax.random.normal(jax.random.PRNGKey(0), (size, size), jnp.float32)
    b = jax.random.normal(jax.random.PRNGKey(1), (size, size), jnp.float32)
    dot = jax.jit(jnp.dot)
    for _ in range(3):
        dot(a, b).block_until_ready()
    start = time.perf_counter()
    for _ in range(repeats):
        dot(a, b).block_until_ready()
    return 2 * size**3 * repeats / (time.perf_counter() - start) / 1e9


def param_sizes(params) -> list[int]:
    import jax

    return sorted(int(x.size) for x in jax.tree_util.tree_leaves(params))


class ReferenceStep:
    """The reference agent, buffer and normaliser at one setting; ``__call__`` runs one env step's updates."""

    def __init__(self, obs: int, act: int, tasks: int, width: int, batch: int, updates: int, fill: int, init: str):
        import jax
        import numpy as np
        from gymnasium.spaces import Box
        from jaxrl.agent.brc_learner import BRC
        from jaxrl.normalizer import RewardNormalizer
        from jaxrl.replay_buffer import ParallelReplayBuffer

        self.jax, self.batch, self.updates = jax, batch, updates
        np.random.seed(0)
        start = time.perf_counter()
        # As train.py: one sampled observation and action (leading axis of size 1) give the shapes; the defaults of
        # BRC are the paper's (actor width 256, critic depth 2, 2 critic heads, 101 bins, task embedding 32)
        sample_obs, sample_act = np.zeros((1, obs), np.float32), np.zeros((1, act), np.float32)
        if init == "eager":
            # BRC.__init__ jits its model initialisation; with some jaxlib versions on few-core CPUs that jitted
            # program (batched QR of the vmapped orthogonal init) never returns. Eagerly it does.
            with jax.disable_jit():
                self.agent = BRC(0, sample_obs, sample_act, num_tasks=tasks, width_critic=width)
        else:
            self.agent = BRC(0, sample_obs, sample_act, num_tasks=tasks, width_critic=width)
        jax.block_until_ready(self.agent.critic.params)
        self.init_seconds = time.perf_counter() - start

        space = Box(-np.inf, np.inf, (tasks, obs), np.float32)
        self.buffer = ParallelReplayBuffer(space, act, capacity=fill, num_tasks=tasks)
        self.normalizer = RewardNormalizer(tasks, target_entropy=self.agent.target_entropy, discount=self.agent.discount)
        rng = np.random.default_rng(0)
        episode = 100
        for i in range(fill):
            truncated = np.full(tasks, (i + 1) % episode == 0)
            rewards = rng.normal(size=tasks).astype(np.float32)
            self.buffer.insert(
                rng.normal(size=(tasks, obs)).astype(np.float32),
                rng.uniform(-1, 1, size=(tasks, act)).astype(np.float32),
                rewards,
                np.ones(tasks, np.float32),
                rng.normal(size=(tasks, obs)).astype(np.float32),
            )
            # Episodes of 100 steps end by truncation: the normaliser gets finite return bounds
            self.normalizer.update(rewards, np.zeros(tasks, bool), truncated)
        self.step = fill

        start = time.perf_counter()
        for _ in range(2):  # the first call compiles
            self()
        self.compile_seconds = time.perf_counter() - start

    def __call__(self) -> None:
        self.step += 1
        batches = self.buffer.sample(self.batch, self.updates)
        batches = self.normalizer.normalize(batches, self.agent.get_temperature())
        self.agent.update(batches, self.updates, self.step)
        agent = self.agent
        self.jax.block_until_ready((agent.actor.params, agent.critic.params, agent.target_critic.params, agent.temp.params))

    def describe(self) -> dict:
        return {
            "actor_params": param_sizes(self.agent.actor.params),
            "critic_params": param_sizes(self.agent.critic.params),
            "init_seconds": self.init_seconds,
            "compile_seconds": self.compile_seconds,
        }

    def time(self, seconds: float) -> dict:
        calls, cpu0, start = 0, time.process_time(), time.perf_counter()
        while True:
            self()
            calls += 1
            wall = time.perf_counter() - start
            if wall >= seconds:
                return {"calls": calls, "updates": calls * self.updates, "wall": wall, "cpu": time.process_time() - cpu0}


def versions() -> dict:
    from importlib.metadata import version

    return {name: version(name) for name in ("jax", "jaxlib", "flax", "optax", "distrax", "numpy")}


def serve(requests, answer) -> None:
    step = None
    for line in requests:
        request = json.loads(line)
        try:
            cmd = request.pop("cmd")
            if cmd == "quit":
                return
            if cmd == "info":
                reply = {"versions": versions(), "matmul_gflops": matmul_gflops()}
            elif cmd == "setup":
                step = None  # free the previous agent first
                step = ReferenceStep(**request)
                reply = step.describe()
            elif cmd == "time":
                if step is None:
                    raise RuntimeError("time before setup")
                reply = step.time(request["seconds"])
            else:
                raise ValueError(f"unknown request {cmd!r}")
        except Exception:
            reply = {"error": traceback.format_exc()}
        answer(reply)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--reference", required=True, help="checkout of naumix/BiggerRegularizedCategorical")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    configure_threads(args.threads)
    sys.path.insert(0, os.path.abspath(args.reference))
    # Answers go to the original stdout; anything else printing to stdout lands on stderr instead
    out = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)
    sys.stdout = sys.stderr

    def answer(reply: dict) -> None:
        out.write(json.dumps(reply) + "\n")

    serve(sys.stdin, answer)


if __name__ == "__main__":
    main()
