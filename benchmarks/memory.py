"""Replay memory per transition, measured from the buffers' arrays, and the total for MT10 at 1M per task.

    python benchmarks/memory.py

MT10 layout of a multi-task env: ``Dict(observation=39 float32 entries, task_id=int64 (1,))``, 4 action entries,
10 tasks, 500-step episodes (truncated). Compares SB3's DictReplayBuffer (what SB3 builds for Dict observations:
obs and next_obs) with CompactReplayBuffer (obs once, final observations of episodes kept aside).
"""

import numpy as np
from gymnasium import spaces
from stable_baselines3.common.buffers import DictReplayBuffer, ReplayBuffer

from sb3_brc.common.buffers import CompactReplayBuffer
from sb3_brc.common.task_layout import tag_observations, task_observation_space

OBS_DIM, ACT_DIM, TASKS, EPISODE, PER_TASK = 39, 4, 10, 500, 1_000_000


def stored_bytes(buffer: ReplayBuffer) -> int:
    """Bytes of the arrays holding the transitions."""
    if isinstance(buffer, CompactReplayBuffer):
        return buffer.nbytes
    assert isinstance(buffer, DictReplayBuffer)
    observations = [*buffer.observations.values(), *buffer.next_observations.values()]
    return sum(a.nbytes for a in [*observations, buffer.actions, buffer.rewards, buffer.dones, buffer.timeouts])


def bytes_per_transition(buffer_class: type[ReplayBuffer], steps: int = 5000) -> float:
    obs_space = task_observation_space(spaces.Box(-np.inf, np.inf, (OBS_DIM,), np.float32))
    act_space = spaces.Box(-1, 1, (ACT_DIM,), np.float32)
    buffer = buffer_class(steps * TASKS, obs_space, act_space, n_envs=TASKS)
    obs = tag_observations(np.zeros((TASKS, OBS_DIM), np.float32), np.arange(TASKS))
    next_obs = tag_observations(np.ones((TASKS, OBS_DIM), np.float32), np.arange(TASKS))
    for t in range(steps):
        done = np.full(TASKS, (t + 1) % EPISODE == 0)
        infos = [{"TimeLimit.truncated": bool(d)} for d in done]
        buffer.add(obs, next_obs, np.zeros((TASKS, ACT_DIM)), np.zeros(TASKS), done, infos)
    return stored_bytes(buffer) / (steps * TASKS)


def main() -> None:
    print(f"MT10 layout: obs {OBS_DIM} float32 + int64 task id, action {ACT_DIM}, {EPISODE}-step episodes\n")
    print("| buffer | bytes / transition | MT10 at 1M transitions per task |")
    print("|---|---|---|")
    results = {}
    for cls in (DictReplayBuffer, CompactReplayBuffer):
        per = bytes_per_transition(cls)
        results[cls.__name__] = per
        print(f"| {cls.__name__} | {per:.1f} | {per * PER_TASK * TASKS / 1e9:.2f} GB |")
    saving = 1 - results["CompactReplayBuffer"] / results["DictReplayBuffer"]
    print(f"\nCompactReplayBuffer saves {100 * saving:.0f}% of the replay memory.")


if __name__ == "__main__":
    main()
