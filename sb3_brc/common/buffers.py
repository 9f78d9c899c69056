"""Replay buffers: compact storage (each observation once), SB3's buffers saved without their empty slots, and
the new tasks' buffer that also replays a trained model's."""

from collections.abc import Callable
from typing import Any, ClassVar

import numpy as np
import torch as th
from gymnasium import spaces
from stable_baselines3.common.buffers import BaseBuffer, DictReplayBuffer, ReplayBuffer
from stable_baselines3.common.type_aliases import ReplayBufferSamples
from stable_baselines3.common.vec_env import VecNormalize
from stable_baselines3.her.her_replay_buffer import HerReplayBuffer

from sb3_brc.common.utils import concat_samples


class ReplayWithPrevious(ReplayBuffer):
    """The new tasks' replay buffer, also replaying an earlier buffer (transfer with the old data kept).

    Transitions are added to ``new`` (any ``ReplayBuffer`` class, Dict observations included); each batch mixes
    ``new`` and ``previous`` in proportion to their task counts, so sampling stays uniform over tasks as in BRC.
    The earlier buffer is read only. Other attributes (``pos``, ``full``, ...) are ``new``'s.

    :param new: The new tasks' buffer
    :param previous: The trained model's replay buffer
    :param previous_tasks: Number of tasks it holds
    """

    def __init__(self, new: ReplayBuffer, previous: ReplayBuffer, previous_tasks: int):
        # No ReplayBuffer.__init__: the storage is ``new``'s
        self.new, self.previous, self.previous_tasks = new, previous, previous_tasks

    def __getattr__(self, name: str) -> Any:
        if name in ("new", "previous", "previous_tasks"):  # not set yet (e.g. while unpickling)
            raise AttributeError(name)
        return getattr(self.new, name)

    @property
    def device(self) -> th.device:
        """Device the samples go to (both buffers'; setting it moves both)."""
        return self.new.device

    @device.setter
    def device(self, device: th.device) -> None:
        # SB3's load_replay_buffer moves a loaded buffer to the model's device this way: both buffers sample there
        self.new.device = self.previous.device = device

    def add(self, *args: Any, **kwargs: Any) -> None:
        self.new.add(*args, **kwargs)

    def size(self) -> int:
        return self.new.size()

    def sample(self, batch_size: int, env: VecNormalize | None = None) -> Any:
        n_previous = round(batch_size * self.previous_tasks / (self.previous_tasks + self.new.n_envs))
        if self.new.size() == 0:
            n_previous = batch_size
        return concat_samples(self.new.sample(batch_size - n_previous, env), self.previous.sample(n_previous, env))


def _map_arrays(fn: Callable[[np.ndarray], np.ndarray], value: np.ndarray | dict[str, np.ndarray]) -> Any:
    """``fn`` of an array, or of each array of a dict of arrays."""
    return {key: fn(array) for key, array in value.items()} if isinstance(value, dict) else fn(value)


class UsedSlotsPickling:
    """Pickles (``save_replay_buffer``, checkpoints) a buffer that is not full up to its newest written slot: the
    zeros of the empty slots would be most of an early checkpoint (2.8 GB for Atari's 100k frame stacks, 3.6 GB
    for a Meta-World MT10 run's default 10M transitions). Unpickling pads the arrays back to full size.
    A buffer pickled whole (full, or by an older version) loads as it was.

    ``_SLOT_ARRAYS`` names the attributes with one row per slot (an array or a dict of arrays; absent or ``None``
    where the buffer does without).
    """

    _SLOT_ARRAYS: ClassVar[tuple[str, ...]]
    buffer_size: int
    pos: int
    full: bool

    def _used_slots(self) -> int:
        """Slots written while the buffer is not full."""
        return self.pos

    def _slot_arrays(self) -> list[str]:
        # SB3's buffer has no next_observations with optimize_memory_usage
        return [name for name in self._SLOT_ARRAYS if getattr(self, name, None) is not None]

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        if not self.full:
            used = self._used_slots()
            for name in self._slot_arrays():
                state[name] = _map_arrays(lambda array: array[:used], state[name])
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)

        def padded(array: np.ndarray) -> np.ndarray:
            if len(array) == self.buffer_size:
                return array
            storage = np.zeros((self.buffer_size, *array.shape[1:]), dtype=array.dtype)
            storage[: len(array)] = array
            return storage

        for name in self._slot_arrays():
            setattr(self, name, _map_arrays(padded, getattr(self, name)))


class TrimmedReplayBuffer(UsedSlotsPickling, ReplayBuffer):
    """SB3's ``ReplayBuffer``, unchanged except that it is saved only up to its newest transition until it is full
    (see :class:`UsedSlotsPickling`). BRCSAC's default for ``Box`` observations."""

    _SLOT_ARRAYS: ClassVar[tuple[str, ...]] = ("observations", "next_observations", "actions", "rewards", "dones", "timeouts")

    def _used_slots(self) -> int:
        # With optimize_memory_usage the newest next observation sits in the slot after the newest transition
        return self.pos + 1 if self.optimize_memory_usage else self.pos


class TrimmedDictReplayBuffer(UsedSlotsPickling, DictReplayBuffer):
    """SB3's ``DictReplayBuffer``, saved only up to its newest transition until it is full (see
    :class:`UsedSlotsPickling`). BRCSAC's default for ``Dict`` observations."""

    _SLOT_ARRAYS: ClassVar[tuple[str, ...]] = TrimmedReplayBuffer._SLOT_ARRAYS


class CompactNStepReplayBuffer(UsedSlotsPickling, ReplayBuffer):
    """Replay for pixels and n-step returns: each observation stored once, ``Box`` or ``Dict`` observations.

    Storage is as in :class:`CompactReplayBuffer` (the next observation is the following slot's, final
    observations of finished episodes kept aside), so a ``(4, 84, 84)`` uint8 frame stack costs 28 KB per
    transition instead of 56 KB. Sampling returns n-step transitions: the discounted sum of up to ``n_steps``
    rewards, cut at the first episode end (termination or truncation) and at the newest transition, the
    observation after the last of them, ``dones`` = terminated at that last step, and ``discounts`` =
    ``gamma ** k`` for the ``k`` rewards summed (the bootstrap discount). BRCDQN uses it by default.

    :param buffer_size: Max number of transitions (over all envs)
    :param observation_space: Observation space (``Box`` or ``Dict`` of ``Box``)
    :param action_space: Action space
    :param device: PyTorch device
    :param n_envs: Number of parallel environments
    :param optimize_memory_usage: Ignored (this buffer always stores observations once)
    :param handle_timeout_termination: Bootstrap time-limit truncations (SB3's flag)
    :param n_steps: Rewards summed per sampled transition
    :param gamma: Discount of the n-step sum
    """

    # One array per observation key ("" for a Box), where SB3's ReplayBuffer has one array
    observations: dict[str, np.ndarray]  # type: ignore[assignment]
    _SLOT_ARRAYS: ClassVar[tuple[str, ...]] = ("observations", "actions", "rewards", "dones", "timeouts")

    def __init__(
        self,
        buffer_size: int,
        observation_space: spaces.Space,
        action_space: spaces.Space,
        device: Any = "auto",
        n_envs: int = 1,
        optimize_memory_usage: bool = False,
        handle_timeout_termination: bool = True,
        n_steps: int = 1,
        gamma: float = 0.99,
    ):
        # A ReplayBuffer for SB3 (load_replay_buffer insists), but with its own storage: ReplayBuffer.__init__
        # would allocate obs and next_obs arrays and cannot hold Dict observations
        BaseBuffer.__init__(self, buffer_size, observation_space, action_space, device, n_envs=n_envs)
        self.buffer_size = max(buffer_size // n_envs, 1)  # slots per env, as in SB3's ReplayBuffer
        self.optimize_memory_usage = False
        if n_steps < 1:
            raise ValueError(f"n_steps must be >= 1, got {n_steps}")
        self.n_steps, self.gamma = n_steps, gamma
        self.handle_timeout_termination = handle_timeout_termination
        self.is_dict = isinstance(observation_space, spaces.Dict)
        parts = dict(observation_space.spaces) if isinstance(observation_space, spaces.Dict) else {"": observation_space}
        self.observations = {
            key: np.zeros((self.buffer_size, n_envs, *(space.shape or ())), dtype=space.dtype) for key, space in parts.items()
        }
        self.actions = np.zeros((self.buffer_size, n_envs, self.action_dim), dtype=action_space.dtype)
        self.rewards = np.zeros((self.buffer_size, n_envs), dtype=np.float32)
        self.dones = np.zeros((self.buffer_size, n_envs), dtype=np.float32)
        self.timeouts = np.zeros((self.buffer_size, n_envs), dtype=np.float32)
        self.final_observations: dict[tuple[int, int], dict[str, np.ndarray]] = {}

    def _parts(self, obs: np.ndarray | dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return obs if isinstance(obs, dict) else {"": obs}

    def _unparts(self, parts: dict[str, Any]) -> Any:
        return parts if self.is_dict else parts[""]

    def add(
        self,
        obs: np.ndarray | dict[str, np.ndarray],
        next_obs: np.ndarray | dict[str, np.ndarray],
        action: np.ndarray,
        reward: np.ndarray,
        done: np.ndarray,
        infos: list[dict[str, Any]],
    ) -> None:
        obs_parts, next_parts = self._parts(obs), self._parts(next_obs)
        for env_idx in range(self.n_envs):
            self.final_observations.pop((self.pos, env_idx), None)  # the slot is overwritten
        for ended in np.flatnonzero(done):
            self.final_observations[(self.pos, int(ended))] = {k: np.array(v[ended]) for k, v in next_parts.items()}
        following = (self.pos + 1) % self.buffer_size
        for key, storage in self.observations.items():
            storage[self.pos] = np.asarray(obs_parts[key]).reshape(storage.shape[1:])
            storage[following] = np.asarray(next_parts[key]).reshape(storage.shape[1:])
        self.actions[self.pos] = np.asarray(action).reshape(self.n_envs, self.action_dim)
        self.rewards[self.pos] = np.asarray(reward).reshape(-1)
        self.dones[self.pos] = np.asarray(done).reshape(-1)
        if self.handle_timeout_termination:
            self.timeouts[self.pos] = np.array([info.get("TimeLimit.truncated", False) for info in infos])
        self.pos += 1
        if self.pos == self.buffer_size:
            self.full, self.pos = True, 0

    def sample(self, batch_size: int, env: VecNormalize | None = None) -> ReplayBufferSamples:
        if self.full:
            # Slot ``pos`` holds the newest transition's next observation, not its own first observation
            batch_inds = (np.random.randint(1, self.buffer_size, size=batch_size) + self.pos) % self.buffer_size
        else:
            batch_inds = np.random.randint(0, self.pos, size=batch_size)
        return self._get_samples(batch_inds, env=env)

    def _get_samples(self, batch_inds: np.ndarray, env: VecNormalize | None = None) -> ReplayBufferSamples:
        env_inds = np.random.randint(0, self.n_envs, size=len(batch_inds))
        offsets = np.arange(self.n_steps)
        sequence = (batch_inds[:, None] + offsets) % self.buffer_size  # (batch, n_steps)
        # A sequence ends at an episode end or at the newest transition (nothing was recorded after it)
        ends = (self.dones[sequence, env_inds[:, None]] > 0) | (sequence == (self.pos - 1) % self.buffer_size)
        last = np.where(ends.any(axis=1), ends.argmax(axis=1), self.n_steps - 1)
        summed = offsets[None, :] <= last[:, None]
        rewards = self._normalize_reward(self.rewards[sequence, env_inds[:, None]], env)
        returns = (rewards * self.gamma ** offsets[None, :] * summed).sum(axis=1, keepdims=True)
        last_inds = sequence[np.arange(len(batch_inds)), last]
        next_parts = {key: storage[(last_inds + 1) % self.buffer_size, env_inds] for key, storage in self.observations.items()}
        for row in np.flatnonzero(self.dones[last_inds, env_inds]):
            final = self.final_observations[(int(last_inds[row]), int(env_inds[row]))]
            for key, value in final.items():
                next_parts[key][row] = value
        terminated = self.dones[last_inds, env_inds] * (1.0 - self.timeouts[last_inds, env_inds])
        obs = self._normalize_obs(self._unparts({k: s[batch_inds, env_inds] for k, s in self.observations.items()}), env)
        next_obs = self._normalize_obs(self._unparts(next_parts), env)
        # Dict observations travel in ReplayBufferSamples too (SB3 types its fields as tensors): its discounts field
        # carries the n-step discount, which DictReplayBufferSamples lacks
        return ReplayBufferSamples(
            observations=self._to_torch_obs(obs),  # type: ignore[arg-type]
            actions=self.to_torch(self.actions[batch_inds, env_inds]),
            next_observations=self._to_torch_obs(next_obs),  # type: ignore[arg-type]
            dones=self.to_torch(terminated.reshape(-1, 1)),
            rewards=self.to_torch(returns.astype(np.float32)),
            # 1-step samples carry no discount: the algorithm applies its own gamma, as with SB3's ReplayBuffer
            discounts=self.to_torch((self.gamma ** (last + 1.0)).astype(np.float32).reshape(-1, 1))
            if self.n_steps > 1
            else None,
        )

    def _to_torch_obs(self, obs: np.ndarray | dict[str, np.ndarray]) -> th.Tensor | dict[str, th.Tensor]:
        return {k: self.to_torch(v) for k, v in obs.items()} if isinstance(obs, dict) else self.to_torch(obs)

    def _used_slots(self) -> int:
        return self.pos + 1  # slot ``pos`` holds the newest transition's next observation

    @property
    def nbytes(self) -> int:
        """Bytes held by the stored transitions."""
        arrays = [*self.observations.values(), self.actions, self.rewards, self.dones, self.timeouts]
        finals = sum(v.nbytes for final in self.final_observations.values() for v in final.values())
        return sum(a.nbytes for a in arrays) + finals


class CompactReplayBuffer(CompactNStepReplayBuffer):
    """A ``ReplayBuffer`` that stores each observation once instead of as ``obs`` and ``next_obs`` (1-step).

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
            buffer_size, observation_space, action_space, device, n_envs, handle_timeout_termination=handle_timeout_termination
        )


def end_episodes_at_newest(buffer: ReplayBuffer) -> None:
    """End the episode of every env at its newest transition, by truncation: for a run resumed from a checkpoint,
    whose envs start new episodes. Otherwise n-step sums would run on into the new episodes, and the compact
    buffers would take the first observation after the reset as the newest transition's next observation.

    Works on SB3's ``ReplayBuffer`` and ``DictReplayBuffer`` (and subclasses keeping their per-step arrays), the
    compact buffers and :class:`ReplayWithPrevious` (its new buffer); ``HerReplayBuffer`` tracks its own episodes
    and is left as it is.
    """
    if isinstance(buffer, ReplayWithPrevious):
        buffer = buffer.new
    if isinstance(buffer, HerReplayBuffer) or (buffer.pos == 0 and not buffer.full):
        return
    newest = (buffer.pos - 1) % buffer.buffer_size
    running = np.flatnonzero(buffer.dones[newest] == 0)  # episodes not already ended there
    if isinstance(buffer, CompactNStepReplayBuffer):
        # The slot after the newest transition holds its next observation until the next add overwrites it
        for env_idx in running:
            buffer.final_observations[(newest, int(env_idx))] = {
                key: storage[buffer.pos, env_idx].copy() for key, storage in buffer.observations.items()
            }
    buffer.dones[newest, running] = 1.0
    buffer.timeouts[newest, running] = 1.0
