"""BRC's per-task return normalisation for any SB3 off-policy algorithm (SAC, TQC, CrossQ, TD3, ...), as a callback.

BRCSAC and BRCDQN normalise their rewards themselves. :class:`ReturnNormalizationCallback` gives another algorithm
the same: it feeds one :class:`~sb3_brc.common.normalizer.ReturnNormalizer` from the transitions the algorithm
collects and scales the rewards it trains on by ``v_max / (G_i + lambda)`` per task. SB3 has no hook between
sampling a batch and training on it, so the scaling happens in one place, :class:`ScaledRewardSampling`, which the
callback puts around the algorithm's replay buffer for the time of ``learn()``.
"""

from collections.abc import Callable
from typing import Any

import numpy as np
import torch as th
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.vec_env import VecNormalize

from sb3_brc.common.multitask import MultiTaskAlgorithm
from sb3_brc.common.normalizer import ReturnNormalization, ReturnNormalizer
from sb3_brc.common.task_layout import num_tasks_of, split_task_observation


class ScaledRewardSampling:
    """A replay buffer whose samples carry their rewards times a per-task scale; everything else is the buffer's.

    :param buffer: The algorithm's replay buffer
    :param reward_scale: ``() -> (num_tasks,) tensor``, the scale at sampling time
    """

    def __init__(self, buffer: Any, reward_scale: Callable[[], th.Tensor]):
        self.buffer, self.reward_scale = buffer, reward_scale

    def sample(self, batch_size: int, env: VecNormalize | None = None) -> Any:
        """The buffer's sample, its rewards multiplied by their tasks' scales."""
        data = self.buffer.sample(batch_size, env)
        task_ids = split_task_observation(data.observations)[1]
        return data._replace(rewards=data.rewards * self.reward_scale()[task_ids].reshape(data.rewards.shape))

    def __getattr__(self, name: str) -> Any:
        return getattr(self.__dict__["buffer"], name)

    def __reduce_ex__(self, protocol: Any) -> Any:
        # A replay buffer saved meanwhile (save_replay_buffer, checkpoints) is the buffer itself
        return self.buffer.__reduce_ex__(protocol)


class ReturnNormalizationCallback(BaseCallback):
    """BRC's per-task return normalisation (``v_max / (G_i + lambda)``, with the entropy term where the algorithm has
    a temperature) on an SB3 off-policy algorithm: ``model.learn(..., callback=ReturnNormalizationCallback())``.

    The normaliser is kept on the model as ``model.return_normalizer``, so ``model.save()`` and sb3-brc's checkpoints
    keep it and a loaded or resumed model goes on with its statistics. Task ids come from the transitions' infos
    (``task_id``, as :class:`~sb3_brc.MultiTaskVecEnv` gives them; 0 otherwise).

    :param normalization: Its options (``entropy_term="fixed"`` only: the per-task entropy needs the update's own
        entropy estimates, which only BRCSAC has)
    :param v_max: Upper end of the value range the largest return is scaled to (BRC's categorical support: 10)
    """

    def __init__(self, normalization: ReturnNormalization | None = None, v_max: float = 10.0, verbose: int = 0):
        super().__init__(verbose)
        self.normalization = normalization or ReturnNormalization()
        if self.normalization.entropy_term != "fixed":
            raise ValueError(
                "ReturnNormalizationCallback supports entropy_term='fixed': the per-task entropy term needs the "
                "update's entropy estimates, which only BRCSAC computes (use BRCSAC's normalize_rewards for it)."
            )
        self.v_max = v_max

    @property
    def algorithm(self) -> Any:
        """The model: an SB3 off-policy algorithm, which the callback gives a ``return_normalizer``."""
        return self.model

    @property
    def normalizer(self) -> ReturnNormalizer:
        """The model's normaliser (``model.return_normalizer``)."""
        return self.algorithm.return_normalizer

    def _on_training_start(self) -> None:
        model = self.algorithm
        if isinstance(model, MultiTaskAlgorithm):
            raise TypeError(f"{type(model).__name__} normalises its returns itself (normalize_rewards=...)")
        num_tasks = num_tasks_of(self.training_env)
        normalizer = getattr(model, "return_normalizer", None)
        if not isinstance(normalizer, ReturnNormalizer) or normalizer.num_tasks != num_tasks:
            model.return_normalizer = self.normalization.build(num_tasks, model.gamma)
        model.replay_buffer = ScaledRewardSampling(model.replay_buffer, self.reward_scale)

    def _on_step(self) -> bool:
        rewards, dones, infos = self.locals["rewards"], self.locals["dones"], self.locals["infos"]
        vec_normalize = self.model.get_vec_normalize_env()
        raw = vec_normalize.get_original_reward() if vec_normalize is not None else rewards  # as BRCSAC: raw rewards
        truncated = np.array([info.get("TimeLimit.truncated", False) for info in infos])
        self.normalizer.update(raw, dones, truncated, np.array([info.get("task_id", 0) for info in infos]))
        return True

    def _on_training_end(self) -> None:
        if isinstance(self.algorithm.replay_buffer, ScaledRewardSampling):
            self.algorithm.replay_buffer = self.algorithm.replay_buffer.buffer

    def reward_scale(self) -> th.Tensor:
        """Per-task reward multiplier now: the algorithm's temperature and target entropy in lambda (0 without)."""
        log_ent_coef = getattr(self.model, "log_ent_coef", None)
        fixed_ent_coef = getattr(self.model, "ent_coef_tensor", None)
        if log_ent_coef is not None:
            ent_coef = th.exp(log_ent_coef.detach())
        elif fixed_ent_coef is not None:
            ent_coef = fixed_ent_coef
        else:  # no temperature (TD3, DDPG): no entropy term
            ent_coef = th.zeros((), device=self.model.device)
        target_entropy = float(getattr(self.model, "target_entropy", 0.0))
        return self.normalizer.reward_scale(ent_coef, target_entropy, self.v_max)
