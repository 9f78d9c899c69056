"""Callbacks: the reward-normalisation statistics feed."""

import numpy as np
from stable_baselines3.common.callbacks import BaseCallback
from tqdm.rich import tqdm

from sb3_brc.common.normalizer import ReturnNormalizer


class RewardNormalizationCallback(BaseCallback):
    """Feeds every environment step to a :class:`ReturnNormalizer` (BRC's per-task max discounted return).

    ``BRCSAC`` attaches one by itself; pass a configured instance as ``BRCSAC(normalize_rewards=...)`` to
    change the normaliser's options. The statistics live in the normaliser, which the model owns and saves;
    the callback only streams rewards into it. Raw rewards are used even under ``VecNormalize``.

    :param normalizer: The statistics to update; ``None`` builds one from the model when training starts
    :param entropy_term: ``"fixed"`` or ``"per_task"`` (see :class:`ReturnNormalizer`), used when
        ``normalizer`` is ``None``
    :param verbose: Verbosity level
    """

    def __init__(self, normalizer: ReturnNormalizer | None = None, entropy_term: str = "fixed", verbose: int = 0):
        super().__init__(verbose)
        self.normalizer = normalizer
        self.entropy_term = entropy_term

    def _on_training_start(self) -> None:
        if self.normalizer is None:
            self.normalizer = self.model.return_normalizer
        if self.locals.get("reset_num_timesteps", True):
            # learn() reset the environments: unfinished episodes are gone
            self.normalizer.reset_episodes()

    def _on_step(self) -> bool:
        assert self.normalizer is not None
        infos = self.locals["infos"]
        vec_normalize = self.model.get_vec_normalize_env()
        rewards = vec_normalize.get_original_reward() if vec_normalize is not None else self.locals["rewards"]
        truncated = np.array([info.get("TimeLimit.truncated", False) for info in infos])
        task_ids = np.array([info.get("task_id", 0) for info in infos])
        self.normalizer.update(rewards, self.locals["dones"], truncated, task_ids)
        return True


class TaskProgressBarCallback(BaseCallback):
    """Progress bar in env steps *per task* (one vector step of a ``MultiTaskVecEnv`` steps every task once)."""

    def _on_training_start(self) -> None:
        num_tasks = self.training_env.num_envs
        remaining = (self.locals["total_timesteps"] - self.model.num_timesteps) // num_tasks
        self.pbar = tqdm(total=remaining, unit="steps/task", desc=f"{num_tasks} tasks")

    def _on_step(self) -> bool:
        self.pbar.update(1)
        return True

    def _on_training_end(self) -> None:
        self.pbar.refresh()
        self.pbar.close()
