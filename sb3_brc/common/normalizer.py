"""BRC per-task return normalisation (reference: ``naumix/BiggerRegularizedCategorical``, ``jaxrl/normalizer.py``).

Rewards are stored raw and scaled when a batch is sampled::

    G_i    = max(max_t V_t, |min_t V_t|)   over finished episodes of task i (discounted returns-to-go)
    lambda = -alpha * target_entropy / (2 * (1 - gamma))     # = alpha * |A| / (4 (1 - gamma))
    r_norm = r * v_max / (G_i + lambda)

so that returns fit the categorical support ``[-v_max, v_max]`` whatever the task's reward scale.
"""

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch as th

from sb3_brc.common.utils import NON_FINITE_HINT, check_finite

ENTROPY_TERMS = ("fixed", "per_task")


def _check_entropy_options(entropy_term: str, entropy_momentum: float) -> None:
    if entropy_term not in ENTROPY_TERMS:
        raise ValueError(f"entropy_term must be one of {ENTROPY_TERMS}, got {entropy_term!r}")
    if not 0.0 < entropy_momentum <= 1.0:
        raise ValueError(f"entropy_momentum is the newest measurement's weight, in (0, 1], got {entropy_momentum!r}")


@dataclass(frozen=True)
class ReturnNormalization:
    """Options of the per-task return normalisation: pass ``normalize_rewards=ReturnNormalization(...)`` to an
    algorithm (``True`` means the defaults). The algorithm builds its :class:`ReturnNormalizer` from them and
    feeds it every env step.

    :param entropy_term: ``"fixed"`` (reference code) or ``"per_task"`` (the paper's variant), see
        :class:`ReturnNormalizer`
    :param entropy_momentum: Weight of the newest measurement in the running per-task entropy (``"per_task"``)
    """

    entropy_term: str = "fixed"
    entropy_momentum: float = 0.01

    def __post_init__(self) -> None:
        _check_entropy_options(self.entropy_term, self.entropy_momentum)

    def build(self, num_tasks: int, gamma: float) -> "ReturnNormalizer":
        """The statistics object for ``num_tasks`` tasks and discount ``gamma``."""
        return ReturnNormalizer(num_tasks, gamma, self.entropy_term, self.entropy_momentum)


class ReturnNormalizer:
    """Per-task running maximum of the absolute discounted return, and the BRC reward scale built from it.

    :param num_tasks: Number of tasks (one statistic each)
    :param gamma: Discount factor used for the returns
    :param entropy_term: ``"fixed"`` (reference code: ``lambda = -alpha * target_entropy / (2 (1 - gamma))``,
        one value for all tasks) or ``"per_task"`` (the paper: ``lambda_i = alpha * H_i / (1 - gamma)`` with
        ``H_i`` the running policy entropy measured on task ``i``'s samples; squashed-Gaussian entropies
        are often negative, so ``lambda_i`` is floored at the fixed term to keep the denominator positive)
    :param entropy_momentum: Weight of the newest measurement in the running per-task entropy
    """

    def __init__(self, num_tasks: int = 1, gamma: float = 0.99, entropy_term: str = "fixed", entropy_momentum: float = 0.01):
        if num_tasks < 1:
            raise ValueError(f"ReturnNormalizer needs num_tasks >= 1, got {num_tasks}")
        if not 0.0 <= gamma < 1.0:
            raise ValueError(f"ReturnNormalizer needs 0 <= gamma < 1 (the bootstrap divides by 1 - gamma), got {gamma}")
        _check_entropy_options(entropy_term, entropy_momentum)
        self.num_tasks = num_tasks
        self.gamma = gamma
        self.entropy_term = entropy_term
        self.entropy_momentum = entropy_momentum
        # As in the reference: no initial value, so a task's rewards scale to 0 until its first episode ends
        self.max_returns = np.full(num_tasks, -np.inf)
        self.min_returns = np.full(num_tasks, np.inf)
        self.episodes = np.zeros(num_tasks, dtype=np.int64)
        self.task_entropy = np.zeros(num_tasks)
        self._episode_rewards: dict[int, list[float]] = {}

    @property
    def max_abs_return(self) -> np.ndarray:
        """``G_i``: the largest absolute discounted return seen on each task (``inf`` before the first episode)."""
        return np.maximum(self.max_returns, np.abs(self.min_returns))

    def reset_episodes(self) -> None:
        """Forget unfinished episodes (the environments were reset)."""
        self._episode_rewards.clear()

    def update(self, rewards: np.ndarray, dones: np.ndarray, truncated: np.ndarray, task_ids: np.ndarray) -> None:
        """Record one vector step: raw rewards, episode ends, and which of those ends were truncations.

        :param rewards: ``(n_envs,)`` raw rewards
        :param dones: ``(n_envs,)`` episode ended (terminated or truncated)
        :param truncated: ``(n_envs,)`` the episode ended by a time limit (bootstrapped), not a termination. An end
            that is both is a termination (SB3's ``TimeLimit.truncated``); the reference bootstraps it
        :param task_ids: ``(n_envs,)`` task of each environment
        """
        rewards = np.asarray(rewards, dtype=np.float64).reshape(-1)
        check_finite("reward", rewards, NON_FINITE_HINT)
        for env_idx, task in enumerate(np.asarray(task_ids).reshape(-1)):
            if not 0 <= task < self.num_tasks:
                raise ValueError(f"Task id {task} (environment {env_idx}) is outside [0, {self.num_tasks}).")
            episode = self._episode_rewards.setdefault(env_idx, [])
            episode.append(float(rewards[env_idx]))
            if dones[env_idx]:
                self._finish_episode(int(task), episode, bool(truncated[env_idx]))
                self._episode_rewards[env_idx] = []

    def _finish_episode(self, task: int, rewards: list[float], truncated: bool) -> None:
        # Truncated episodes continue past the time limit: bootstrap with mean(r) / (1 - gamma) (reference code)
        value = float(np.mean(rewards)) / (1.0 - self.gamma) if truncated else 0.0
        high, low = -np.inf, np.inf
        for reward in reversed(rewards):
            value = reward + self.gamma * value
            high, low = max(high, value), min(low, value)
        self.max_returns[task] = max(self.max_returns[task], high)
        self.min_returns[task] = min(self.min_returns[task], low)
        self.episodes[task] += 1

    def update_entropy(self, task_ids: th.Tensor, entropy: th.Tensor) -> None:
        """Fold per-sample entropy estimates ``-log pi(a|s)`` into the running per-task entropy (``per_task`` only)."""
        if self.entropy_term != "per_task":
            return
        sums = th.zeros(self.num_tasks, device=entropy.device).index_add_(0, task_ids, entropy.detach().float())
        counts = th.bincount(task_ids, minlength=self.num_tasks)
        seen = (counts > 0).cpu().numpy()
        means = (sums / counts.clamp(min=1)).cpu().numpy()
        first = seen & (self.task_entropy == 0.0)
        self.task_entropy[first] = means[first]
        rest = seen & ~first
        self.task_entropy[rest] += self.entropy_momentum * (means[rest] - self.task_entropy[rest])

    def reward_scale(self, ent_coef: th.Tensor, target_entropy: float, v_max: float) -> th.Tensor:
        """Per-task multiplier ``v_max / (G_i + lambda_i)`` (0 for tasks with no finished episode).

        :param ent_coef: Current entropy coefficient alpha (a tensor, so no host sync is needed)
        :param target_entropy: Target entropy of the temperature loss
        :param v_max: Upper end of the categorical support
        :return: ``(num_tasks,)`` tensor on ``ent_coef``'s device
        """
        ent_coef = ent_coef.detach().reshape(())
        g = th.as_tensor(self.max_abs_return, dtype=th.float32, device=ent_coef.device)
        lam = -ent_coef * target_entropy / (2.0 * (1.0 - self.gamma))
        if self.entropy_term == "per_task":
            entropy = th.as_tensor(self.task_entropy, dtype=th.float32, device=ent_coef.device)
            lam = th.maximum(ent_coef * entropy / (1.0 - self.gamma), lam)
        # The floor only matters if alpha underflows to 0 on an all-zero-reward task (0 / 0 would give NaN)
        return v_max / (g + lam).clamp(min=1e-8)

    def add_tasks(self, count: int) -> None:
        """Track ``count`` more tasks (no statistics yet: their rewards scale to 0 until an episode ends)."""
        self.num_tasks += count
        self.max_returns = np.concatenate([self.max_returns, np.full(count, -np.inf)])
        self.min_returns = np.concatenate([self.min_returns, np.full(count, np.inf)])
        self.episodes = np.concatenate([self.episodes, np.zeros(count, dtype=np.int64)])
        self.task_entropy = np.concatenate([self.task_entropy, np.zeros(count)])

    def __getstate__(self) -> dict[str, Any]:
        # Unfinished episodes belong to env instances that do not survive a save; keep only the statistics
        state = self.__dict__.copy()
        state["_episode_rewards"] = {}
        return state
