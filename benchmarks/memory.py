"""Replay memory per transition, measured from the buffers' arrays, and the total for MT10 at 1M per task.

    python benchmarks/memory.py

MT10 layout: 39 observation entries + the task-id column (float32), 4 action entries, 10 tasks, 500-step
episodes (truncated). Compares SB3's ReplayBuffer (obs and next_obs) with CompactReplayBuffer (obs once,
final observations of episodes kept aside).
"""

import numpy as np
from gymnasium import spaces
from stable_baselines3.common.buffers import ReplayBuffer

from sb3_brc.common.buffers import CompactReplayBuffer

OBS_DIM, ACT_DIM, TASKS, EPISODE, PER_TASK = 40, 4, 10, 500, 1_000_000


def bytes_per_transition(buffer_class: type[ReplayBuffer], steps: int = 5000) -> float:
    obs_space = spaces.Box(-np.inf, np.inf, (OBS_DIM,), np.float32)
    act_space = spaces.Box(-1, 1, (ACT_DIM,), np.float32)
    buffer = buffer_class(steps * TASKS, obs_space, act_space, n_envs=TASKS)
    obs = np.zeros((TASKS, OBS_DIM), np.float32)
    for t in range(steps):
        done = np.full(TASKS, (t + 1) % EPISODE == 0)
        infos = [{"TimeLimit.truncated": bool(d)} for d in done]
        buffer.add(obs, obs + 1, np.zeros((TASKS, ACT_DIM)), np.zeros(TASKS), done, infos)
    arrays = [buffer.observations, buffer.actions, buffer.rewards, buffer.dones, buffer.timeouts]
    if hasattr(buffer, "next_observations"):
        arrays.append(buffer.next_observations)
    total = sum(a.nbytes for a in arrays) + sum(o.nbytes for o in getattr(buffer, "final_observations", {}).values())
    return total / (steps * TASKS)


def main() -> None:
    print(f"MT10 layout: obs {OBS_DIM} (float32, task id included), action {ACT_DIM}, {EPISODE}-step episodes\n")
    print("| buffer | bytes / transition | MT10 at 1M transitions per task |")
    print("|---|---|---|")
    results = {}
    for cls in (ReplayBuffer, CompactReplayBuffer):
        per = bytes_per_transition(cls)
        results[cls.__name__] = per
        print(f"| {cls.__name__} | {per:.1f} | {per * PER_TASK * TASKS / 1e9:.2f} GB |")
    saving = 1 - results["CompactReplayBuffer"] / results["ReplayBuffer"]
    print(f"\nCompactReplayBuffer saves {100 * saving:.0f}% of the replay memory.")


if __name__ == "__main__":
    main()
