"""Multi-task update and ``learn()`` throughput (10 tasks with obs 39 and act 4, batch 1024, widths 256 and 512), and
the share of ``learn()`` time spent outside the updates; for before/after comparisons of a change:

    PYTHONPATH=/path/to/checkout python benchmarks/architecture/mt_bench.py
"""

import time

import gymnasium as gym
import numpy as np
import torch as th

from sb3_brc import BRCSAC, MultiTaskVecEnv

th.set_num_threads(1)


class RandomTask(gym.Env):
    observation_space = gym.spaces.Box(-np.inf, np.inf, (39,), np.float32)
    action_space = gym.spaces.Box(-1, 1, (4,), np.float32)

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.t = 0
        return self.observation_space.sample().clip(-5, 5), {}

    def step(self, a):
        self.t += 1
        return self.observation_space.sample().clip(-5, 5), float(self.np_random.normal()), False, self.t >= 100, {}


for width in [256, 512]:
    env = MultiTaskVecEnv([RandomTask] * 10, task_names=[f"t{i}" for i in range(10)], seed=0)
    model = BRCSAC(
        "MlpPolicy",
        env,
        batch_size=1024,
        learning_starts=2000,
        buffer_size=20000,
        policy_kwargs=dict(net_arch=dict(pi=[256], qf=[width, width])),
        seed=0,
    )
    model.learn(2000)
    model.train(2, 1024)
    n, start = 0, time.perf_counter()
    while time.perf_counter() - start < 8:
        model.train(2, 1024)
        n += 2
    ups = n / (time.perf_counter() - start)
    start = time.perf_counter()
    steps = 0
    while time.perf_counter() - start < 8:
        model.learn(10 * 5, reset_num_timesteps=False)
        steps += 50
    sps = steps / (time.perf_counter() - start)
    print(
        f"multi-task width {width} batch 1024: {ups:.2f} updates/s; learn() {sps:.1f} transitions/s "
        f"(updates-only bound {10 * ups / 2:.1f}); loop share {1 - sps / (10 * ups / 2):.1%}",
        flush=True,
    )
