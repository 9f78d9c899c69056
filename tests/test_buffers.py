import importlib.util
import os

import numpy as np
from gymnasium import spaces
from stable_baselines3.common.buffers import DictReplayBuffer, ReplayBuffer

from sb3_brc.common.buffers import CompactReplayBuffer


def fill(buffer, steps, rng):
    """Two envs with random episode ends, some truncated; obs encode (step, env) so they are all distinct."""
    obs = np.stack([[0.0, 0.0], [0.0, 1.0]]).astype(np.float32)
    for t in range(steps):
        next_obs = np.stack([[t + 1.0, 0.0], [t + 1.0, 1.0]]).astype(np.float32)
        done = rng.random(2) < 0.2
        truncated = done & (rng.random(2) < 0.5)
        infos = [{"TimeLimit.truncated": bool(tr)} for tr in truncated]
        buffer.add(obs, next_obs, rng.normal(size=(2, 1)), rng.normal(size=2), done, infos)
        # after an episode end the env resets: the next obs is a reset observation, not next_obs
        obs = np.where(done[:, None], np.stack([[-t - 1.0, 0.0], [-t - 1.0, 1.0]]), next_obs).astype(np.float32)


def test_compact_buffer_matches_standard_buffer():
    obs_space = spaces.Box(-np.inf, np.inf, (2,), np.float32)
    act_space = spaces.Box(-1, 1, (1,), np.float32)
    for steps in (30, 75):  # not full, and wrapped around a 50-slot buffer
        standard = ReplayBuffer(100, obs_space, act_space, n_envs=2)
        compact = CompactReplayBuffer(100, obs_space, act_space, n_envs=2)
        fill(standard, steps, np.random.default_rng(0))
        fill(compact, steps, np.random.default_rng(0))
        # every slot except the one the compact buffer is about to overwrite
        valid = [i for i in range(50 if steps > 50 else steps) if not (steps > 50 and i == compact.pos)]
        inds = np.array(valid * 4)
        np.random.seed(1)
        expected = standard._get_samples(inds)
        np.random.seed(1)
        got = compact._get_samples(inds)
        for name in ("observations", "actions", "next_observations", "dones", "rewards"):
            np.testing.assert_array_equal(getattr(got, name).numpy(), getattr(expected, name).numpy(), err_msg=name)
        arrays = ("observations", "next_observations", "actions", "rewards", "dones", "timeouts")
        assert compact.nbytes < sum(getattr(standard, name).nbytes for name in arrays) - standard.observations.nbytes / 2


def test_memory_benchmark_measures_both_buffers():
    # benchmarks/memory.py backs the replay-memory figures of the results: it must run on the current layout
    path = os.path.join(os.path.dirname(__file__), "..", "benchmarks", "memory.py")
    spec = importlib.util.spec_from_file_location("memory_benchmark", path)
    memory = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(memory)
    sb3 = memory.bytes_per_transition(DictReplayBuffer, steps=600)
    compact = memory.bytes_per_transition(CompactReplayBuffer, steps=600)
    # SB3 stores 39 float32 + 1 int64 twice per transition, the compact buffer once (plus the final observations)
    assert sb3 > 2 * (39 * 4 + 8) > compact > 39 * 4 + 8
