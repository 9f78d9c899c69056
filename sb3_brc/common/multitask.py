"""What every BRC algorithm (BRCSAC, BRCDQN) adds to its SB3 base class: task bookkeeping, per-task logs,
the return normaliser's feed, input checks, atomic saves and checked loads (the save-file checks:
:mod:`~sb3_brc.common.save_files`; the hyperparameter check: :mod:`~sb3_brc.common.hyperparameters`)."""

import io
import pathlib
from abc import ABC, abstractmethod
from collections import deque
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any, ClassVar, TypeVar, cast

import numpy as np
import torch as th
from stable_baselines3.common.base_class import maybe_make_env
from stable_baselines3.common.buffers import ReplayBuffer
from stable_baselines3.common.callbacks import BaseCallback, ConvertCallback
from stable_baselines3.common.off_policy_algorithm import OffPolicyAlgorithm
from stable_baselines3.common.policies import BasePolicy
from stable_baselines3.common.preprocessing import is_image_space
from stable_baselines3.common.type_aliases import GymEnv, MaybeCallback, ReplayBufferSamples
from stable_baselines3.common.vec_env import VecEnv, unwrap_vec_normalize

from sb3_brc.common.callbacks import TaskProgressBarCallback
from sb3_brc.common.normalizer import ReturnNormalization, ReturnNormalizer
from sb3_brc.common.policies import TaskConditionedNetwork
from sb3_brc.common.save_files import check_save_file
from sb3_brc.common.task_layout import (
    TASK_ID_KEY,
    TaskLayout,
    is_task_observation_space,
    num_tasks_of,
    observation_part,
    split_task_observation,
    task_layout_of,
)
from sb3_brc.common.utils import NON_FINITE_HINT, SB3_BRC_VERSION, atomic_file, check_finite

#: The type of ``self`` (``learn()`` and ``load()`` return the subclass).
SelfMultiTask = TypeVar("SelfMultiTask", bound="MultiTaskAlgorithm")
# The constructor's env and policy arguments, handed back checked: an env id as the env it names, a policy name as
# the algorithm's policy class
#: The env argument of an algorithm's constructor (an env, an env id or None), passed through unchanged.
EnvArg = TypeVar("EnvArg", bound=GymEnv | str | None)
#: The policy argument of an algorithm's constructor (a name or a class), passed through unchanged.
PolicyArg = TypeVar("PolicyArg", bound=str | type[BasePolicy])


def convert_callback(callback: BaseCallback | Any) -> BaseCallback:
    """SB3 accepts a plain function as callback; wrap it like ``BaseAlgorithm._init_callback`` does."""
    return callback if isinstance(callback, BaseCallback) else ConvertCallback(callback)


def _float_rows(obs: np.ndarray | dict[str, np.ndarray], n_rows: int) -> np.ndarray:
    """The floating-point parts of observations (Box or Dict) as one row per environment (integer parts
    cannot hold NaN and are skipped: task ids, and Atari frames, which would otherwise be copied every step)."""
    parts = [np.asarray(part) for part in (obs.values() if isinstance(obs, dict) else [obs])]
    floats = [part.reshape(n_rows, -1) for part in parts if part.dtype.kind == "f"]
    return np.concatenate(floats, axis=1) if floats else np.zeros((n_rows, 0))


if TYPE_CHECKING:
    # For the type checker, the mixin is what it is always mixed into: an SB3 off-policy algorithm (at runtime it
    # is a plain ABC, placed before the SB3 class in the bases)
    _MixinBase = OffPolicyAlgorithm
else:
    _MixinBase = ABC


class MultiTaskAlgorithm(_MixinBase):
    """Mixin placed before an SB3 off-policy algorithm (``class BRCSAC(MultiTaskAlgorithm, SAC)``).

    The subclass calls :meth:`_checked_env_and_policy` and :meth:`_task_policy_kwargs` before SB3's constructor and
    :meth:`_init_task_state` after it, has a ``num_tasks`` property, and implements the hooks the tools use
    (diagnostics, transfer): :attr:`value_network`, :meth:`value_loss`, :meth:`policy_entropy`, :meth:`_grow_tasks`.
    """

    # Set by each algorithm: its random-action warm-up and replay capacity per task, and the parts transfer can freeze
    learning_starts_per_task: ClassVar[int]
    buffer_size_per_task: ClassVar[int]
    freezable: ClassVar[tuple[str, ...]]
    #: The parts of ``freezable`` that transfer froze (``add_tasks(freeze=...)``); saved with the model
    frozen_parts: tuple[str, ...] = ()
    target_update_interval: int  # SAC's and DQN's, checked by _check_hyperparameters
    task_layout: TaskLayout | None
    return_normalizer: ReturnNormalizer | None
    _task_episodes: list[deque] | None
    _task_successes: list[deque] | None

    @classmethod
    def _checked_env_and_policy(
        cls, policy: PolicyArg, env: EnvArg, verbose: int, check_spaces: Callable[[GymEnv], None]
    ) -> tuple[EnvArg, PolicyArg]:
        """The env (made from an id, its spaces checked) and the policy, before SB3's constructor sees them.

        A policy name is resolved here on a multi-task env: its ``Dict(observation, task_id)`` is the task-id
        encoding, not the Dict observation SB3's ``MultiInputPolicy`` is for, so ``MlpPolicy``/``CnnPolicy`` stay
        valid, and ``MultiInputPolicy`` is the one of them that fits the observation part. A policy class must derive
        from the algorithm's (``policy_aliases["MlpPolicy"]``)."""
        checked_env = None if env is None else maybe_make_env(env, verbose)
        if checked_env is not None:
            check_spaces(checked_env)
            vec_normalize = unwrap_vec_normalize(checked_env) if isinstance(checked_env, VecEnv) else None
            if vec_normalize is not None and vec_normalize.norm_obs and TASK_ID_KEY in (vec_normalize.norm_obs_keys or []):
                raise ValueError(
                    "VecNormalize would normalise the task ids into meaningless floats: build it with "
                    "VecNormalize(env, norm_obs_keys=['observation'])."
                )
        resolved: str | type[BasePolicy] = policy
        if isinstance(policy, str) and checked_env is not None and is_task_observation_space(checked_env.observation_space):
            if policy not in cls.policy_aliases:
                raise ValueError(f"Unknown policy {policy!r}; {cls.__name__} takes {sorted(cls.policy_aliases)}")
            if policy == "MultiInputPolicy":
                # SB3 users name it for Dict observations; here the Dict is the task encoding around one Box, which
                # MultiInputPolicy's CombinedExtractor would read as MlpPolicy (vectors) or CnnPolicy (images) does
                image = is_image_space(observation_part(checked_env.observation_space))
                resolved = cls.policy_aliases["CnnPolicy" if image else "MlpPolicy"]
            else:
                resolved = cls.policy_aliases[policy]
        base = cls.policy_aliases["MlpPolicy"]
        if isinstance(resolved, type) and not issubclass(resolved, base):
            raise ValueError(
                f"{cls.__name__} needs a {base.__name__}, got {resolved.__name__}. If this comes from {cls.__name__}.load(), "
                "the file was saved by another algorithm (e.g. SB3's SAC): load it with that algorithm's load()."
            )
        return cast(EnvArg, checked_env), cast(PolicyArg, resolved)

    @staticmethod
    def _task_policy_kwargs(policy_kwargs: dict[str, Any] | None, env: GymEnv | str | None) -> dict[str, Any]:
        """``policy_kwargs`` with the env's task count (and, for discrete tasks, their legal actions)."""
        policy_kwargs, layout = dict(policy_kwargs or {}), task_layout_of(env)
        if layout is None:
            return policy_kwargs
        if layout.num_tasks > 1 and policy_kwargs.setdefault("num_tasks", layout.num_tasks) != layout.num_tasks:
            raise ValueError(f"policy_kwargs num_tasks={policy_kwargs['num_tasks']} but the env has {layout.num_tasks} tasks.")
        # Also for one task: a single game's legal actions can be a subset of the union space (Freeway: 3 of 18)
        if layout.legal_actions is not None:
            policy_kwargs.setdefault("legal_actions", [list(legal) for legal in layout.legal_actions])
        return policy_kwargs

    def _init_task_state(
        self, env: GymEnv | str | None, normalize_rewards: bool | ReturnNormalization, new_model: bool
    ) -> None:
        """Task layout, per-task rollout statistics and the return normaliser, from the constructor's arguments.

        Called in ``__init__``, not in ``_setup_model()``: ``load()`` restores these from the save file first.
        """
        self.task_layout = task_layout_of(env)
        if new_model and self.task_layout is not None and self.task_layout.first_id != 0:
            raise ValueError(
                f"This env's task ids start at {self.task_layout.first_id}: it continues a trained model's tasks. "
                "Add it to that model with sb3_brc.tools.transfer.add_tasks(model, env), or build it with "
                "first_task_id=0 for a new model."
            )
        # Per-task rollout statistics (not saved), built at the first episode for the current task count
        self._task_episodes = self._task_successes = None
        self.return_normalizer = None
        if normalize_rewards is not False:
            options = ReturnNormalization() if normalize_rewards is True else normalize_rewards
            if not isinstance(options, ReturnNormalization):
                raise TypeError(f"normalize_rewards takes True, False or a ReturnNormalization, got {normalize_rewards!r}")
            self.return_normalizer = options.build(num_tasks_of(env), self.gamma)

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
    @abstractmethod
    def num_tasks(self) -> int:
        """Number of tasks the policy was built for (its task embeddings)."""

    @property
    def task_names(self) -> list[str]:
        """Names of the tasks, in task-id order (``task0``... if the env did not name them)."""
        if self.task_layout is not None:
            return list(self.task_layout.names)
        return [f"task{i}" for i in range(self.num_tasks)]

    @staticmethod
    def task_ids(observations: th.Tensor | dict[str, th.Tensor]) -> th.Tensor:
        """Task id of each observation of a batch (0 for plain observations)."""
        return split_task_observation(observations)[1]

    def _finish_setup_model(self) -> None:
        """The end of each algorithm's ``_setup_model()`` (also run by ``load()``, after the saved attributes are
        restored): check the return normaliser against the policy and freeze the parts transfer froze."""
        if self.return_normalizer is not None and self.return_normalizer.num_tasks != self.num_tasks:
            raise ValueError(
                f"The return normaliser tracks {self.return_normalizer.num_tasks} tasks, the policy {self.num_tasks}."
            )
        # requires_grad is not in a state dict: a frozen part is frozen again whenever the networks are built
        self._apply_frozen_parts()

    def _apply_frozen_parts(self) -> None:
        """Stop training the networks named in :attr:`frozen_parts`; their task embeddings keep training."""
        for part in self.frozen_parts:
            getattr(self, part).requires_grad_(False)
        if self.frozen_parts:
            assert self.value_network.task_embedding is not None  # only multi-task models are transferred
            self.value_network.task_embedding.requires_grad_(True)  # the task embeddings always train

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
        assert self._task_successes is not None  # set together with _task_episodes
        for idx, info in enumerate(infos):
            task = info.get("task_id")
            if task is None:
                continue
            if "episode" in info:
                self._task_episodes[task].append(info["episode"]["r"])
            if "is_success" in info and (dones is None or dones[idx]):
                self._task_successes[task].append(float(info["is_success"]))

    def dump_logs(self) -> None:
        """SB3's logs, with several tasks also ``time/steps_per_task`` and ``rollout/<task>/ep_rew_mean`` and
        ``rollout/<task>/success_rate``."""
        if self.num_tasks > 1:
            # Per env, not per task of the model: after transfer the env steps only the new tasks
            self.logger.record("time/steps_per_task", self.num_timesteps // self.n_envs)
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

    def _setup_learn(
        self, total_timesteps: int, callback: MaybeCallback = None, reset_num_timesteps: bool = True, *args: Any, **kwargs: Any
    ) -> Any:
        if self.return_normalizer is not None and (reset_num_timesteps or self._last_obs is None):
            self.return_normalizer.reset_episodes()  # SB3 resets the envs: unfinished episodes are gone
        return super()._setup_learn(total_timesteps, callback, reset_num_timesteps, *args, **kwargs)

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
        if self.return_normalizer is not None:
            # The normaliser sees raw rewards, also under VecNormalize
            raw = self._vec_normalize_env.get_original_reward() if self._vec_normalize_env is not None else reward
            truncated = np.array([info.get("TimeLimit.truncated", False) for info in infos])
            self.return_normalizer.update(raw, dones, truncated, np.array([info.get("task_id", 0) for info in infos]))
        super()._store_transition(replay_buffer, buffer_action, new_obs, reward, dones, infos)

    def _init_callback(self, callback: MaybeCallback, progress_bar: bool = False) -> BaseCallback:
        if progress_bar and self.num_tasks > 1:
            # Count env steps per task (one vector step = one step of every task), as BRC reports them
            user_callbacks = list(callback) if isinstance(callback, Iterable) else ([] if callback is None else [callback])
            callback = [*map(convert_callback, user_callbacks), TaskProgressBarCallback()]
            progress_bar = False
        return super()._init_callback(callback, progress_bar)

    def evaluation_predict(self, observation: np.ndarray | dict[str, np.ndarray]) -> np.ndarray:
        """The actions of BRC's evaluation protocol for ``observation``: ``predict(deterministic=True)``, unless the
        algorithm's protocol differs (BRCDQN's evaluation epsilon). Used by ``evaluate_tasks`` and the harness."""
        return self.predict(observation, deterministic=True)[0]

    # Hooks of the algorithm-aware tools (diagnostics, transfer) -----------------------------------------------------

    @property
    @abstractmethod
    def value_network(self) -> TaskConditionedNetwork:
        """The categorical value network that owns the task embedding (BRCSAC's critic, BRCDQN's Q-network)."""

    @abstractmethod
    def value_loss(self, replay_data: ReplayBufferSamples) -> th.Tensor:
        """The value network's training loss on ``replay_data`` with the current reward scales."""

    @abstractmethod
    def policy_entropy(self, observations: th.Tensor | dict[str, th.Tensor]) -> th.Tensor | None:
        """Mean policy entropy estimate on ``observations`` (``None`` for a policy without one, e.g. epsilon-greedy)."""

    @abstractmethod
    def _grow_tasks(self, new: TaskLayout, new_rows: str) -> None:
        """Grow every task-indexed part (embedding tables, optimiser, normaliser, per-task policy state) for the tasks
        of ``new``; :func:`sb3_brc.tools.transfer.add_tasks` does the rest (checks, layout, replay, freezing)."""

    # Saving and loading -----------------------------------------------------------------------------------------------

    def save(
        self,
        path: str | pathlib.Path | io.BufferedIOBase,
        exclude: Iterable[str] | None = None,
        include: Iterable[str] | None = None,
    ) -> None:
        """Save like SB3, but atomically: written to a temporary file next to ``path``, then renamed over it,
        so a crash during the save never leaves a truncated file or destroys the previous one. The save records
        the sb3-brc version that wrote it."""
        self.sb3_brc_version = SB3_BRC_VERSION
        if isinstance(path, io.BufferedIOBase):
            return super().save(path, exclude, include)
        path = pathlib.Path(path)
        if path.suffix != ".zip":
            path = path.with_name(path.name + ".zip")
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_file(path) as file:
            super().save(cast(io.BufferedIOBase, file), exclude, include)  # opened "wb": a BufferedWriter

    @classmethod
    def load(
        cls: type[SelfMultiTask],
        path: str | pathlib.Path | io.BufferedIOBase,
        env: GymEnv | None = None,
        device: th.device | str = "auto",
        custom_objects: dict[str, Any] | None = None,
        print_system_info: bool = False,
        force_reset: bool = True,
        **kwargs: Any,
    ) -> SelfMultiTask:
        """SB3's ``load()``, with a clear error for a truncated or foreign file; with ``env``, checks that it holds the
        model's tasks (same tasks, task ids and layout, or a contiguous run of them)."""
        check_save_file(path, cls.policy_aliases["MlpPolicy"].__module__.rsplit(".", 1)[0])
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
            model._check_same_tasks(env)
        return model

    def _check_same_tasks(self, env: GymEnv) -> None:
        """A model only works on the tasks, task ids and layout it was trained on (or a contiguous run of them)."""
        found = task_layout_of(env)
        if self.num_tasks > 1 and found is None:
            raise ValueError(
                f"This model was trained on {self.num_tasks} tasks: give it a multi-task env with the same tasks."
            )
        if self.task_layout is not None and found is not None:
            self.task_layout.check_window(found)

    def set_env(self, env: GymEnv, force_reset: bool = True) -> None:
        """SB3's ``set_env()``, refusing an env of another task set or layout."""
        self._check_same_tasks(env)
        super().set_env(env, force_reset)
