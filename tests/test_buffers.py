import importlib.util
import os
import pickle

import numpy as np
import pytest
from gymnasium import spaces
from stable_baselines3.common.buffers import DictReplayBuffer, ReplayBuffer

from sb3_brc import BRCSAC
from sb3_brc.common.buffers import CompactReplayBuffer, TrimmedDictReplayBuffer, TrimmedReplayBuffer


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


def _dict_fill(buffer, steps, rng):
    """``fill`` for a Dict buffer: the same transitions as an "obs" key beside a constant task id."""

    class AsDict:
        def add(self, obs, next_obs, *rest):
            task = np.full((2, 1), 7, np.int64)
            buffer.add({"obs": obs, "task_id": task}, {"obs": next_obs, "task_id": task}, *rest)

    fill(AsDict(), steps, rng)


@pytest.mark.parametrize("capacity", [2000, 100])  # 30 adds: part filled (saved up to the newest transition), wrapped
@pytest.mark.parametrize("kind", ["box", "box-optimize-memory", "dict"])
def test_trimmed_sb3_buffer_pickles_only_the_written_slots_and_restores_them(kind, capacity):
    steps = 30 if capacity > 100 else 75
    act_space = spaces.Box(-1, 1, (1,), np.float32)
    if kind == "dict":
        obs_space = spaces.Dict(obs=spaces.Box(-np.inf, np.inf, (2,), np.float32), task_id=spaces.Box(0, 9, (1,), np.int64))
        buffer = TrimmedDictReplayBuffer(capacity, obs_space, act_space, n_envs=2)
        _dict_fill(buffer, steps, np.random.default_rng(0))
    else:
        obs_space = spaces.Box(-np.inf, np.inf, (2,), np.float32)
        optimize = kind == "box-optimize-memory"
        buffer = TrimmedReplayBuffer(
            capacity, obs_space, act_space, n_envs=2, optimize_memory_usage=optimize, handle_timeout_termination=not optimize
        )
        fill(buffer, steps, np.random.default_rng(0))
    blob = pickle.dumps(buffer)
    restored = pickle.loads(blob)

    names = ["observations", "actions", "rewards", "dones", "timeouts"]
    if not buffer.optimize_memory_usage:
        names.append("next_observations")
    slots = [getattr(buffer, name) for name in names]
    slot_bytes = sum(a.nbytes for value in slots for a in (value.values() if isinstance(value, dict) else [value]))
    if buffer.full:
        assert len(blob) > slot_bytes
    else:
        assert len(blob) < slot_bytes / 10  # 30 of 1000 slots
    assert type(restored) is type(buffer)
    assert (restored.pos, restored.full, restored.buffer_size) == (buffer.pos, buffer.full, buffer.buffer_size)
    for name in names:
        original, loaded = getattr(buffer, name), getattr(restored, name)
        if isinstance(original, dict):
            assert original.keys() == loaded.keys()
            for key in original:
                np.testing.assert_array_equal(loaded[key], original[key], err_msg=f"{name}[{key}]")
        else:
            np.testing.assert_array_equal(loaded, original, err_msg=name)
    np.random.seed(2)
    expected = buffer.sample(64)
    np.random.seed(2)
    got = restored.sample(64)
    np.testing.assert_array_equal(got.rewards.numpy(), expected.rewards.numpy())
    # It keeps filling past the slots it was saved with, as the original would
    for _ in range(buffer.buffer_size):
        for target in (buffer, restored):
            (_dict_fill if kind == "dict" else fill)(target, 1, np.random.default_rng(5))
    assert restored.full and restored.pos == buffer.pos
    np.testing.assert_array_equal(restored.rewards, buffer.rewards)


def test_brcsac_defaults_to_the_trimmed_buffers_and_keeps_sb3s_choice_for_n_step():
    from stable_baselines3.common.buffers import NStepReplayBuffer

    def brcsac(**kwargs):
        return BRCSAC("MlpPolicy", "Pendulum-v1", buffer_size=100, policy_kwargs=dict(net_arch=dict(pi=[8], qf=[8])), **kwargs)

    assert type(brcsac().replay_buffer) is TrimmedReplayBuffer
    assert type(brcsac(n_steps=3).replay_buffer) is NStepReplayBuffer
    assert type(brcsac(replay_buffer_class=ReplayBuffer).replay_buffer) is ReplayBuffer
