"""JAX side of ``vs_reference.py`` and ``vs_reference_loop.py``: times the official BRC implementation
(naumix/BiggerRegularizedCategorical), its update alone or its whole training loop, on request.

Started by those scripts with the Python of a virtual environment that has jax, flax, optax, distrax and gymnasium
(the reference's modules import them), plus mujoco, dm_control, shimmy, imageio and packaging for the training
loop on DMC tasks; it never imports torch. It reads one JSON request per line on stdin and answers one JSON line
on stdout:

    {"cmd": "info"}                                  -> versions and the fp32 matmul GFLOP/s of jax.numpy.dot
    {"cmd": "versions", "packages": ["mujoco"]}      -> versions of the default packages and of these
    {"cmd": "setup", "obs": 24, "act": 6, "tasks": 1, "width": 512, "batch": 256, "updates": 2,
     "fill": 2048, "init": "eager"}                  -> builds the reference agent, compiles its update
    {"cmd": "setup_loop", "task": "cheetah-run", "width": 512, "batch": 256, "updates": 2, "warmup": 1000,
     "buffer": 1000000, "seed": 0, "init": "eager"}  -> builds the reference's env, agent, buffer and normaliser,
                                                        runs the random warm-up and the first training steps
    {"cmd": "time", "seconds": 1.0}                  -> calls (after "setup": one env step's updates; after
                                                        "setup_loop": one env step of the training loop, updates
                                                        included), updates, wall and CPU seconds
    {"cmd": "quit"}

One timed call after ``setup`` is what the reference's ``train.py`` does after each env step once training has started:
``ParallelReplayBuffer.sample(batch, updates)``, ``RewardNormalizer.normalize(batches, agent.get_temperature())``
and ``agent.update(batches, updates, step)`` (one jitted function running the updates with ``fori_loop``), then
waiting for the new parameters. The buffer and the normaliser are the reference's own classes, filled with random
transitions of the requested shapes.

One timed call after ``setup_loop`` is one iteration of ``train.py``'s loop once training has started, built from
the reference's own pieces (``ParallelEnv``, ``BRC``, ``ParallelReplayBuffer``, ``RewardNormalizer``,
``EpisodeRecorder``): sample actions, step the env, update the normaliser and the episode statistics, insert the
transition, reset finished episodes, sample the batches, normalise their rewards and run the updates. ``train.py``
itself is not imported (it sets ``MUJOCO_GL=egl`` and parses absl flags): this worker sets ``MUJOCO_GL=disable``,
and runs no evaluation and no wandb logging (the reference's ``jaxrl/logger.py`` imports wandb at the top; a
placeholder module stands in for it when wandb is not installed, since ``EpisodeRecorder.update`` never uses it).
JAX dispatches the updates asynchronously; the next action sampling waits for the new actor, and each timed slice
ends by waiting for all parameters.

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


def build_agent(sample_obs, sample_act, tasks: int, width: int, init: str, seed: int = 0):
    """The reference's BRC agent and the seconds its construction took. As ``train.py``: one sampled observation
    and action (leading axis of size 1) give the shapes; the other arguments are BRC's defaults, the paper's
    (actor width 256, critic depth 2, 2 critic heads, 101 bins, task embedding 32)."""
    import jax
    from jaxrl.agent.brc_learner import BRC

    start = time.perf_counter()
    if init == "eager":
        # BRC.__init__ jits its model initialisation; with some jaxlib versions on few-core CPUs that jitted
        # program (batched QR of the vmapped orthogonal init) never returns. Eagerly it does.
        with jax.disable_jit():
            agent = BRC(seed, sample_obs, sample_act, num_tasks=tasks, width_critic=width)
    else:
        agent = BRC(seed, sample_obs, sample_act, num_tasks=tasks, width_critic=width)
    jax.block_until_ready(agent.critic.params)
    return agent, time.perf_counter() - start


def wait_for_agent(agent) -> None:
    """Block until every parameter the last ``agent.update`` dispatched is computed."""
    import jax

    jax.block_until_ready((agent.actor.params, agent.critic.params, agent.target_critic.params, agent.temp.params))


def describe_agent(agent, init_seconds: float, compile_seconds: float) -> dict:
    return {
        "actor_params": param_sizes(agent.actor.params),
        "critic_params": param_sizes(agent.critic.params),
        "init_seconds": init_seconds,
        "compile_seconds": compile_seconds,
    }


def time_calls(call, seconds: float, updates_per_call: int, finish=lambda: None) -> dict:
    """Run ``call`` until ``seconds`` have passed, then ``finish`` (waits for work the last call left running)."""
    calls, cpu0, start = 0, time.process_time(), time.perf_counter()
    while True:
        call()
        calls += 1
        if time.perf_counter() - start >= seconds:
            finish()
            wall = time.perf_counter() - start
            return {"calls": calls, "updates": calls * updates_per_call, "wall": wall, "cpu": time.process_time() - cpu0}


class ReferenceStep:
    """The reference agent, buffer and normaliser at one setting; ``__call__`` runs one env step's updates."""

    def __init__(self, obs: int, act: int, tasks: int, width: int, batch: int, updates: int, fill: int, init: str):
        import numpy as np
        from gymnasium.spaces import Box
        from jaxrl.normalizer import RewardNormalizer
        from jaxrl.replay_buffer import ParallelReplayBuffer

        self.batch, self.updates = batch, updates
        np.random.seed(0)
        sample_obs, sample_act = np.zeros((1, obs), np.float32), np.zeros((1, act), np.float32)
        self.agent, self.init_seconds = build_agent(sample_obs, sample_act, tasks, width, init)

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
        wait_for_agent(self.agent)

    def describe(self) -> dict:
        return describe_agent(self.agent, self.init_seconds, self.compile_seconds)

    def time(self, seconds: float) -> dict:
        return time_calls(self, seconds, self.updates)


def import_episode_recorder():
    """The reference's ``EpisodeRecorder``; its module imports wandb (for logging only), replaced by an empty
    placeholder module when wandb is not installed."""
    try:
        import wandb  # noqa: F401
    except ImportError:
        import types

        sys.modules["wandb"] = types.ModuleType("wandb")
    from jaxrl.logger import EpisodeRecorder

    return EpisodeRecorder


class ReferenceLoop:
    """``train.py``'s training loop on one task, without evaluation or logging: ``__call__`` is one iteration
    (env step, bookkeeping, updates). The constructor runs ``warmup`` iterations of random actions (``train.py``'s
    ``start_training = warmup + 1``: the first update follows env step ``warmup + 1``, the first with the agent's
    action) and then 2 training iterations (compilation of action sampling and updates)."""

    def __init__(self, task: str, width: int, batch: int, updates: int, warmup: int, buffer: int, seed: int, init: str):
        from jaxrl.envs import ParallelEnv
        from jaxrl.normalizer import RewardNormalizer
        from jaxrl.replay_buffer import ParallelReplayBuffer

        self.batch, self.updates, self.start_training = batch, updates, warmup + 1
        self.env = ParallelEnv([task], seed=seed)
        tasks = len(self.env.envs)
        self.agent, self.init_seconds = build_agent(
            self.env.observation_space.sample()[:1], self.env.action_space.sample()[:1], tasks, width, init, seed
        )
        act_dim = self.env.action_space.shape[-1]
        self.buffer = ParallelReplayBuffer(self.env.observation_space, act_dim, buffer, num_tasks=tasks)
        self.normalizer = RewardNormalizer(tasks, target_entropy=self.agent.target_entropy, discount=self.agent.discount)
        self.recorder = import_episode_recorder()(tasks)
        self.observations = self.env.reset()
        self.i = 0
        for _ in range(warmup):
            self()
        start = time.perf_counter()
        for _ in range(2):
            self()
        wait_for_agent(self.agent)
        self.compile_seconds = time.perf_counter() - start

    def __call__(self) -> None:
        self.i += 1
        env, agent = self.env, self.agent
        if self.i < self.start_training:
            actions = env.action_space.sample()
        else:
            actions = agent.sample_actions(self.observations, temperature=1.0)
        next_observations, rewards, terms, truns, goals = env.step(actions)
        self.normalizer.update(rewards, terms, truns)
        self.recorder.update(rewards, goals, terms, truns)
        masks = env.generate_masks(terms, truns)
        self.buffer.insert(self.observations, actions, rewards, masks, next_observations)
        self.observations, terms, truns = env.reset_where_done(next_observations, terms, truns)
        if self.i >= self.start_training:
            batches = self.buffer.sample(self.batch, self.updates)
            batches = self.normalizer.normalize(batches, agent.get_temperature())
            agent.update(batches, self.updates, self.i)

    def describe(self) -> dict:
        info = describe_agent(self.agent, self.init_seconds, self.compile_seconds)
        return dict(info, obs=int(self.env.observation_space.shape[-1]), act=int(self.env.action_space.shape[-1]))

    def time(self, seconds: float) -> dict:
        return time_calls(self, seconds, self.updates, finish=lambda: wait_for_agent(self.agent))


DEFAULT_PACKAGES = ("jax", "jaxlib", "flax", "optax", "distrax", "numpy")


def versions(extra: tuple[str, ...] = ()) -> dict:
    from importlib.metadata import PackageNotFoundError, version

    found = {}
    for name in DEFAULT_PACKAGES + tuple(extra):
        try:
            found[name] = version(name)
        except PackageNotFoundError:
            found[name] = "not installed"
    return found


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
            elif cmd == "versions":
                reply = {"versions": versions(tuple(request.get("packages", ())))}
            elif cmd in ("setup", "setup_loop"):
                step = None  # free the previous agent first
                step = ReferenceStep(**request) if cmd == "setup" else ReferenceLoop(**request)
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
    os.environ["MUJOCO_GL"] = "disable"  # DMC tasks without rendering (nothing here renders)
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
