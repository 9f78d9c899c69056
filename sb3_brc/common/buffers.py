"""Replay storage that keeps each observation once."""

from typing import Any

import numpy as np
import torch as th
from gymnasium import spaces
from stable_baselines3.common.buffers import ReplayBuffer
from stable_baselines3.common.type_aliases import ReplayBufferSamples
from stable_baselines3.common.vec_env import VecNormalize


class CompactReplayBuffer(ReplayBuffer):
    """A ``ReplayBuffer`` that stores each observation once instead of as ``obs`` and ``next_obs``.

    The next observation of a transition is the observation of the following slot, as in SB3's
    ``optimize_memory_usage``; unlike it, the real final observation of every finished episode is kept aside,
    so time-limit truncations still bootstrap from the right state (SB3 refuses ``optimize_memory_usage``
    with ``handle_timeout_termination`` for that reason). Saves almost half the replay memory for
    truncation-based suites (DMC, Meta-World). Use ``BRCSAC(..., replay_buffer_class=CompactReplayBuffer)``.

    :param buffer_size: Max number of transitions (over all envs)
    :param observation_space: Observation space
    :param action_space: Action space
    :param device: PyTorch device
    :param n_envs: Number of parallel environments
    :param optimize_memory_usage: Ignored (this buffer always stores observations once)
    :param handle_timeout_termination: Bootstrap time-limit truncations (SB3's flag)
    """

    def __init__(
        self,
        buffer_size: int,
        observation_space: spaces.Space,
        action_space: spaces.Space,
        device: Any = "auto",
        n_envs: int = 1,
        optimize_memory_usage: bool = False,
        handle_timeout_termination: bool = True,
    ):
        super().__init__(
            buffer_size,
            observation_space,
            action_space,
            device,
            n_envs,
            optimize_memory_usage=True,
            handle_timeout_termination=False,
        )
        self.handle_timeout_termination = handle_timeout_termination
        # (slot, env) -> next observation of a transition that ended an episode
        self.final_observations: dict[tuple[int, int], np.ndarray] = {}

    def add(
        self,
        obs: np.ndarray,
        next_obs: np.ndarray,
        action: np.ndarray,
        reward: np.ndarray,
        done: np.ndarray,
        infos: list[dict[str, Any]],
    ) -> None:
        for env_idx in range(self.n_envs):
            self.final_observations.pop((self.pos, env_idx), None)  # the slot is overwritten
        for env_idx in np.flatnonzero(done):
            self.final_observations[(self.pos, int(env_idx))] = np.array(next_obs[env_idx])
        super().add(obs, next_obs, action, reward, done, infos)

    def _get_samples(self, batch_inds: np.ndarray, env: VecNormalize | None = None) -> ReplayBufferSamples:
        env_indices = np.random.randint(0, high=self.n_envs, size=(len(batch_inds),))
        next_obs = self.observations[(batch_inds + 1) % self.buffer_size, env_indices, :]
        for row in np.flatnonzero(self.dones[batch_inds, env_indices]):
            next_obs[row] = self.final_observations[(int(batch_inds[row]), int(env_indices[row]))]
        data = (
            self._normalize_obs(self.observations[batch_inds, env_indices, :], env),
            self.actions[batch_inds, env_indices, :],
            self._normalize_obs(next_obs, env),
            (self.dones[batch_inds, env_indices] * (1 - self.timeouts[batch_inds, env_indices])).reshape(-1, 1),
            self._normalize_reward(self.rewards[batch_inds, env_indices].reshape(-1, 1), env),
        )
        return ReplayBufferSamples(*tuple(map(self.to_torch, data)))

    @property
    def nbytes(self) -> int:
        """Bytes held by the stored transitions."""
        arrays = (self.observations, self.actions, self.rewards, self.dones, self.timeouts)
        return sum(a.nbytes for a in arrays) + sum(o.nbytes for o in self.final_observations.values())


class ReplayWithPrevious(ReplayBuffer):
    """The new tasks' replay buffer that also replays an earlier buffer (transfer with the old data kept).

    Each batch mixes the two in proportion to their task counts, so sampling stays uniform over tasks as in
    BRC. The earlier buffer is read only.

    :param previous: The trained model's replay buffer
    :param previous_tasks: Number of tasks it holds
    :param args: ``ReplayBuffer`` arguments for the new tasks' buffer
    :param kwargs: ``ReplayBuffer`` keyword arguments for the new tasks' buffer
    """

    def __init__(self, *args: Any, previous: ReplayBuffer, previous_tasks: int, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.previous, self.previous_tasks = previous, previous_tasks

    def sample(self, batch_size: int, env: VecNormalize | None = None) -> ReplayBufferSamples:
        n_previous = round(batch_size * self.previous_tasks / (self.previous_tasks + self.n_envs))
        if self.size() == 0:
            n_previous = batch_size
        new, old = super().sample(batch_size - n_previous, env), self.previous.sample(n_previous, env)
        return ReplayBufferSamples(*(None if a is None else th.cat([a, b]) for a, b in zip(new, old, strict=True)))
