"""What every BRC algorithm (BRCSAC, BRCDQN) adds to its SB3 base class: task bookkeeping, per-task logs,
the return normaliser's feed, input checks, atomic saves and checked loads."""

import io
import os
import pathlib
import zipfile
from collections import deque
from collections.abc import Iterable
from typing import Any, TypeVar

import numpy as np
import torch as th
from stable_baselines3.common.buffers import ReplayBuffer
from stable_baselines3.common.callbacks import BaseCallback, ConvertCallback
from stable_baselines3.common.type_aliases import GymEnv, MaybeCallback

from sb3_brc.common.callbacks import RewardNormalizationCallback, TaskProgressBarCallback
from sb3_brc.common.normalizer import ReturnNormalizer
from sb3_brc.common.utils import NON_FINITE_HINT, check_finite

SelfMultiTask = TypeVar("SelfMultiTask", bound="MultiTaskAlgorithm")


def num_tasks_of(env: GymEnv | None) -> int:
    """Number of tasks an environment carries (``MultiTaskVecEnv.num_tasks``), 1 for a plain env."""
    return int(getattr(env, "num_tasks", 1)) if env is not None else 1


def task_layout_of(env: GymEnv | None) -> dict[str, Any] | None:
    """Task names and sizes of a ``MultiTaskVecEnv`` (``None`` for a plain env)."""
    return getattr(env, "layout", None) if env is not None else None


def check_same_tasks(expected: dict[str, Any] | None, env: GymEnv) -> None:
    """A model only works on the tasks, task ids and layout it was trained on; an env may hold a contiguous
    run of them (``first_task_id``), e.g. the tasks added by ``BRCSAC.add_tasks``."""
    found = task_layout_of(env)
    if expected is None or found is None:
        return
    keys = [key for key in expected if key != "first_task_id"]
    first, count = found.get("first_task_id", 0), len(found["task_names"])
    window = {key: list(expected[key][first : first + count]) for key in keys}
    if set(keys) != {key for key in found if key != "first_task_id"} or any(list(found[k]) != window[k] for k in keys):
        raise ValueError(
            f"The env's tasks { ({k: found.get(k) for k in keys}) } (ids from {first}) differ from the model's "
            f"{ ({k: expected[k] for k in keys}) }. Build the env with the same tasks in the same order "
            "(e.g. the same make_suite name); new tasks go through model.add_tasks()."
        )


def check_save_file(path: str | pathlib.Path | io.BufferedIOBase) -> None:
    """Raise a clear ``ValueError`` when ``path`` is not an intact SB3 save (truncated, corrupted, not a zip)."""
    if isinstance(path, io.BufferedIOBase):
        return
    path = pathlib.Path(path)
    if not path.exists() and path.with_name(path.name + ".zip").exists():
        path = path.with_name(path.name + ".zip")
    if not path.exists():
        raise FileNotFoundError(f"No saved model at {path}")
    problem = None
    try:
        with zipfile.ZipFile(path) as archive:
            missing = {"data", "policy.pth"} - set(archive.namelist())
            bad_member = archive.testzip()
        if missing:
            problem = f"it lacks {sorted(missing)}"
        elif bad_member is not None:
            problem = f"its member {bad_member!r} is corrupted"
    except (zipfile.BadZipFile, OSError, EOFError) as error:
        problem = f"it is not a readable zip file ({error})"
    if problem:
        raise ValueError(
            f"Cannot load {path}: {problem}. The file is truncated or corrupted, or not an SB3 save; "
            "load an intact save or an earlier checkpoint."
        )


def convert_callback(callback: BaseCallback | Any) -> BaseCallback:
    """SB3 accepts a plain function as callback; wrap it like ``BaseAlgorithm._init_callback`` does."""
    return callback if isinstance(callback, BaseCallback) else ConvertCallback(callback)


def _float_rows(obs: np.ndarray | dict[str, np.ndarray], n_rows: int) -> np.ndarray:
    """The floating-point parts of observations (Box or Dict) as one row per environment (integer images
    cannot hold NaN and are skipped, so Atari frames are not copied every step)."""
    parts = [np.asarray(part) for part in (obs.values() if isinstance(obs, dict) else [obs])]
    floats = [part.reshape(n_rows, -1) for part in parts if part.dtype.kind == "f"]
    return np.concatenate(floats, axis=1) if floats else np.zeros((n_rows, 0))


class MultiTaskAlgorithm:
    """Mixin placed before an SB3 off-policy algorithm (``class BRCSAC(MultiTaskAlgorithm, SAC)``).

    The subclass calls :meth:`_init_task_state` in ``__init__`` and has a ``num_tasks`` property.
    """

    task_layout: dict[str, Any] | None
    return_normalizer: ReturnNormalizer | None
    _task_episodes: list[deque] | None
    _task_successes: list[deque] | None

    def _init_task_state(
        self, env: GymEnv | None, normalize_rewards: bool | RewardNormalizationCallback, num_tasks: int, gamma: float
    ) -> None:
        """Task layout, per-task rollout statistics and the return normaliser, from the constructor's arguments.

        Called in ``__init__``, not in ``_setup_model()``: ``load()`` restores these from the save file first.
        """
        self.task_layout = task_layout_of(env)
        # Per-task rollout statistics (not saved), built at the first episode for the current task count
        self._task_episodes = self._task_successes = None
        self.return_normalizer = None
        if normalize_rewards is not False:
            config = (
                normalize_rewards
                if isinstance(normalize_rewards, RewardNormalizationCallback)
                else RewardNormalizationCallback()
            )
            self.return_normalizer = config.normalizer or ReturnNormalizer(num_tasks, gamma, entropy_term=config.entropy_term)

    def learn(
        self: SelfMultiTask,
        total_timesteps: int,
        callback: MaybeCallback = None,
        log_interval: int = 4,
        tb_log_name: str | None = None,
        reset_num_timesteps: bool = True,
        progress_bar: bool = False,
    ) -> SelfMultiTask:
        """SB3's ``learn()``; the tensorboard run is named after the algorithm (``BRCSAC``, ``BRCDQN``) by default."""
        return super().learn(
            total_timesteps=total_timesteps,
            callback=callback,
            log_interval=log_interval,
            tb_log_name=tb_log_name or type(self).__name__,
            reset_num_timesteps=reset_num_timesteps,
            progress_bar=progress_bar,
        )

    @property
    def task_names(self) -> list[str]:
        """Names of the tasks, in task-id order (``task0``... if the env did not name them)."""
        if self.task_layout is not None:
            return list(self.task_layout["task_names"])
        return [f"task{i}" for i in range(self.num_tasks)]

    def _record_reward_scale(self, reward_scale: th.Tensor) -> None:
        scales = reward_scale.tolist()
        self.logger.record("train/reward_scale", float(np.mean(scales)))
        if self.num_tasks > 1:
            for name, scale in zip(self.task_names, scales, strict=True):
                self.logger.record(f"train/{name}/reward_scale", scale)

    def _update_info_buffer(self, infos: list[dict[str, Any]], dones: np.ndarray | None = None) -> None:
        super()._update_info_buffer(infos, dones)
        if self.num_tasks == 1:
            return
        if self._task_episodes is None:
            self._task_episodes = [deque(maxlen=self._stats_window_size) for _ in range(self.num_tasks)]
            self._task_successes = [deque(maxlen=self._stats_window_size) for _ in range(self.num_tasks)]
        for idx, info in enumerate(infos):
            task = info.get("task_id")
            if task is None:
                continue
            if "episode" in info:
                self._task_episodes[task].append(info["episode"]["r"])
            if "is_success" in info and (dones is None or dones[idx]):
                self._task_successes[task].append(float(info["is_success"]))

    def dump_logs(self) -> None:
        if self.num_tasks > 1:
            self.logger.record("time/steps_per_task", self.num_timesteps // self.num_tasks)
            for name, returns, successes in zip(
                self.task_names, self._task_episodes or [], self._task_successes or [], strict=False
            ):
                if returns:
                    self.logger.record(f"rollout/{name}/ep_rew_mean", float(np.mean(returns)))
                if successes:
                    self.logger.record(f"rollout/{name}/success_rate", float(np.mean(successes)))
        super().dump_logs()

    def _excluded_save_params(self) -> list[str]:
        return [*super()._excluded_save_params(), "_task_episodes", "_task_successes"]

    def _store_transition(
        self,
        replay_buffer: ReplayBuffer,
        buffer_action: np.ndarray,
        new_obs: np.ndarray | dict[str, np.ndarray],
        reward: np.ndarray,
        dones: np.ndarray,
        infos: list[dict[str, Any]],
    ) -> None:
        # A NaN stored in the replay buffer would silently poison every later update: stop at the source
        check_finite("reward", reward, NON_FINITE_HINT)
        check_finite("observation", _float_rows(new_obs, len(dones)), NON_FINITE_HINT)
        ended = [i for i, info in enumerate(infos) if "terminal_observation" in info]
        if ended:
            terminal = np.concatenate([_float_rows(infos[i]["terminal_observation"], 1) for i in ended])
            check_finite("terminal observation", terminal, NON_FINITE_HINT, ended)
        super()._store_transition(replay_buffer, buffer_action, new_obs, reward, dones, infos)

    def _init_callback(self, callback: MaybeCallback, progress_bar: bool = False) -> BaseCallback:
        if self.return_normalizer is not None:
            # The normaliser is part of the algorithm: feed it every env step, whatever the user passes
            user_callbacks = list(callback) if isinstance(callback, Iterable) else ([] if callback is None else [callback])
            callback = [RewardNormalizationCallback(self.return_normalizer), *map(convert_callback, user_callbacks)]
        if progress_bar and self.num_tasks > 1:
            # Count env steps per task (one vector step = one step of every task), as BRC reports them
            callback = [*(callback if isinstance(callback, list) else [callback]), TaskProgressBarCallback()]
            progress_bar = False
        return super()._init_callback(callback, progress_bar)

    def save(
        self,
        path: str | pathlib.Path | io.BufferedIOBase,
        exclude: Iterable[str] | None = None,
        include: Iterable[str] | None = None,
    ) -> None:
        """Save like SB3, but atomically: written to a temporary file next to ``path``, then renamed over it,
        so a crash during the save never leaves a truncated file or destroys the previous one."""
        if isinstance(path, io.BufferedIOBase):
            return super().save(path, exclude, include)
        path = pathlib.Path(path)
        if path.suffix != ".zip":
            path = path.with_name(path.name + ".zip")
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp_path = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        try:
            with open(tmp_path, "wb") as file:
                super().save(file, exclude, include)
                file.flush()
                os.fsync(file.fileno())
            os.replace(tmp_path, path)
        finally:
            tmp_path.unlink(missing_ok=True)

    @classmethod
    def load(  # type: ignore[override]
        cls: type[SelfMultiTask],
        path: str | pathlib.Path | io.BufferedIOBase,
        env: GymEnv | None = None,
        device: th.device | str = "auto",
        custom_objects: dict[str, Any] | None = None,
        print_system_info: bool = False,
        force_reset: bool = True,
        **kwargs: Any,
    ) -> SelfMultiTask:
        check_save_file(path)
        try:
            model = super().load(path, env, device, custom_objects, print_system_info, force_reset, **kwargs)
        except ValueError as error:
            if "spaces do not match" not in str(error):
                raise
            raise ValueError(
                f"{error}. Load with an env that has the same observation and action spaces as the training env "
                "(multi-task: the same tasks in the same order)."
            ) from error
        if env is not None:
            check_same_tasks(model.task_layout, env)
        return model

    def set_env(self, env: GymEnv, force_reset: bool = True) -> None:
        if self.num_tasks > 1 and task_layout_of(env) is None:
            raise ValueError(
                f"This model was trained on {self.num_tasks} tasks: give it a MultiTaskVecEnv with the same tasks."
            )
        check_same_tasks(self.task_layout, env)
        super().set_env(env, force_reset)
