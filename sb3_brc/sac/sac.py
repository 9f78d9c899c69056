"""BRCSAC: SAC with a BroNet actor, a categorical BroNet critic ensemble, task embeddings and return normalisation."""

from typing import Any, ClassVar

import numpy as np
import torch as th
from gymnasium import spaces
from stable_baselines3 import SAC
from stable_baselines3.common.buffers import ReplayBuffer
from stable_baselines3.common.noise import ActionNoise
from stable_baselines3.common.policies import BasePolicy
from stable_baselines3.common.type_aliases import GymEnv, Schedule

from sb3_brc.common.buffers import TrimmedDictReplayBuffer, TrimmedReplayBuffer
from sb3_brc.common.distributional import at_least_fp32, categorical_cross_entropy, categorical_projection, expected_value
from sb3_brc.common.hyperparameters import check_hyperparameters
from sb3_brc.common.multitask import MultiTaskAlgorithm
from sb3_brc.common.normalizer import ReturnNormalization
from sb3_brc.common.policies import grow_task_embeddings
from sb3_brc.common.task_layout import TaskLayout, num_tasks_of
from sb3_brc.common.utils import no_weight_grads, remaining_updates, select_rows
from sb3_brc.sac.policies import BRCPolicy, BroNetActor, CategoricalCritic, CnnPolicy, MlpPolicy, MultiInputPolicy
from sb3_brc.sac.update_runner import UpdateRunner

# The reference's batch (train.py), single / multi-task; its per-task warm-up and replay capacity are class variables
BATCH_SIZE_SINGLE_TASK = 256
BATCH_SIZE_MULTI_TASK = 1024


def _check_spaces(env: GymEnv) -> None:
    action_space, observation_space = env.action_space, env.observation_space
    if not isinstance(action_space, spaces.Box):
        raise TypeError(
            f"BRCSAC needs a continuous Box action space, got {action_space}. "
            "For discrete actions use a DQN-style algorithm, or wrap the env to expose a Box action space."
        )
    if not (np.all(np.isfinite(action_space.low)) and np.all(np.isfinite(action_space.high))):
        raise ValueError(
            f"BRCSAC squashes actions with tanh and needs a bounded Box action space, got {action_space}. "
            "Wrap the env with gymnasium.wrappers.ClipAction / RescaleAction to finite bounds."
        )
    if np.any(action_space.high <= action_space.low):
        raise ValueError(
            f"BRCSAC needs action bounds with low < high in every dimension, got {action_space}: no action can vary "
            "where they are equal. Fix the env's action_space."
        )
    if not isinstance(observation_space, spaces.Box | spaces.Dict):
        raise TypeError(
            f"BRCSAC needs a Box (MlpPolicy) or Dict (MultiInputPolicy) observation space, got {observation_space}."
        )


class BRCSAC(MultiTaskAlgorithm, SAC):
    """BRC (Bigger, Regularized, Categorical; Nauman et al. 2025, arXiv 2505.23150) on top of SB3's SAC.

    Differences from SAC, all following the reference implementation (``naumix/BiggerRegularizedCategorical``):
    BroNet actor and critic, a categorical critic ensemble trained with cross-entropy against the projected
    soft target of the *mean* target distribution, AdamW, the temperature loss ``alpha * (H - H_target)``
    with Adam(beta1=0.5), target entropy ``-|A|/2``, initial alpha 0.1, 2 gradient steps per env step, and
    per-task return normalisation of the rewards at sampling time. With a ``MultiTaskVecEnv`` it learns
    one task embedding per task, owned by the critic.

    Defaults that depend on the task count (``num_tasks`` from the env, 1 for a plain env) are per task, as in
    the reference: ``learning_starts = 5000 * num_tasks``, ``buffer_size = 1e6 * num_tasks``, and
    ``batch_size`` 256 single-task, 1024 multi-task. ``total_timesteps`` counts transitions over all tasks.

    :param policy: The policy model to use (MlpPolicy, CnnPolicy, MultiInputPolicy, or a BRCPolicy subclass)
    :param env: The environment to learn from (if registered in Gym, can be str)
    :param learning_rate: Learning rate of actor, critic and temperature (can be a function of progress)
    :param buffer_size: Size of the replay buffer (``None``: 1M transitions per task)
    :param learning_starts: Transitions of uniform random actions before learning (``None``: 5000 per task)
    :param batch_size: Minibatch size of each gradient update (``None``: 256, or 1024 with several tasks)
    :param tau: Polyak coefficient, applied after every critic update
    :param gamma: Discount factor
    :param train_freq: Update the model every ``train_freq`` steps (int or tuple with unit "step"/"episode")
    :param gradient_steps: Gradient steps after each rollout (BRC: 2); -1 for as many as env steps
    :param action_noise: Action noise type (None in BRC)
    :param replay_buffer_class: Replay buffer class to use (``None``: :class:`~sb3_brc.common.buffers.TrimmedReplayBuffer`,
        or its ``Dict`` version, SB3's buffers saved without their empty slots; SB3's choice with ``n_steps > 1``)
    :param replay_buffer_kwargs: Keyword arguments for the replay buffer
    :param optimize_memory_usage: SB3's memory-efficient replay buffer variant
    :param n_steps: Number of steps for n-step returns (BRC: 1)
    :param ent_coef: Entropy coefficient; ``"auto_0.1"`` learns it from 0.1 (BRC)
    :param target_update_interval: Update the target network every ``target_update_interval`` gradient steps
    :param target_entropy: Target entropy when learning ``ent_coef`` (``"auto"``: ``-|A|/2``, BRC)
    :param normalize_rewards: BRC return normalisation: ``True`` (default), ``False`` (raw rewards), or its options
        as a :class:`~sb3_brc.common.normalizer.ReturnNormalization`
    :param mixed_precision: Run the forward passes of the update under bf16 autocast where the device multiplies
        bf16 in hardware (CUDA compute capability 8.0+, CPUs with AVX512-BF16 or AMX); elsewhere it warns and runs
        float32, since emulated bf16 is many times slower. Losses, the target projection and the optimiser state
        stay float32
    :param compile_update: Compile the update (the same maths): ``True`` compiles each gradient update (critic,
        target, actor, temperature) into one graph (:class:`~sb3_brc.sac.functional_update.FunctionalUpdate`), or
        where that cannot run it (bf16, another optimiser, BatchNorm) the losses alone; ``False`` runs it eagerly;
        ``"auto"`` compiles the whole update on a CPU for a ``learn()`` call of at least
        :data:`~sb3_brc.sac.functional_update.COMPILE_MIN_UPDATES` updates, where the compile time is paid back
    :param cuda_graph: Capture each gradient update (critic, Polyak, actor and temperature steps) in a CUDA graph
        and replay it: the same update in a few launches instead of hundreds, for GPUs where small networks wait on
        kernel launches. The first 3 updates run eagerly, and the optimisers become ``capturable``. On a device other
        than CUDA it warns and runs eagerly. Not together with ``compile_update``
    :param use_sde: Not supported by BRC policies
    :param sde_sample_freq: Unused (gSDE)
    :param use_sde_at_warmup: Unused (gSDE)
    :param stats_window_size: Window size for the rollout logging
    :param tensorboard_log: The log location for tensorboard (if None, no logging)
    :param policy_kwargs: Additional arguments for the policy (``net_arch``, ``n_atoms``, ``v_min``, ``v_max``, ...)
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
    #: The reference's per-task defaults (train.py): warm-up steps and replay capacity
    learning_starts_per_task: ClassVar[int] = 5_000
    buffer_size_per_task: ClassVar[int] = 1_000_000
    freezable: ClassVar[tuple[str, ...]] = ("actor", "critic")
    policy: BRCPolicy
    actor: BroNetActor
    # BRC's categorical critic takes the place of SAC's ContinuousCritic (same inputs, a distribution per head)
    critic: CategoricalCritic  # type: ignore[assignment]
    critic_target: CategoricalCritic  # type: ignore[assignment]

    def __init__(
        self,
        policy: str | type[BRCPolicy],
        env: GymEnv | str,
        learning_rate: float | Schedule = 3e-4,
        buffer_size: int | None = None,
        learning_starts: int | None = None,
        batch_size: int | None = None,
        tau: float = 0.005,
        gamma: float = 0.99,
        train_freq: int | tuple[int, str] = 1,
        gradient_steps: int = 2,
        action_noise: ActionNoise | None = None,
        replay_buffer_class: type[ReplayBuffer] | None = None,
        replay_buffer_kwargs: dict[str, Any] | None = None,
        optimize_memory_usage: bool = False,
        n_steps: int = 1,
        ent_coef: str | float = "auto_0.1",
        target_update_interval: int = 1,
        target_entropy: str | float = "auto",
        normalize_rewards: bool | ReturnNormalization = True,
        mixed_precision: bool = False,
        compile_update: bool | str = "auto",
        cuda_graph: bool = False,
        use_sde: bool = False,
        sde_sample_freq: int = -1,
        use_sde_at_warmup: bool = False,
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
        super().__init__(
            policy,
            env,
            learning_rate=learning_rate,
            buffer_size=self.buffer_size_per_task * num_tasks if buffer_size is None else buffer_size,
            learning_starts=self.learning_starts_per_task * num_tasks if learning_starts is None else learning_starts,
            batch_size=(BATCH_SIZE_MULTI_TASK if num_tasks > 1 else BATCH_SIZE_SINGLE_TASK)
            if batch_size is None
            else batch_size,
            tau=tau,
            gamma=gamma,
            train_freq=train_freq,
            gradient_steps=gradient_steps,
            action_noise=action_noise,
            replay_buffer_class=replay_buffer_class,
            replay_buffer_kwargs=replay_buffer_kwargs,
            optimize_memory_usage=optimize_memory_usage,
            n_steps=n_steps,
            ent_coef=ent_coef,
            target_update_interval=target_update_interval,
            target_entropy=target_entropy,
            use_sde=use_sde,
            sde_sample_freq=sde_sample_freq,
            use_sde_at_warmup=use_sde_at_warmup,
            stats_window_size=stats_window_size,
            tensorboard_log=tensorboard_log,
            policy_kwargs=self._task_policy_kwargs(policy_kwargs, env),
            verbose=verbose,
            seed=seed,
            device=device,
            _init_setup_model=False,
        )
        check_hyperparameters(self)
        self.mixed_precision = mixed_precision
        if compile_update not in (True, False, "auto"):
            raise ValueError(f"compile_update must be True, False or 'auto', got {compile_update!r}")
        self.compile_update = compile_update
        self.cuda_graph = cuda_graph
        self._init_task_state(env, normalize_rewards, new_model=_init_setup_model)
        if _init_setup_model:
            self._setup_model()

    @property
    def num_tasks(self) -> int:
        """Number of tasks the model learns (1 for a plain env)."""
        return self.policy.num_tasks

    def _excluded_save_params(self) -> list[str]:
        return [*super()._excluded_save_params(), "_updates"]  # rebuilt where the model runs

    def _setup_model(self) -> None:
        if self.target_entropy == "auto":
            # BRC: -|A|/2 (|A| = padded action size in multi-task runs), not SAC's -|A|
            self.target_entropy = -float(np.prod(self.action_space.shape or ())) / 2.0
        if self.replay_buffer_class is None and self.n_steps == 1:
            # SB3's buffers, saved (checkpoints, save_replay_buffer) without the empty slots of a buffer not yet full
            dict_obs = isinstance(self.observation_space, spaces.Dict)
            self.replay_buffer_class = TrimmedDictReplayBuffer if dict_obs else TrimmedReplayBuffer
        super()._setup_model()
        if self.log_ent_coef is not None:
            # BRC optimises the temperature with Adam(beta1=0.5)
            self.ent_coef_optimizer = th.optim.Adam([self.log_ent_coef], lr=self.lr_schedule(1), betas=(0.5, 0.999))
        # How the updates run (eager, compiled, captured; bf16): decided where the model runs, also after load()
        self._updates = UpdateRunner(self)
        self._finish_setup_model()

    def _setup_learn(self, total_timesteps: int, *args: Any, **kwargs: Any) -> Any:
        total_timesteps, callback = super()._setup_learn(total_timesteps, *args, **kwargs)
        self._updates.start_learning(remaining_updates(self, total_timesteps))
        return total_timesteps, callback

    def _current_ent_coef(self) -> th.Tensor:
        return th.exp(self.log_ent_coef.detach()) if self.log_ent_coef is not None else self.ent_coef_tensor

    def reward_scale(self) -> th.Tensor:
        """Current per-task reward multiplier ``v_max / (G_i + lambda)`` (ones when normalisation is off)."""
        ent_coef = self._current_ent_coef()
        if self.return_normalizer is None:
            return th.ones(self.num_tasks, device=ent_coef.device)
        return self.return_normalizer.reward_scale(ent_coef, float(self.target_entropy), self.policy.v_max)

    def _critic_loss(
        self, replay_data: Any, rewards: th.Tensor, ent_coef: th.Tensor, next_noise: th.Tensor | None = None
    ) -> tuple[th.Tensor, th.Tensor]:
        """BRC critic loss: cross-entropy of every critic head against the projected soft target of the mean target
        distribution (the reference's ``update_critic``). Returns the loss and the online logits (for logging).
        ``next_noise``: the noise that draws the next actions (fresh when None)."""
        with th.no_grad():
            next_actions, next_log_prob = self.actor.action_log_prob(replay_data.next_observations, next_noise)
            # Mean (not min) of the target heads' probabilities
            next_logits = at_least_fp32(self.critic_target(replay_data.next_observations, next_actions))
            next_probs = th.softmax(next_logits, dim=-1).mean(1)
            discounts = replay_data.discounts if replay_data.discounts is not None else self.gamma
            masks = 1.0 - replay_data.dones  # dones exclude time-limit truncations: those bootstrap
            # Soft target support: r + gamma * mask * (z - alpha * log pi(a'|s')), projected back onto z
            next_log_prob = at_least_fp32(next_log_prob).unsqueeze(-1)
            target_atoms = rewards + discounts * masks * (self.critic.support - ent_coef * next_log_prob)
            target_probs = categorical_projection(next_probs, target_atoms, self.critic.support)
        logits = self.critic(replay_data.observations, replay_data.actions)
        return categorical_cross_entropy(logits, target_probs), logits

    def _actor_loss(
        self, observations: th.Tensor | dict[str, th.Tensor], ent_coef: th.Tensor, noise: th.Tensor | None = None
    ) -> tuple[th.Tensor, th.Tensor]:
        """``mean(alpha * log pi(a|s) - Q(s, a))`` with Q the expected value under the freshly updated critic.
        Returns the loss and ``log pi(a|s)`` (for the temperature). ``noise``: the noise that draws a (fresh when None)."""
        actions_pi, log_prob = self.actor.action_log_prob(observations, noise)
        q_value = expected_value(self.critic(observations, actions_pi), self.critic.support)
        return (ent_coef * log_prob - q_value).mean(), log_prob

    def _gradient_update(
        self, replay_data: Any, rewards: th.Tensor, polyak: bool, actor_trainable: bool
    ) -> tuple[dict[str, th.Tensor], th.Tensor]:
        """One gradient update of critic, target critic (``polyak``), actor (``actor_trainable``) and temperature on one
        batch. Returns the logged statistics (0-d tensors) and the per-sample policy entropy ``-log pi(a|s)``.

        It never synchronises with the host, so that it can run captured in a CUDA graph (``cuda_graph=True``)."""
        autocast = self._updates.autocast()
        ent_coef = self._current_ent_coef()
        with autocast:
            critic_loss, logits = self._updates.critic_loss(replay_data, rewards, ent_coef)
        self.critic.optimizer.zero_grad()
        critic_loss.backward()
        self.critic.optimizer.step()
        if polyak:
            # Polyak right after the critic step, as in the reference (the task embedding included)
            with th.no_grad():
                th._foreach_lerp_(list(self.critic_target.parameters()), list(self.critic.parameters()), self.tau)

        # The actor loss must not train the critic: no critic weight gradients are computed at all. Switched off around
        # the (possibly compiled) loss, not inside it: the switch would split torch.compile's graph
        with autocast, th.set_grad_enabled(actor_trainable), no_weight_grads(self.critic):
            actor_loss, log_prob = self._updates.actor_loss(replay_data.observations, ent_coef)
        if actor_trainable:  # frozen after add_tasks(freeze=["actor"]): log_prob still drives alpha
            self.actor.optimizer.zero_grad()
            actor_loss.backward()
            self.actor.optimizer.step()

        if polyak and self.batch_norm_stats:
            # As SAC: BatchNorm running statistics (a features extractor's) copied, after the actor's critic pass
            # has moved them as SAC's has when it updates its target (the reference has no BatchNorm)
            th._foreach_copy_(self.batch_norm_stats_target, self.batch_norm_stats)

        entropy = -log_prob.detach()
        stats = dict(critic_loss=critic_loss.detach(), actor_loss=actor_loss.detach(), ent_coef=ent_coef.reshape(()))
        if self.ent_coef_optimizer is not None and self.log_ent_coef is not None:
            ent_coef_loss = self._temperature_loss(self.log_ent_coef, entropy)
            self.ent_coef_optimizer.zero_grad()
            ent_coef_loss.backward()
            self.ent_coef_optimizer.step()
            stats["ent_coef_loss"] = ent_coef_loss.detach()
        with th.no_grad():
            stats.update(self._critic_statistics(logits.detach()))
        return stats, entropy

    def _temperature_loss(self, log_ent_coef: th.Tensor, entropy: th.Tensor) -> th.Tensor:
        """BRC temperature loss ``alpha * (H - H_target)``; its gradient wrt log(alpha) is ``alpha * (H - H_target)``."""
        target = float(self.target_entropy)  # SAC's "auto" was resolved in _setup_model
        return (th.exp(log_ent_coef) * (entropy.mean() - target)).sum()

    def _critic_statistics(self, logits: th.Tensor) -> dict[str, th.Tensor]:
        """The logged statistics of the online critic's logits: mean Q-value and mean entropy of its distributions."""
        probs = th.softmax(logits, dim=-1)
        return dict(
            q_mean=expected_value(logits, self.critic.support).mean(),
            critic_entropy=-(probs * th.log(probs.clamp(min=1e-12))).sum(-1).mean(),
        )

    def train(self, gradient_steps: int, batch_size: int = 64) -> None:
        self.policy.set_training_mode(True)
        optimizers = [self.actor.optimizer, self.critic.optimizer]
        if self.ent_coef_optimizer is not None:
            optimizers.append(self.ent_coef_optimizer)
        learning_rate = self.lr_schedule(self._current_progress_remaining)
        self.logger.record("train/learning_rate", learning_rate)
        self._updates.prepare(optimizers, learning_rate)

        # One replay sample for all gradient steps: the reference also draws every batch of an env step
        # before its first update, and uses one reward-normalisation denominator for all of them
        assert self.replay_buffer is not None  # made by _setup_model
        all_data = self.replay_buffer.sample(batch_size * gradient_steps, env=self._vec_normalize_env)
        all_task_ids = self.task_ids(all_data.observations)
        reward_scale = self.reward_scale()
        all_rewards = all_data.rewards * reward_scale[all_task_ids].unsqueeze(-1)

        actor_trainable = any(p.requires_grad for p in self.actor.parameters())
        stats: dict[str, list[th.Tensor]] = {}
        for step in range(gradient_steps):
            rows = slice(step * batch_size, (step + 1) * batch_size)
            polyak = (self._n_updates + step) % self.target_update_interval == 0
            update = self._updates.update(batch_size, polyak)
            step_stats, entropy = update(select_rows(all_data, rows), all_rewards[rows], polyak, actor_trainable)
            if self.return_normalizer is not None:
                self.return_normalizer.update_entropy(all_task_ids[rows], entropy)
            for key, value in step_stats.items():
                stats.setdefault(key, []).append(value)

        self._n_updates += gradient_steps
        # One host sync, after the updates, for the logged values and the numerical health check
        keys = list(stats)
        per_step = th.stack([th.stack(stats[key]) for key in keys])
        param_norm = self._updates.parameter_norm()
        per_step_cpu, param_norm_cpu = per_step.cpu(), param_norm.cpu()
        if not (th.isfinite(per_step_cpu).all() and th.isfinite(param_norm_cpu)):
            self._raise_non_finite(keys, per_step_cpu, all_task_ids, reward_scale, batch_size)
        means = dict(zip(keys, per_step_cpu.mean(1).tolist(), strict=True))
        self.logger.record("train/n_updates", self._n_updates, exclude="tensorboard")
        for key, value in means.items():
            self.logger.record(f"train/{key}", value)
        self._record_reward_scale(reward_scale)

    def _raise_non_finite(
        self, keys: list[str], per_step: th.Tensor, task_ids: th.Tensor, reward_scale: th.Tensor, batch_size: int
    ) -> None:
        """Name the first non-finite quantity, the update and the tasks involved, instead of training on NaN."""
        first_update = self._n_updates - per_step.shape[1] + 1
        bad = (~th.isfinite(per_step)).nonzero()
        if len(bad):
            what, step = keys[int(bad[0, 0])], int(bad[0, 1])  # a logged quantity, named by its log key
        else:
            step = per_step.shape[1] - 1
            what = "parameter " + next(n for n, p in self.policy.named_parameters() if not th.isfinite(p).all())
        tasks = sorted(set(task_ids[step * batch_size : (step + 1) * batch_size].tolist()))
        scales = {self.task_names[t]: round(float(reward_scale[t]), 6) for t in tasks}
        raise FloatingPointError(
            f"Non-finite {what} at gradient update {first_update + step} (num_timesteps={self.num_timesteps}); "
            f"tasks in that batch: {[self.task_names[t] for t in tasks]}, their reward scales: {scales}. "
            "Training stopped: the parameters from that update on are unusable, resume from the last checkpoint. "
            "Lower the learning rate, check the env's rewards and observations, or turn off mixed_precision."
        )

    def set_parameters(self, *args: Any, **kwargs: Any) -> None:
        super().set_parameters(*args, **kwargs)
        self._updates.forget_tensors()  # the loaded optimiser state is in new tensors, which no captured update reads

    # Hooks of the tools (diagnostics, transfer) ------------------------------------------------------------------

    @property
    def value_network(self) -> CategoricalCritic:
        return self.critic

    def value_loss(self, replay_data: Any) -> th.Tensor:
        rewards = replay_data.rewards * self.reward_scale()[self.task_ids(replay_data.observations)].unsqueeze(-1)
        return self._critic_loss(replay_data, rewards, self._current_ent_coef())[0]

    def policy_entropy(self, observations: th.Tensor | dict[str, th.Tensor]) -> th.Tensor:
        return -self.actor.action_log_prob(observations)[1].mean()

    def _grow_tasks(self, new: TaskLayout, new_rows: str) -> None:
        grow_task_embeddings(self.critic, self.critic_target, new.num_tasks, new_rows)
        self.policy.num_tasks = self.actor.num_tasks = self.critic.num_tasks
        self.policy_kwargs["num_tasks"] = self.critic.num_tasks
        # The embedding parameter was replaced: a new critic optimiser (its moments restart), and new captured updates
        self._updates.forget_tensors()
        self.critic.optimizer = self.policy.optimizer_class(
            self.critic.parameters(), lr=self.lr_schedule(1), **self.policy.optimizer_kwargs
        )  # type: ignore[call-arg]  # torch types Optimizer(params, defaults); its subclasses take lr
