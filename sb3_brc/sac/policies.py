"""BRC policies: BroNet actor and categorical BroNet critic ensemble with a critic-owned task embedding."""

import copy
import math
from typing import Any, ClassVar

import numpy as np
import torch as th
from gymnasium import spaces
from stable_baselines3.common.distributions import DiagGaussianDistribution, SquashedDiagGaussianDistribution, TanhBijector
from stable_baselines3.common.preprocessing import get_action_dim
from stable_baselines3.common.torch_layers import BaseFeaturesExtractor, CombinedExtractor, FlattenExtractor, NatureCNN
from stable_baselines3.common.type_aliases import PyTorchObs, Schedule
from stable_baselines3.sac.policies import Actor, SACPolicy
from torch import nn
from torch.distributions import Normal
from torch.nn import functional as F

from sb3_brc.common.policies import (
    SIZE_PRESETS,
    TaskConditionedNetwork,
    check_categorical_support,
    optimizer_kwargs_over_defaults,
)
from sb3_brc.common.task_layout import (
    TaskLayout,
    check_task_ids,
    check_task_observation,
    observation_part,
    split_task_observation,
)
from sb3_brc.common.torch_layers import BroNet, TaskEmbedding, orthogonal_init_
from sb3_brc.common.utils import set_training_flags

# The reference squashes the raw log-std with tanh into [-10, 2] (SB3 clips to [-20, 2])
LOG_STD_MIN = -10.0
LOG_STD_MAX = 2.0


class StableSquashedDiagGaussianDistribution(SquashedDiagGaussianDistribution):
    """tanh-squashed Gaussian whose log-prob uses the exact, stable tanh log-det ``2 (log 2 - u - softplus(-2u))``.

    SB3's version uses ``log(1 - tanh(u)^2 + 1e-6)``, which is biased near the action bounds. A sampled action's
    log-prob is evaluated at the standard-normal noise ``eps`` that drew it (``u = mu + sigma * eps``), as the
    reference's distrax ``sample_and_log_prob`` does: rebuilding ``eps`` as ``(u - mu) / sigma`` cancels
    catastrophically when ``sigma << |mu|`` (a log-std near its floor of -10).
    """

    def proba_distribution(self, mean_actions: th.Tensor, log_std: th.Tensor) -> "StableSquashedDiagGaussianDistribution":
        # No argument validation: it costs a host sync per forward pass, and non-finite values are caught by
        # BRCSAC.train() once per call, with the update and tasks named
        self.distribution = Normal(mean_actions, th.ones_like(mean_actions) * log_std.exp(), validate_args=False)
        return self

    def standard_noise(self, mean_actions: th.Tensor) -> th.Tensor:
        """The standard-normal noise ``eps`` of one sample per row (the one place the policy draws randomness)."""
        return th.randn_like(mean_actions)

    def sample(self) -> th.Tensor:
        mean, std = self.distribution.loc, self.distribution.scale
        self.gaussian_actions = mean + std * self.standard_noise(mean)
        return th.tanh(self.gaussian_actions)

    def log_prob(self, actions: th.Tensor, gaussian_actions: th.Tensor | None = None) -> th.Tensor:
        if gaussian_actions is None:
            gaussian_actions = TanhBijector.inverse(actions)
        log_prob = DiagGaussianDistribution.log_prob(self, gaussian_actions)
        return log_prob - tanh_log_det(gaussian_actions)

    def log_prob_from_params(self, mean_actions: th.Tensor, log_std: th.Tensor) -> tuple[th.Tensor, th.Tensor]:
        """A sampled action and its log-prob (:func:`squashed_gaussian_sample` with fresh noise)."""
        noise = self.standard_noise(mean_actions)
        self.proba_distribution(mean_actions, log_std)
        self.gaussian_actions = mean_actions + log_std.exp() * noise
        return squashed_gaussian_sample(mean_actions, log_std, noise)


def squashed_gaussian_sample(mean_actions: th.Tensor, log_std: th.Tensor, noise: th.Tensor) -> tuple[th.Tensor, th.Tensor]:
    """The action ``tanh(u)``, ``u = mu + sigma * eps``, drawn by the standard-normal ``noise`` eps, and its log-prob
    ``log N(eps; 0, 1) - sum(log sigma) - log|d tanh(u) / du|``."""
    gaussian_actions = mean_actions + log_std.exp() * noise
    base_log_prob = (-0.5 * noise.square() - log_std - 0.5 * math.log(2.0 * math.pi)).sum(dim=-1)
    return th.tanh(gaussian_actions), base_log_prob - tanh_log_det(gaussian_actions)


def tanh_log_det(gaussian_actions: th.Tensor) -> th.Tensor:
    """``sum log|d tanh(u) / du| = sum 2 (log 2 - u - softplus(-2u))``, exact and stable for large ``|u|``."""
    return (2.0 * (math.log(2.0) - gaussian_actions - F.softplus(-2.0 * gaussian_actions))).sum(dim=-1)


class BroNetActor(Actor):
    """SAC actor with a BroNet trunk and a tanh-squashed log-std in ``[-10, 2]``.

    In multi-task runs its input is ``concat(obs, task_embedding)``, the embedding being the critic's
    (detached: the actor loss never trains it).

    :param observation_space: Observation space
    :param action_space: Action space
    :param net_arch: Residual blocks of the trunk (one width per block, all equal)
    :param features_extractor: Network to extract features
    :param features_dim: Number of features of the observation part
    :param activation_fn: Activation function
    :param normalize_images: Whether to divide image observations by 255
    :param num_tasks: Number of tasks; above 1 the critic's task embedding is read
    :param embedding_dim: Size of the task embedding
    """

    # SB3's Actor types these after its gSDE branch (and ignores the same mismatch for its squashed-Gaussian one)
    action_dist: StableSquashedDiagGaussianDistribution  # type: ignore[assignment]
    latent_pi: BroNet  # type: ignore[assignment]
    log_std: nn.Linear  # type: ignore[assignment]

    def __init__(
        self,
        observation_space: spaces.Space,
        action_space: spaces.Box,
        net_arch: list[int],
        features_extractor: nn.Module,
        features_dim: int,
        activation_fn: type[nn.Module] = nn.ReLU,
        normalize_images: bool = True,
        num_tasks: int = 1,
        embedding_dim: int = 32,
        **_sde_kwargs: Any,
    ):
        # Actor builds mu / log_std heads for a trunk of width net_arch[-1]; the trunk is replaced below
        super().__init__(
            observation_space,
            action_space,
            net_arch=net_arch[-1:],
            features_extractor=features_extractor,
            features_dim=features_dim,
            activation_fn=activation_fn,
            normalize_images=normalize_images,
        )
        self.net_arch = net_arch
        self.num_tasks = num_tasks
        self.embedding_dim = embedding_dim
        self.action_dist = StableSquashedDiagGaussianDistribution(get_action_dim(action_space))
        input_dim = features_dim + (embedding_dim if num_tasks > 1 else 0)
        self.latent_pi = BroNet(input_dim, net_arch, activation_fn=activation_fn)
        orthogonal_init_(self.mu, gain=2**0.5)
        orthogonal_init_(self.log_std, gain=1.0)
        self._task_embedding: TaskEmbedding | None = None

    def use_task_embedding(self, embedding: TaskEmbedding | None) -> None:
        """Read task embeddings from ``embedding`` (the critic's) without registering it as a sub-module,
        so it is neither in the actor's parameters (optimiser) nor duplicated in the state dict."""
        object.__setattr__(self, "_task_embedding", embedding)

    def _get_constructor_parameters(self) -> dict[str, Any]:
        data = super()._get_constructor_parameters()
        data.update(net_arch=self.net_arch, num_tasks=self.num_tasks, embedding_dim=self.embedding_dim)
        return data

    def action_log_prob(self, obs: PyTorchObs, noise: th.Tensor | None = None) -> tuple[th.Tensor, th.Tensor]:
        """A sampled action and its log-prob; ``noise``: the standard-normal noise that draws it (fresh when None)."""
        if noise is None:
            return super().action_log_prob(obs)
        mean_actions, log_std, _ = self.get_action_dist_params(obs)
        return squashed_gaussian_sample(mean_actions, log_std, noise)

    def get_action_dist_params(self, obs: PyTorchObs) -> tuple[th.Tensor, th.Tensor, dict[str, th.Tensor]]:
        observation, task_ids = split_task_observation(obs)
        features = self.extract_features(observation, self.features_extractor)
        if self.num_tasks > 1:
            if self._task_embedding is None:
                raise RuntimeError(
                    "Multi-task BroNetActor has no task embedding; call use_task_embedding(critic.task_embedding)."
                )
            features = th.cat([features, self._task_embedding(task_ids).detach()], dim=-1)
        latent_pi = self.latent_pi(features)
        log_std = LOG_STD_MIN + 0.5 * (LOG_STD_MAX - LOG_STD_MIN) * (1.0 + th.tanh(self.log_std(latent_pi)))
        return self.mu(latent_pi), log_std, {}


class CategoricalCritic(TaskConditionedNetwork):
    """Ensemble of ``n_critics`` BroNets, each returning ``n_atoms`` logits over ``linspace(v_min, v_max, n_atoms)``.

    All members run as one batched computation. Input: ``concat(features, action, task embedding)``, the
    embedding owned (and trained) by this critic in multi-task runs.

    :param observation_space: Observation space
    :param action_space: Action space
    :param net_arch: Residual blocks of each member (one width per block, all equal)
    :param features_extractor: Network to extract features of the observation part
    :param features_dim: Number of features
    :param activation_fn: Activation function
    :param normalize_images: Whether to divide image observations by 255
    :param n_critics: Number of ensemble members
    :param share_features_extractor: Unused (BRC never shares the extractor); kept for SB3 compatibility
    :param n_atoms: Number of atoms of the categorical distribution
    :param v_min: Lowest atom
    :param v_max: Highest atom
    :param num_tasks: Number of tasks; above 1 a task embedding is learned
    :param embedding_dim: Size of the task embedding
    :param embedding_norm: ``"l2"`` (reference code) or ``"l1"`` (paper) normalisation of the embedding
    """

    def __init__(
        self,
        observation_space: spaces.Space,
        action_space: spaces.Box,
        net_arch: list[int],
        features_extractor: BaseFeaturesExtractor,
        features_dim: int,
        activation_fn: type[nn.Module] = nn.ReLU,
        normalize_images: bool = True,
        n_critics: int = 2,
        share_features_extractor: bool = False,
        n_atoms: int = 101,
        v_min: float = -10.0,
        v_max: float = 10.0,
        num_tasks: int = 1,
        embedding_dim: int = 32,
        embedding_norm: str = "l2",
    ):
        super().__init__(
            observation_space,
            action_space,
            features_extractor,
            normalize_images,
            n_atoms=n_atoms,
            v_min=v_min,
            v_max=v_max,
            num_tasks=num_tasks,
            embedding_dim=embedding_dim,
            embedding_norm=embedding_norm,
        )
        self.n_critics = n_critics
        input_dim = self.task_input_dim + get_action_dim(action_space)
        self.q_networks = BroNet(input_dim, net_arch, output_dim=n_atoms, ensemble_size=n_critics, activation_fn=activation_fn)

    def forward(self, obs: PyTorchObs, actions: th.Tensor) -> th.Tensor:
        """:return: ``(batch, n_critics, n_atoms)`` logits"""
        return self.q_networks(self.task_inputs(obs, actions)).transpose(0, 1)


class BRCPolicy(SACPolicy):
    """SAC policy with BRC networks: BroNet actor, categorical BroNet critic ensemble, critic-owned task embedding.

    ``net_arch`` entries are residual blocks; default ``SIZE_PRESETS["small"]`` (actor: one block of 256, critic: two
    blocks of 512, the reference class defaults; the paper scales the critic width).

    :param observation_space: Observation space
    :param action_space: Action space
    :param lr_schedule: Learning rate schedule (could be constant)
    :param net_arch: Residual blocks of actor and critic: a list for both, or ``dict(pi=[...], qf=[...])``
    :param activation_fn: Activation function
    :param use_sde: Not supported (must be False)
    :param log_std_init: Unused (the log-std is state-dependent); kept for SAC compatibility
    :param use_expln: Unused; kept for SAC compatibility
    :param clip_mean: Unused; kept for SAC compatibility
    :param features_extractor_class: Features extractor to use
    :param features_extractor_kwargs: Keyword arguments to pass to the features extractor
    :param normalize_images: Whether to divide image observations by 255
    :param optimizer_class: Optimizer of actor and critic (AdamW, as in the reference)
    :param optimizer_kwargs: Its keyword arguments, over :attr:`default_optimizer_kwargs` for AdamW (given keys
        replace those defaults, the others stay); another ``optimizer_class`` takes them alone
    :param n_critics: Number of critic heads
    :param share_features_extractor: Must be False: BRC's shared part is the critic-owned task embedding
    :param n_atoms: Number of atoms of the categorical critic
    :param v_min: Lowest atom of the support
    :param v_max: Highest atom of the support (rewards are normalised so returns fit in it)
    :param num_tasks: Number of tasks (taken from the environment by ``BRCSAC``); above 1 the critic learns a task
        embedding, looked up with the ``task_id`` of multi-task observations
    :param embedding_dim: Size of the task embedding
    :param embedding_norm: ``"l2"`` (reference code default) or ``"l1"`` (paper variant)
    """

    #: AdamW's arguments in BRC: the weight decay of optax's ``adamw`` (the reference's optimiser; PyTorch's default
    #: is 0.01), and PyTorch's fused kernel (its default AdamW loops over the parameters on the CPU; pass
    #: ``fused=False`` on a device without one)
    default_optimizer_kwargs: ClassVar[dict[str, Any]] = dict(weight_decay=1e-4, fused=True)
    #: The tasks it was trained on, on an exported policy (``load_exported_policy`` sets it; ``as_task_of`` reads it)
    task_layout: TaskLayout | None = None
    actor: BroNetActor
    # BRC's categorical critic takes the place of SAC's ContinuousCritic (same inputs, a distribution per head)
    critic: CategoricalCritic  # type: ignore[assignment]
    critic_target: CategoricalCritic  # type: ignore[assignment]

    def __init__(
        self,
        observation_space: spaces.Space,
        action_space: spaces.Box,
        lr_schedule: Schedule,
        net_arch: list[int] | dict[str, list[int]] | None = None,
        activation_fn: type[nn.Module] = nn.ReLU,
        use_sde: bool = False,
        log_std_init: float = -3,
        use_expln: bool = False,
        clip_mean: float = 2.0,
        features_extractor_class: type[BaseFeaturesExtractor] = FlattenExtractor,
        features_extractor_kwargs: dict[str, Any] | None = None,
        normalize_images: bool = True,
        optimizer_class: type[th.optim.Optimizer] = th.optim.AdamW,
        optimizer_kwargs: dict[str, Any] | None = None,
        n_critics: int = 2,
        share_features_extractor: bool = False,
        n_atoms: int = 101,
        v_min: float = -10.0,
        v_max: float = 10.0,
        num_tasks: int = 1,
        embedding_dim: int = 32,
        embedding_norm: str = "l2",
    ):
        check_categorical_support(n_atoms, v_min, v_max)
        if num_tasks < 1:
            raise ValueError(f"num_tasks must be >= 1, got {num_tasks}")
        if use_sde:
            raise ValueError("BRCPolicy does not support gSDE (use_sde=True): BRC explores by sampling its policy")
        if share_features_extractor:
            raise ValueError(
                "BRCPolicy does not share a features extractor: in BRC the critic owns the task embedding and the "
                "actor reads it detached. Use share_features_extractor=False."
            )
        self.n_atoms, self.v_min, self.v_max = n_atoms, float(v_min), float(v_max)
        self.num_tasks, self.embedding_dim, self.embedding_norm = num_tasks, embedding_dim, embedding_norm
        super().__init__(
            observation_space,
            action_space,
            lr_schedule,
            net_arch=copy.deepcopy(SIZE_PRESETS["small"]) if net_arch is None else net_arch,
            activation_fn=activation_fn,
            features_extractor_class=features_extractor_class,
            features_extractor_kwargs=features_extractor_kwargs,
            normalize_images=normalize_images,
            optimizer_class=optimizer_class,
            optimizer_kwargs=optimizer_kwargs_over_defaults(
                optimizer_class, th.optim.AdamW, self.default_optimizer_kwargs, optimizer_kwargs
            ),
            n_critics=n_critics,
        )

    def _build(self, lr_schedule: Schedule) -> None:
        super()._build(lr_schedule)
        self.actor.use_task_embedding(self.critic.task_embedding)

    def set_training_mode(self, mode: bool) -> None:
        # SACPolicy's (the actor and critic switched, the target left in eval mode), by the cheaper walk
        set_training_flags(self.actor, mode)
        set_training_flags(self.critic, mode)
        self.training = mode

    def make_features_extractor(self) -> BaseFeaturesExtractor:
        # The extractor encodes the observation part; the task id goes through the embedding instead
        return self.features_extractor_class(observation_part(self.observation_space), **self.features_extractor_kwargs)

    def make_actor(self, features_extractor: BaseFeaturesExtractor | None = None) -> BroNetActor:
        actor_kwargs = self._update_features_extractor(self.actor_kwargs, features_extractor)
        actor_kwargs["observation_space"] = observation_part(self.observation_space)
        return BroNetActor(**actor_kwargs, num_tasks=self.num_tasks, embedding_dim=self.embedding_dim).to(self.device)

    def make_critic(self, features_extractor: BaseFeaturesExtractor | None = None) -> CategoricalCritic:  # type: ignore[override]
        critic_kwargs = self._update_features_extractor(self.critic_kwargs, features_extractor)
        return CategoricalCritic(
            **critic_kwargs,
            n_atoms=self.n_atoms,
            v_min=self.v_min,
            v_max=self.v_max,
            num_tasks=self.num_tasks,
            embedding_dim=self.embedding_dim,
            embedding_norm=self.embedding_norm,
        ).to(self.device)

    def _get_constructor_parameters(self) -> dict[str, Any]:
        data = super()._get_constructor_parameters()
        data.update(
            n_atoms=self.n_atoms,
            v_min=self.v_min,
            v_max=self.v_max,
            num_tasks=self.num_tasks,
            embedding_dim=self.embedding_dim,
            embedding_norm=self.embedding_norm,
        )
        return data

    def obs_to_tensor(self, observation: np.ndarray | dict[str, np.ndarray]) -> tuple[PyTorchObs, bool]:
        check_task_observation(observation, self.observation_space)
        return super().obs_to_tensor(observation)

    def _predict(self, observation: PyTorchObs, deterministic: bool = False) -> th.Tensor:
        if self.num_tasks > 1:
            check_task_ids(observation, self.num_tasks)
        return super()._predict(observation, deterministic)


MlpPolicy = BRCPolicy


class CnnPolicy(BRCPolicy):
    """:class:`BRCPolicy` for image observations: SB3's ``NatureCNN`` encoder (one per network) before the BroNets."""

    def __init__(self, *args: Any, features_extractor_class: type[BaseFeaturesExtractor] = NatureCNN, **kwargs: Any):
        super().__init__(*args, **dict(kwargs, features_extractor_class=features_extractor_class))


class MultiInputPolicy(BRCPolicy):
    """:class:`BRCPolicy` for ``Dict`` observations of a single task (SB3's ``CombinedExtractor``: keys flattened and
    concatenated). A multi-task env's ``Dict(observation, task_id)`` is not one: use ``MlpPolicy`` there.

    Keys must be at least 1-d: SB3's replay buffer cannot store 0-d entries (DMC's ``height``); flatten such
    envs with ``gymnasium.wrappers.FlattenObservation`` or use ``MultiTaskVecEnv``, which does it for you."""

    def __init__(self, *args: Any, features_extractor_class: type[BaseFeaturesExtractor] = CombinedExtractor, **kwargs: Any):
        super().__init__(*args, **dict(kwargs, features_extractor_class=features_extractor_class))
