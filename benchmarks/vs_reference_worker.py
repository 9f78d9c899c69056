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
    {"cmd": "diff_setup", "obs": 24, "act": 6, "tasks": 1, "width": 128, "actor_width": 256, "atoms": 101,
     "batch": 256, "updates": 2, "steps": 25, "out": DIR, "seed": 0, "log_std_floor": true}
                                                     -> the differential check's problem, written to DIR/setup.npz
    {"cmd": "diff_step"}                             -> one env step's updates; parameters to DIR/step<i>.npz
    {"cmd": "learn", "task": "walker-walk", "width": 128, "actor_width": 64, "batch": 256, "updates": 2,
     "warmup": 5000, "buffer": 1000000, "seed": 0, "steps": 30000, "eval_every": 3000, "eval_episodes": 5,
     "csv": PATH}                                    -> train.py's loop with its evaluations, written to PATH
    {"cmd": "rollout", "task": "walker-walk", "seed": 0, "actions": [[...], ...]}
                                                     -> the reference's env stepped through these actions
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


def build_agent(
    sample_obs, sample_act, tasks: int, width: int, init: str, seed: int = 0, actor_width: int = 256, atoms: int = 101
):
    """The reference's BRC agent and the seconds its construction took. As ``train.py``: one sampled observation
    and action (leading axis of size 1) give the shapes; the other arguments are BRC's defaults, the paper's
    (critic depth 2, 2 critic heads, task embedding 32; by default actor width 256 and 101 bins)."""
    import jax
    from jaxrl.agent.brc_learner import BRC

    start = time.perf_counter()
    if init == "eager":
        # BRC.__init__ jits its model initialisation; with some jaxlib versions on few-core CPUs that jitted
        # program (batched QR of the vmapped orthogonal init) never returns. Eagerly it does.
        with jax.disable_jit():
            agent = BRC(seed, sample_obs, sample_act, tasks, width_critic=width, width_actor=actor_width, num_bins=atoms)
    else:
        agent = BRC(seed, sample_obs, sample_act, tasks, width_critic=width, width_actor=actor_width, num_bins=atoms)
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

    def __init__(
        self,
        task: str,
        width: int,
        batch: int,
        updates: int,
        warmup: int,
        buffer: int,
        seed: int,
        init: str,
        actor_width: int = 256,
        prime: bool = True,
    ):
        from jaxrl.envs import ParallelEnv
        from jaxrl.normalizer import RewardNormalizer
        from jaxrl.replay_buffer import ParallelReplayBuffer

        self.batch, self.updates, self.start_training = batch, updates, warmup + 1
        self.env = ParallelEnv([task], seed=seed)
        tasks = len(self.env.envs)
        self.agent, self.init_seconds = build_agent(
            self.env.observation_space.sample()[:1], self.env.action_space.sample()[:1], tasks, width, init, seed, actor_width
        )
        act_dim = self.env.action_space.shape[-1]
        self.buffer = ParallelReplayBuffer(self.env.observation_space, act_dim, buffer, num_tasks=tasks)
        self.normalizer = RewardNormalizer(tasks, target_entropy=self.agent.target_entropy, discount=self.agent.discount)
        self.recorder = import_episode_recorder()(tasks)
        self.observations = self.env.reset()
        self.i = 0
        self.compile_seconds = 0.0
        if not prime:  # the caller runs the loop from its first step (``ReferenceLearning``)
            return
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


class ReferenceLearning:
    """``train.py``'s loop on one task with its evaluation (``ParallelEnv.evaluate``: deterministic, on envs seeded
    ``seed + 42``), from the first env step to ``steps``; each evaluation's mean return (and success rate) is appended
    to ``csv`` as ``steps,mean_return,success_rate``. No checkpoints: an interrupted run starts over."""

    def __init__(
        self,
        task: str,
        width: int,
        actor_width: int,
        batch: int,
        updates: int,
        warmup: int,
        buffer: int,
        seed: int,
        steps: int,
        eval_every: int,
        eval_episodes: int,
        csv: str,
        init: str = "eager",
    ):
        from jaxrl.envs import ParallelEnv

        self.loop = ReferenceLoop(task, width, batch, updates, warmup, buffer, seed, init, actor_width, prime=False)
        self.eval_env = ParallelEnv([task], seed=seed + 42)
        self.steps, self.eval_every, self.eval_episodes, self.csv = steps, eval_every, eval_episodes, csv

    def describe(self) -> dict:
        return describe_agent(self.loop.agent, self.loop.init_seconds, 0.0)

    def run(self) -> dict:
        wall, cpu = time.perf_counter(), time.process_time()
        with open(self.csv, "w") as file:
            file.write("steps,mean_return,success_rate\n")
            while self.loop.i < self.steps:
                self.loop()
                if self.loop.i % self.eval_every == 0:
                    result = self.eval_env.evaluate(self.loop.agent, self.eval_episodes, temperature=0.0)
                    file.write(f"{self.loop.i},{float(result['return'][0])},{float(result['goal'][0])}\n")
                    file.flush()
                    print(f"reference: {self.loop.i} steps, return {float(result['return'][0]):.1f}", file=sys.stderr)
        return {"wall": time.perf_counter() - wall, "cpu": time.process_time() - cpu}


def flat_params(params, prefix: str) -> dict:
    """A flax parameter tree as ``{"<prefix>/<path>": float32 array}``."""
    import numpy as np
    from flax.traverse_util import flatten_dict

    return {f"{prefix}/{path}": np.asarray(value, np.float32) for path, value in flatten_dict(params, sep="/").items()}


class ReferenceUpdates:
    """The differential check's reference side: the official agent, normaliser and update on a fixed random problem,
    with every input ours needs to repeat it written to ``out``.

    ``setup.npz`` holds:

    - the agent's parameters after a random perturbation (no LayerNorm scale exactly 1, no bias 0, the target
      different from the critic); with ``log_std_floor``, one action dimension's log-std at its floor of -10 with its
      mean near 2, where log-probs rebuilt from the sample lose precision;
    - the stream of rewards and episode ends fed to the reference's ``RewardNormalizer`` (ends by termination or by
      truncation, never both on one step: that case is a documented difference), and its statistics;
    - for every env step, ``updates`` batches (raw rewards, masks, task ids) and the standard-normal noise of each
      update's two policy samples (next actions in the critic loss, then actions in the actor loss), computed from
      the agent's own key chain: ``_update`` splits ``rng -> (rng, actor_key, critic_key)``.

    ``step<i>.npz`` after each ``diff_step``: every parameter after that env step's updates, the rewards the
    normaliser gave the batches and the last update's losses. An env step is what ``train.py`` does once training
    runs: ``normalize(batches, get_temperature())`` then ``agent.update(batches, updates, step)``."""

    def __init__(
        self,
        obs: int,
        act: int,
        tasks: int,
        width: int,
        actor_width: int,
        atoms: int,
        batch: int,
        updates: int,
        steps: int,
        out: str,
        seed: int = 0,
        init: str = "eager",
        log_std_floor: bool = True,
    ):
        import jax
        import numpy as np
        from jaxrl.normalizer import RewardNormalizer
        from jaxrl.utils import Batch

        self.updates, self.out, self.i = updates, out, 0
        os.makedirs(out, exist_ok=True)
        rng = np.random.default_rng(seed)
        sample_obs, sample_act = np.zeros((1, obs), np.float32), np.zeros((1, act), np.float32)
        agent, self.init_seconds = build_agent(sample_obs, sample_act, tasks, width, init, seed, actor_width, atoms)

        def perturb(params, scale: float):
            def one(value):
                value = np.asarray(value)
                spread = max(float(value.std()), 0.1) if value.size > 1 else 0.1
                return (value + scale * spread * rng.standard_normal(value.shape)).astype(np.float32)

            return jax.tree_util.tree_map(one, params)

        critic = perturb(agent.critic.params, 0.1)
        actor = perturb(agent.actor.params, 0.1)
        # Action dimension 0: log-std at its floor (tanh(-8) ~ -1: sigma ~ e^-10) and mean near 2, where rebuilding the
        # noise as (u - mu) / sigma would lose it to cancellation
        if log_std_floor:
            mean_bias, log_std_bias = np.array(actor["Dense_0"]["bias"]), np.array(actor["Dense_1"]["bias"])
            mean_bias[0], log_std_bias[0] = 2.0, -8.0
            actor = {
                **actor,
                "Dense_0": {**actor["Dense_0"], "bias": mean_bias},
                "Dense_1": {**actor["Dense_1"], "bias": log_std_bias},
            }
        agent.critic = agent.critic.replace(params=critic)
        agent.target_critic = agent.target_critic.replace(params=perturb(critic, 0.01))
        agent.actor = agent.actor.replace(params=actor)
        self.agent = agent

        # The normaliser's stream: per task, episodes of 10-40 steps with rewards of the task's own scale
        stream_steps = 400
        rewards = np.zeros((stream_steps, tasks), np.float32)
        terms, truns = np.zeros((stream_steps, tasks), bool), np.zeros((stream_steps, tasks), bool)
        for task in range(tasks):
            mean, spread, t = rng.normal(0, 2), 10.0 ** rng.uniform(-1, 1), 0
            while t < stream_steps:
                length = int(rng.integers(10, 41))
                end = min(t + length, stream_steps) - 1
                rewards[t : end + 1, task] = rng.normal(mean, spread, end + 1 - t)
                if end < stream_steps - 1 or t + length == stream_steps:
                    (terms if rng.random() < 0.5 else truns)[end, task] = True
                t = end + 1
        self.normalizer = RewardNormalizer(tasks, target_entropy=agent.target_entropy, discount=agent.discount)
        for step in range(stream_steps):
            self.normalizer.update(rewards[step], terms[step], truns[step])

        # Batches (leading axes: env step, update) and the noise of each update's policy samples
        shape = (steps, updates, batch)
        data = dict(
            observations=rng.normal(size=(*shape, obs)).astype(np.float32),
            actions=rng.uniform(-1, 1, size=(*shape, act)).astype(np.float32),
            rewards=(rng.normal(0, 3, shape) * np.where(rng.random(shape) < 0.1, 30.0, 1.0)).astype(np.float32),
            masks=(rng.random(shape) > 0.1).astype(np.float32),
            next_observations=rng.normal(size=(*shape, obs)).astype(np.float32),
            task_ids=rng.integers(0, tasks, shape).astype(np.int32),
        )
        on_bin = rng.random(shape) < 0.05  # reward 0 and terminal: every target atom lands exactly on the middle bin
        data["rewards"][on_bin], data["masks"][on_bin] = 0.0, 0.0
        self.batches = [Batch(**{key: value[i] for key, value in data.items()}) for i in range(steps)]
        key = agent.rng
        critic_noise, actor_noise = np.zeros((*shape, act), np.float32), np.zeros((*shape, act), np.float32)
        for step in range(steps):
            for update in range(updates):
                key, actor_key, critic_key = jax.random.split(key, 3)
                critic_noise[step, update] = self._standard_noise(critic_key, batch, act)
                actor_noise[step, update] = self._standard_noise(actor_key, batch, act)
        self.noise_check = self._check_noise(critic_noise[0, 0])
        np.savez(
            os.path.join(out, "setup.npz"),
            **flat_params(agent.actor.params, "actor"),
            **flat_params(agent.critic.params, "critic"),
            **flat_params(agent.target_critic.params, "target_critic"),
            **flat_params(agent.temp.params, "temp"),
            **{f"batch/{name}": value for name, value in data.items()},
            critic_noise=critic_noise,
            actor_noise=actor_noise,
            stream_rewards=rewards,
            stream_terminated=terms,
            stream_truncated=truns,
            normalizer_max=self.normalizer.returns_max_norm,
            normalizer_min=self.normalizer.returns_min_norm,
            target_entropy=np.float32(agent.target_entropy),
        )

    @staticmethod
    def _standard_noise(key, batch: int, act: int):
        """What ``MultivariateNormalDiag(loc, scale).sample(seed=key)`` draws before scaling and shifting."""
        import distrax
        import jax.numpy as jnp
        import numpy as np

        return np.asarray(distrax.MultivariateNormalDiag(jnp.zeros((batch, act)), jnp.ones((batch, act))).sample(seed=key))

    def _check_noise(self, noise) -> float:
        """Largest difference between the reference's own first sample and ``tanh(loc + scale * noise)`` (must be ~0:
        otherwise the noise computed here is not what the reference draws)."""
        import jax
        import numpy as np
        from jaxrl.agent.update import build_actor_input

        agent, batch = self.agent, self.batches[0]
        _, _, critic_key = jax.random.split(agent.rng, 3)
        inputs = build_actor_input(agent.critic, batch.next_observations[0], batch.task_ids[0], agent.multitask)
        dist = agent.actor(inputs)
        sampled = np.asarray(dist.sample(seed=critic_key))
        base = dist.distribution
        rebuilt = np.tanh(np.asarray(base.loc) + np.asarray(base.scale_diag) * noise)
        return float(np.abs(sampled - rebuilt).max())

    def step(self) -> dict:
        import numpy as np

        batches = self.normalizer.normalize(self.batches[self.i], self.agent.get_temperature())
        info = self.agent.update(batches, self.updates, self.i + 1)
        wait_for_agent(self.agent)
        path = os.path.join(self.out, f"step{self.i}.npz")
        losses = {name: float(info[name]) for name in ("critic_loss", "actor_loss", "temp_loss", "entropy", "temperature")}
        np.savez(
            path,
            **flat_params(self.agent.actor.params, "actor"),
            **flat_params(self.agent.critic.params, "critic"),
            **flat_params(self.agent.target_critic.params, "target_critic"),
            **flat_params(self.agent.temp.params, "temp"),
            normalized_rewards=np.asarray(batches.rewards, np.float32),
            **{f"loss/{name}": np.float32(value) for name, value in losses.items()},
        )
        self.i += 1
        return {"path": path, **losses}

    def describe(self) -> dict:
        return {"init_seconds": self.init_seconds, "noise_check": self.noise_check, "dir": self.out}


def rollout(task: str, seed: int, actions: list) -> dict:
    """The reference's env for ``task`` (``jaxrl.envs.make_env``) reset with ``seed`` and stepped through ``actions``:
    its observations and rewards."""
    from jaxrl.envs import make_env

    env = make_env(task, seed)
    observation, _ = env.reset(seed=seed)
    observations, rewards = [observation.tolist()], []
    for action in actions:
        observation, reward, terminated, truncated, _ = env.step(action)
        observations.append(observation.tolist())
        rewards.append(float(reward))
        if terminated or truncated:
            break
    return {"observations": observations, "rewards": rewards}


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
            elif cmd in ("setup", "setup_loop", "diff_setup"):
                step = None  # free the previous agent first
                kind = {"setup": ReferenceStep, "setup_loop": ReferenceLoop, "diff_setup": ReferenceUpdates}[cmd]
                step = kind(**request)
                reply = step.describe()
            elif cmd == "learn":
                step = None
                learning = ReferenceLearning(**request)
                reply = dict(learning.describe(), **learning.run())
            elif cmd == "rollout":
                reply = rollout(**request)
            elif cmd == "diff_step":
                if not isinstance(step, ReferenceUpdates):
                    raise RuntimeError("diff_step before diff_setup")
                reply = step.step()
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
