"""BRCDQN: BRC for discrete actions and pixels (DrQ(eps) with a categorical BroNet head and task embeddings)."""

import functools
from typing import Any, ClassVar

import numpy as np
import torch as th
from gymnasium import spaces
from stable_baselines3 import DQN
from stable_baselines3.common.buffers import ReplayBuffer
from stable_baselines3.common.noise import ActionNoise
from stable_baselines3.common.policies import BasePolicy
from stable_baselines3.common.type_aliases import GymEnv, PyTorchObs, Schedule
from stable_baselines3.common.utils import polyak_update

from sb3_brc.common.augmentation import shift, shift_offsets
from sb3_brc.common.buffers import CompactNStepReplayBuffer
from sb3_brc.common.distributional import (
    at_least_fp32,
    categorical_cross_entropy,
    categorical_mean,
    categorical_projection,
)
from sb3_brc.common.hyperparameters import check_hyperparameters
from sb3_brc.common.multitask import MultiTaskAlgorithm
from sb3_brc.common.normalizer import ReturnNormalization
from sb3_brc.common.policies import grow_task_embeddings
from sb3_brc.common.task_layout import TaskLayout, map_observation_part, num_tasks_of, observation_part
from sb3_brc.dqn.functional_update import FunctionalUpdate
from sb3_brc.dqn.policies import BRCDQNPolicy, CategoricalQNetwork, CnnPolicy, MlpPolicy, MultiInputPolicy

# DrQ(eps)'s minibatch per task (dopamine atari_100k DrQ_eps.gin); its warm-up and replay capacity are class variables
BATCH_SIZE_PER_TASK = 32


class BRCDQN(MultiTaskAlgorithm, DQN):
    """BRC for discrete actions: DrQ(eps) with the DQN regression replaced by BRC's categorical cross-entropy,
    a BroNet head on a convolutional encoder, critic-owned task embeddings and per-task return normalisation.

    The released BRC code (``naumix/BiggerRegularizedCategorical``) has no Atari part, so these choices are ours:
    the DrQ(eps) recipe (n-step 10, gamma 0.99, Adam 1e-4 with eps 1.5e-4, batch 32, target = online
    network copied every step, epsilon 1 -> 0.01 over 5000 steps after the warm-up, evaluation epsilon 0.001,
    random-shift augmentation with pad 4, double-Q action selection), a Nature-CNN encoder followed by a
    2-block BroNet head with 101 atoms on [-10, 10] per action, the task embedding concatenated after the
    encoder, no dueling head (BRC's critic has none), no reward clipping (returns are normalised per task
    instead), and in multi-game runs a batch of 32 per task and an 18-action union space whose illegal
    actions are masked in action selection and in the target.

    Step accounting as in BRCSAC: the defaults of ``learning_starts``, ``buffer_size`` and ``batch_size`` scale with
    the number of tasks, but a value given counts transitions over all tasks (as ``total_timesteps`` does); the
    epsilon decay counts steps of each task.

    :param policy: ``"MlpPolicy"`` (encoder chosen by the observation: ``NatureCNN`` for images, flatten for
        vectors), ``"CnnPolicy"``, ``"MultiInputPolicy"`` (single-task Dict observations) or a :class:`BRCDQNPolicy`
    :param env: The environment (a ``DiscreteMultiTaskVecEnv`` for several tasks)
    :param learning_rate: Adam learning rate (can be a function of progress)
    :param buffer_size: Replay capacity (``None``: 100k transitions per task)
    :param learning_starts: Transitions of uniform random legal actions first (``None``: 1600 per task)
    :param batch_size: Minibatch size (``None``: 32 per task)
    :param tau: Target update coefficient (1: copy)
    :param gamma: Discount factor
    :param train_freq: Update every ``train_freq`` steps
    :param gradient_steps: Gradient steps per update
    :param replay_buffer_class: Replay buffer class (default :class:`CompactNStepReplayBuffer`)
    :param replay_buffer_kwargs: Keyword arguments of the replay buffer
    :param n_steps: Rewards summed per target (n-step return)
    :param target_update_interval: Transitions between target copies (``None``: one env step of every task, DrQ(eps)'s
        every-step copy)
    :param exploration_initial_eps: Epsilon during the warm-up and at the start of the decay
    :param exploration_final_eps: Epsilon after the decay
    :param exploration_decay_steps: Steps per task of the linear epsilon decay after the warm-up
    :param eval_exploration_rate: Epsilon of the evaluation protocol (:meth:`evaluation_predict`, used by
        ``evaluate_tasks`` and the harness; 0 for greedy); ``predict(deterministic=True)`` is greedy, as in SB3
    :param augment: DrQ random shifts of image observations (``None``: on for images, off for vectors)
    :param augment_pad: Largest shift in pixels
    :param max_grad_norm: Gradient clipping norm (``None``: off)
    :param normalize_rewards: BRC per-task return normalisation: ``True``, ``False`` or its options as a
        :class:`~sb3_brc.common.normalizer.ReturnNormalization`
    :param compile_update: Compile each gradient update (augmentation, target, loss, gradient clipping, Adam) into one
        graph (:class:`~sb3_brc.dqn.functional_update.FunctionalUpdate`: the same maths). Off by default: on the CPUs
        measured it was no faster than the eager update, whose time goes to convolutions and matrix products
        (``benchmarks/RESULTS.md``)
    :param stats_window_size: Window size for the rollout logging
    :param tensorboard_log: The log location for tensorboard (if None, no logging)
    :param policy_kwargs: Additional arguments for the policy (``net_arch``, ``n_atoms``, ``features_extractor_class``, ...)
    :param verbose: Verbosity level: 0 no output, 1 info, 2 debug
    :param seed: Seed for the pseudo random generators
    :param device: Device (cpu, cuda, ...) on which the code should be run
    :param _init_setup_model: Whether or not to build the network at the creation of the instance
    """

    policy_aliases: ClassVar[dict[str, type[BasePolicy]]] = {
        "MlpPolicy": MlpPolicy,
        "CnnPolicy": CnnPolicy,
        "MultiInputPolicy": MultiInputPolicy,
    }
    # Random-action warm-up and replay capacity per task, and the parts transfer can freeze (the task embedding
    # always trains)
    #: DrQ(eps)'s per-task defaults (dopamine atari_100k DrQ_eps.gin): replay warm-up and capacity
    learning_starts_per_task: ClassVar[int] = 1_600
    buffer_size_per_task: ClassVar[int] = 100_000
    freezable: ClassVar[tuple[str, ...]] = ("q_net",)
    # BRC's categorical policy and Q-networks take the place of DQN's (same roles, a distribution per action)
    policy: BRCDQNPolicy  # type: ignore[assignment]
    q_net: CategoricalQNetwork  # type: ignore[assignment]
    q_net_target: CategoricalQNetwork  # type: ignore[assignment]
    max_grad_norm: float | None  # type: ignore[assignment]  # None: no clipping (BRCDQN's own train())

    def __init__(
        self,
        policy: str | type[BRCDQNPolicy],
        env: GymEnv | str,
        learning_rate: float | Schedule = 1e-4,
        buffer_size: int | None = None,
        learning_starts: int | None = None,
        batch_size: int | None = None,
        tau: float = 1.0,
        gamma: float = 0.99,
        train_freq: int | tuple[int, str] = 1,
        gradient_steps: int = 1,
        replay_buffer_class: type[ReplayBuffer] | None = None,
        replay_buffer_kwargs: dict[str, Any] | None = None,
        n_steps: int = 10,
        target_update_interval: int | None = None,
        exploration_initial_eps: float = 1.0,
        exploration_final_eps: float = 0.01,
        exploration_decay_steps: int = 5_000,
        eval_exploration_rate: float = 0.001,
        augment: bool | None = None,
        augment_pad: int = 4,
        max_grad_norm: float | None = 10.0,
        normalize_rewards: bool | ReturnNormalization = True,
        compile_update: bool = False,
        stats_window_size: int = 100,
        tensorboard_log: str | None = None,
        policy_kwargs: dict[str, Any] | None = None,
        verbose: int = 0,
        seed: int | None = None,
        device: th.device | str = "auto",
        _init_setup_model: bool = True,
    ):
        env, policy = self._checked_env_and_policy(policy, env, verbose, _check_spaces)
        num_tasks = num_tasks_of(env)
        if n_steps < 1 or exploration_decay_steps < 1 or augment_pad < 0:
            raise ValueError(
                f"n_steps and exploration_decay_steps must be >= 1 and augment_pad >= 0, got {n_steps}, "
                f"{exploration_decay_steps}, {augment_pad}"
            )
        super().__init__(
            policy,  # type: ignore[arg-type]  # a BRCDQNPolicy in DQNPolicy's place
            env,
            learning_rate=learning_rate,
            buffer_size=self.buffer_size_per_task * num_tasks if buffer_size is None else buffer_size,
            learning_starts=self.learning_starts_per_task * num_tasks if learning_starts is None else learning_starts,
            batch_size=BATCH_SIZE_PER_TASK * num_tasks if batch_size is None else batch_size,
            tau=tau,
            gamma=gamma,
            train_freq=train_freq,
            gradient_steps=gradient_steps,
            replay_buffer_class=replay_buffer_class,
            replay_buffer_kwargs=replay_buffer_kwargs,
            n_steps=n_steps,
            target_update_interval=num_tasks if target_update_interval is None else target_update_interval,
            exploration_initial_eps=exploration_initial_eps,
            exploration_final_eps=exploration_final_eps,
            max_grad_norm=max_grad_norm,  # type: ignore[arg-type]  # None: no clipping (BRCDQN's own train())
            stats_window_size=stats_window_size,
            tensorboard_log=tensorboard_log,
            policy_kwargs=self._task_policy_kwargs(policy_kwargs, env),
            verbose=verbose,
            seed=seed,
            device=device,
            _init_setup_model=False,
        )
        check_hyperparameters(self)
        self.exploration_decay_steps = exploration_decay_steps
        self.eval_exploration_rate = eval_exploration_rate
        self.augment, self.augment_pad = augment, augment_pad
        if not isinstance(compile_update, bool):
            raise ValueError(f"compile_update must be True or False, got {compile_update!r}")
        self.compile_update = compile_update
        self._target_is_online = False  # the target network equals the online one (set after a hard copy)
        self._init_task_state(env, normalize_rewards, new_model=_init_setup_model)
        if self.return_normalizer is not None and self.return_normalizer.entropy_term != "fixed":
            raise ValueError(
                f"BRCDQN has no policy entropy: the return normaliser's entropy_term must be 'fixed' (its entropy term "
                f"is then 0), got {self.return_normalizer.entropy_term!r}."
            )
        if _init_setup_model:
            self._setup_model()

    @property
    def num_tasks(self) -> int:
        """Number of tasks the model learns (1 for a plain env)."""
        return self.policy.num_tasks

    def _setup_model(self) -> None:
        n_steps = self.n_steps
        if self.replay_buffer_class is None:
            self.replay_buffer_class = CompactNStepReplayBuffer
            self.replay_buffer_kwargs = {"n_steps": n_steps, "gamma": self.gamma, **self.replay_buffer_kwargs}
        if "n_steps" in self.replay_buffer_kwargs:
            # The buffer is given n_steps (above, or by the user): SB3's warning that n_steps is ignored with a buffer
            # class it did not choose would be wrong. A user's class without them keeps the warning.
            self.n_steps = 1
        super()._setup_model()
        self.n_steps = n_steps
        shape = observation_part(self.observation_space).shape or ()
        if self.augment is None:
            self.augment = len(shape) == 3
        elif self.augment and len(shape) != 3:
            raise ValueError(
                f"augment=True shifts image observations (channels, height, width); this env's observations have shape "
                f"{shape}. Leave augment=None (on for images only) or set False."
            )
        # The compiled update, built where the model runs (also after load())
        self._functional_update = FunctionalUpdate(self) if self.compile_update else None
        self._finish_setup_model()

    def _excluded_save_params(self) -> list[str]:
        return [*super()._excluded_save_params(), "_functional_update"]

    def reward_scale(self) -> th.Tensor:
        """Per-task reward multiplier ``v_max / G_i`` (no entropy term without a temperature); ones when off."""
        if self.return_normalizer is None:
            return th.ones(self.num_tasks, device=self.device)
        return self.return_normalizer.reward_scale(th.zeros((), device=self.device), 0.0, self.policy.v_max)

    def _target_distribution(self, replay_data: Any, next_obs: PyTorchObs, rewards: th.Tensor) -> th.Tensor:
        """Projected n-step double-Q target ``R_n + gamma^k * (1 - terminated) * z`` of each transition."""
        next_task_ids = self.task_ids(next_obs)
        rows = th.arange(len(next_task_ids), device=next_task_ids.device)
        # Double Q: the online network picks the next action among the task's legal ones, the target rates it.
        # Right after a hard copy (DrQ(eps) copies every step) both networks are equal: one forward pass does both
        target_logits = at_least_fp32(self.q_net_target(next_obs))
        if self._target_is_online:
            next_q = categorical_mean(target_logits, self.q_net.support)
        else:
            next_q = self.q_net.q_values(next_obs)
        next_actions = next_q.masked_fill(~self.policy.action_masks[next_task_ids], -th.inf).argmax(dim=1)
        next_probs = th.softmax(target_logits[rows, next_actions], dim=-1)
        # n-step buffers give each transition its gamma^k; 1-step buffers (n_steps=1, SB3's own) give none
        discounts = replay_data.discounts if replay_data.discounts is not None else self.gamma
        target_atoms = rewards + discounts * (1.0 - replay_data.dones) * self.q_net.support
        return categorical_projection(next_probs, target_atoms, self.q_net.support)

    def _q_loss(
        self, replay_data: Any, reward_scale: th.Tensor, shifts: tuple[th.Tensor, th.Tensor] | None
    ) -> tuple[th.Tensor, th.Tensor]:
        """Categorical cross-entropy of the taken actions' logits against the projected target (BRC's critic loss
        with DrQ(eps)'s n-step double-Q target), the observations shifted by ``shifts`` (:meth:`_augmentation_shifts`).
        Returns the loss and those logits (for logging)."""
        obs, next_obs = replay_data.observations, replay_data.next_observations
        task_ids = self.task_ids(obs)
        if shifts is not None:
            obs = map_observation_part(obs, functools.partial(shift, offsets=shifts[0]))
            next_obs = map_observation_part(next_obs, functools.partial(shift, offsets=shifts[1]))
        with th.no_grad():
            rewards = replay_data.rewards * reward_scale[task_ids].unsqueeze(-1)
            target_probs = self._target_distribution(replay_data, next_obs, rewards)
        rows = th.arange(len(task_ids), device=task_ids.device)
        logits = self.q_net(obs)[rows, replay_data.actions.long().reshape(-1)]
        return categorical_cross_entropy(logits.unsqueeze(1), target_probs), logits

    def _augmentation_shifts(self, batch_size: int) -> tuple[th.Tensor, th.Tensor] | None:
        """DrQ's random shifts of a batch's observations and next observations (``None`` without augmentation)."""
        if not self.augment:
            return None
        observations = shift_offsets(batch_size, self.augment_pad, self.device)
        return observations, shift_offsets(batch_size, self.augment_pad, self.device)

    def _gradient_update(
        self, replay_data: Any, reward_scale: th.Tensor, shifts: tuple[th.Tensor, th.Tensor] | None
    ) -> th.Tensor:
        """One gradient step of the Q-network (eager); returns the loss."""
        loss, _ = self._q_loss(replay_data, reward_scale, shifts)
        self.policy.optimizer.zero_grad()
        loss.backward()
        if self.max_grad_norm is not None:
            th.nn.utils.clip_grad_norm_(self.policy.q_net.parameters(), self.max_grad_norm)
        self.policy.optimizer.step()
        return loss.detach()

    def train(self, gradient_steps: int, batch_size: int = 32) -> None:
        self.policy.set_training_mode(True)
        self._update_learning_rate(self.policy.optimizer)
        reward_scale = self.reward_scale()
        update = self._functional_update or self._gradient_update
        losses = []
        for _ in range(gradient_steps):
            assert self.replay_buffer is not None  # made by _setup_model
            replay_data = self.replay_buffer.sample(batch_size, env=self._vec_normalize_env)
            losses.append(update(replay_data, reward_scale, self._augmentation_shifts(batch_size)))
            self._target_is_online = False
        self._n_updates += gradient_steps
        loss_values = th.stack(losses).cpu()  # one host sync per call
        if not th.isfinite(loss_values).all():
            raise FloatingPointError(
                f"Non-finite Q loss at gradient update {self._n_updates} (num_timesteps={self.num_timesteps}); reward "
                f"scales {dict(zip(self.task_names, reward_scale.tolist(), strict=True))}. Training stopped: lower the "
                "learning rate or check the env's rewards and observations, and resume from the last checkpoint."
            )
        self.logger.record("train/n_updates", self._n_updates, exclude="tensorboard")
        self.logger.record("train/loss", float(loss_values.mean()))
        self._record_reward_scale(reward_scale)

    def _on_step(self) -> None:
        # BRCDQN owns its target update (instead of DQN._on_step's), so it knows when the target is a fresh copy
        self._n_calls += 1
        if self._n_calls % max(self.target_update_interval // self.n_envs, 1) == 0:
            with th.no_grad():
                # One foreach kernel per update instead of SB3's per-tensor polyak_update: DrQ(eps) copies every step,
                # where a kernel per tensor was a large share of a small update (RESULTS.md: BRCDQN update throughput)
                targets: list[th.Tensor] = list(self.q_net_target.parameters())
                online: list[th.Tensor] = list(self.q_net.parameters())
                if self.tau == 1.0:
                    th._foreach_copy_(targets, online)
                else:
                    th._foreach_lerp_(targets, online, self.tau)
            polyak_update(self.batch_norm_stats, self.batch_norm_stats_target, 1.0)
            self._target_is_online = self.tau == 1.0
        # DrQ(eps)/dopamine schedule in steps per task: initial epsilon through the warm-up, then a linear decay
        steps, warmup = self.num_timesteps / self.n_envs, self.learning_starts / self.n_envs
        remaining = np.clip((self.exploration_decay_steps + warmup - steps) / self.exploration_decay_steps, 0.0, 1.0)
        self.exploration_rate = (
            self.exploration_final_eps + (self.exploration_initial_eps - self.exploration_final_eps) * remaining
        )
        self.logger.record("rollout/exploration_rate", self.exploration_rate)

    def set_parameters(self, *args: Any, **kwargs: Any) -> None:
        super().set_parameters(*args, **kwargs)
        self._target_is_online = False  # the loaded target may differ from the loaded online network

    def predict(
        self,
        observation: np.ndarray | dict[str, np.ndarray],
        state: tuple[np.ndarray, ...] | None = None,
        episode_start: np.ndarray | None = None,
        deterministic: bool = False,
    ) -> tuple[np.ndarray, tuple[np.ndarray, ...] | None]:
        """Greedy over the legal actions of each observation's task with ``deterministic=True`` (as in SB3's DQN),
        epsilon-greedy with the training epsilon otherwise. The Atari evaluation protocol's epsilon is
        :meth:`evaluation_predict`'s."""
        return self._epsilon_greedy(observation, 0.0 if deterministic else self.exploration_rate), state

    def evaluation_predict(self, observation: np.ndarray | dict[str, np.ndarray]) -> np.ndarray:
        """Epsilon-greedy with ``eval_exploration_rate`` (DrQ(eps)'s evaluation epsilon 0.001): what
        ``evaluate_tasks``, the evaluation callback and the harness evaluate."""
        return self._epsilon_greedy(observation, self.eval_exploration_rate)

    def _epsilon_greedy(self, observation: np.ndarray | dict[str, np.ndarray], epsilon: float) -> np.ndarray:
        self.policy.set_training_mode(False)
        obs_tensor, vectorized = self.policy.obs_to_tensor(observation)
        with th.no_grad():
            actions = self.policy.act(obs_tensor, epsilon).cpu().numpy()
        return actions if vectorized else actions.squeeze(0)

    def _sample_action(
        self, learning_starts: int, action_noise: ActionNoise | None = None, n_envs: int = 1
    ) -> tuple[np.ndarray, np.ndarray]:
        # The warm-up's random actions are uniform over each task's legal actions, not over the union space
        assert self._last_obs is not None  # set by learn()'s reset
        if self.num_timesteps < learning_starts:
            obs_tensor, _ = self.policy.obs_to_tensor(self._last_obs)
            with th.no_grad():
                action = self.policy.act(obs_tensor, epsilon=1.0).cpu().numpy()
        else:
            action, _ = self.predict(self._last_obs, deterministic=False)
        return action, action

    # Hooks of the tools (diagnostics, transfer) ------------------------------------------------------------------

    @property
    def value_network(self) -> CategoricalQNetwork:
        return self.q_net

    def value_loss(self, replay_data: Any) -> th.Tensor:
        return self._q_loss(replay_data, self.reward_scale(), self._augmentation_shifts(len(replay_data.rewards)))[0]

    def policy_entropy(self, observations: PyTorchObs) -> None:
        return None  # epsilon-greedy: no entropy estimate to report

    def _grow_tasks(self, new: TaskLayout, new_rows: str) -> None:
        grow_task_embeddings(self.q_net, self.q_net_target, new.num_tasks, new_rows)
        assert new.legal_actions is not None  # discrete tasks (add_tasks checks the layouts are alike)
        self.policy.add_tasks([list(legal) for legal in new.legal_actions])
        self.policy_kwargs.update(num_tasks=self.num_tasks, legal_actions=self.policy.legal_actions)
        if self.target_update_interval == self.n_envs:  # the default copy after every env step of every task
            self.target_update_interval = new.num_tasks
        # The embedding parameter was replaced: a new optimiser (its moments restart)
        self.policy.optimizer = self.policy.optimizer_class(
            self.q_net.parameters(), lr=self.lr_schedule(1), **self.policy.optimizer_kwargs
        )  # type: ignore[call-arg]  # torch types Optimizer(params, defaults); its subclasses take lr
        self._target_is_online = False


def _check_spaces(env: GymEnv) -> None:
    if not isinstance(env.action_space, spaces.Discrete):
        raise TypeError(f"BRCDQN needs a Discrete action space, got {env.action_space}. For continuous actions use BRCSAC.")
    observation_space = env.observation_space
    if not isinstance(observation_part(observation_space), spaces.Box | spaces.Dict):
        raise TypeError(f"BRCDQN needs Box observations (images or vectors) or a Dict of them, got {observation_space}.")
