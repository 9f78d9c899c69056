"""Callbacks the multi-task algorithms attach themselves."""

from stable_baselines3.common.callbacks import BaseCallback
from tqdm.rich import tqdm


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
