"""BRCDQN policies: encoder -> (task embedding) -> BroNet head -> per-action categorical logits, with action masks."""

from typing import Any, ClassVar

import numpy as np
import torch as th
from gymnasium import spaces
from stable_baselines3.common.policies import BasePolicy
from stable_baselines3.common.preprocessing import is_image_space
from stable_baselines3.common.torch_layers import BaseFeaturesExtractor, CombinedExtractor, FlattenExtractor, NatureCNN
from stable_baselines3.common.type_aliases import PyTorchObs, Schedule

from sb3_brc.common.distributional import categorical_mean
from sb3_brc.common.policies import TaskConditionedNetwork, check_categorical_support, optimizer_kwargs_over_defaults
from sb3_brc.common.task_layout import check_task_ids, check_task_observation, legal_action_masks, observation_part
from sb3_brc.common.torch_layers import BroNet
from sb3_brc.common.utils import set_training_flags


class CategoricalQNetwork(TaskConditionedNetwork):
    """Encoder, then ``concat(features, task embedding)`` into a BroNet whose head gives ``n_atoms`` logits per
    action. The task embedding is owned by this network and trained by its loss.

    :param observation_space: Observation space (a multi-task ``Dict(observation, task_id)`` or a plain ``Box``)
    :param action_space: ``Discrete`` action space
    :param features_extractor: Encoder of the observation part
    :param net_arch: Residual blocks of the BroNet head (one width per block, all equal)
    :param n_atoms: Number of atoms of the categorical distribution
    :param v_min: Lowest atom
    :param v_max: Highest atom
    :param num_tasks: Number of tasks; above 1 a task embedding is learned
    :param embedding_dim: Size of the task embedding
    :param embedding_norm: ``"l2"`` or ``"l1"`` normalisation of the embedding
    :param normalize_images: Whether to divide image observations by 255
    """

    def __init__(
        self,
        observation_space: spaces.Space,
        action_space: spaces.Discrete,
        features_extractor: BaseFeaturesExtractor,
        net_arch: list[int],
        n_atoms: int = 101,
        v_min: float = -10.0,
        v_max: float = 10.0,
        num_tasks: int = 1,
        embedding_dim: int = 32,
        embedding_norm: str = "l2",
        normalize_images: bool = True,
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
        self.n_actions = int(action_space.n)
        self.head = BroNet(self.task_input_dim, net_arch, output_dim=self.n_actions * n_atoms)

    def forward(self, obs: PyTorchObs) -> th.Tensor:
        """:return: ``(batch, n_actions, n_atoms)`` logits"""
        return self.head(self.task_inputs(obs)).view(-1, self.n_actions, self.n_atoms)

    def q_values(self, obs: PyTorchObs) -> th.Tensor:
        """Expected value of each action's distribution, ``(batch, n_actions)``."""
        return categorical_mean(self(obs), self.support)


class BRCDQNPolicy(BasePolicy):
    """Policy of :class:`BRCDQN`: an online and a target :class:`CategoricalQNetwork`, greedy (or epsilon-greedy)
    over each task's legal actions.

    Observations are a ``Box`` (single task: images or vectors) or the ``Dict(observation, task_id)`` of a
    ``DiscreteMultiTaskVecEnv``. The encoder defaults to ``NatureCNN`` for images and to a plain flatten for
    vectors (the BroNet head does the work); pass ``features_extractor_class=ImpalaCNN`` for the Impala encoder.

    :param observation_space: Observation space
    :param action_space: ``Discrete`` action space (the union of the tasks' actions)
    :param lr_schedule: Learning rate schedule
    :param net_arch: Residual blocks of the BroNet head (default ``[512, 512]``)
    :param n_atoms: Number of atoms of the categorical distribution
    :param v_min: Lowest atom
    :param v_max: Highest atom
    :param num_tasks: Number of tasks (task embeddings above 1)
    :param embedding_dim: Size of the task embedding
    :param embedding_norm: ``"l2"`` or ``"l1"``
    :param legal_actions: Per task, the union-space ids of its actions (default: every action legal for every task)
    :param features_extractor_class: Encoder class (default: ``NatureCNN`` for images, flatten otherwise)
    :param features_extractor_kwargs: Keyword arguments of the encoder
    :param normalize_images: Whether to divide image observations by 255
    :param optimizer_class: Optimizer (Adam, as in DrQ(eps))
    :param optimizer_kwargs: Optimizer keyword arguments, over :attr:`default_optimizer_kwargs` for Adam (given keys
        replace those defaults, the others stay); another ``optimizer_class`` takes them alone
    """

    #: Adam's arguments in BRCDQN: DrQ(eps)'s eps, and PyTorch's fused kernel (its default Adam loops over the
    #: parameters on the CPU; pass ``fused=False`` on a device without one)
    default_optimizer_kwargs: ClassVar[dict[str, Any]] = dict(eps=1.5e-4, fused=True)
    action_space: spaces.Discrete
    action_masks: th.Tensor  # a registered buffer, (tasks, n_actions)

    def __init__(
        self,
        observation_space: spaces.Space,
        action_space: spaces.Discrete,
        lr_schedule: Schedule,
        net_arch: list[int] | None = None,
        n_atoms: int = 101,
        v_min: float = -10.0,
        v_max: float = 10.0,
        num_tasks: int = 1,
        embedding_dim: int = 32,
        embedding_norm: str = "l2",
        legal_actions: list[list[int]] | None = None,
        features_extractor_class: type[BaseFeaturesExtractor] | None = None,
        features_extractor_kwargs: dict[str, Any] | None = None,
        normalize_images: bool = True,
        optimizer_class: type[th.optim.Optimizer] = th.optim.Adam,
        optimizer_kwargs: dict[str, Any] | None = None,
    ):
        check_categorical_support(n_atoms, v_min, v_max)
        if features_extractor_class is None:
            image = is_image_space(observation_part(observation_space), check_channels=False)
            features_extractor_class = NatureCNN if image else FlattenExtractor
        super().__init__(
            observation_space,
            action_space,
            features_extractor_class,
            features_extractor_kwargs,
            optimizer_class=optimizer_class,
            optimizer_kwargs=optimizer_kwargs_over_defaults(
                optimizer_class, th.optim.Adam, self.default_optimizer_kwargs, optimizer_kwargs
            ),
            normalize_images=normalize_images,
        )
        self.net_arch = [512, 512] if net_arch is None else net_arch
        self.n_atoms, self.v_min, self.v_max = n_atoms, float(v_min), float(v_max)
        self.num_tasks, self.embedding_dim, self.embedding_norm = num_tasks, embedding_dim, embedding_norm
        self.legal_actions = [list(range(action_space.n))] * num_tasks if legal_actions is None else legal_actions
        if len(self.legal_actions) != num_tasks:
            raise ValueError(f"legal_actions lists {len(self.legal_actions)} tasks, the policy has {num_tasks}")
        self.register_buffer("action_masks", th.as_tensor(legal_action_masks(self.legal_actions, int(action_space.n))))
        self.q_net, self.q_net_target = self.make_q_net(), self.make_q_net()
        self.q_net_target.load_state_dict(self.q_net.state_dict())
        self.q_net_target.set_training_mode(False)
        self.optimizer = self.optimizer_class(self.q_net.parameters(), lr=lr_schedule(1), **self.optimizer_kwargs)  # type: ignore[call-arg]  # torch types Optimizer(params, defaults); its subclasses take lr

    def make_q_net(self) -> CategoricalQNetwork:
        """A new categorical Q-network (online or target) with its own encoder."""
        extractor = self.features_extractor_class(observation_part(self.observation_space), **self.features_extractor_kwargs)
        return CategoricalQNetwork(
            self.observation_space,
            self.action_space,
            extractor,
            self.net_arch,
            n_atoms=self.n_atoms,
            v_min=self.v_min,
            v_max=self.v_max,
            num_tasks=self.num_tasks,
            embedding_dim=self.embedding_dim,
            embedding_norm=self.embedding_norm,
            normalize_images=self.normalize_images,
        ).to(self.device)

    def add_tasks(self, legal_actions: list[list[int]]) -> None:
        """Legal actions of new tasks appended (transfer); the networks' embedding tables grow separately."""
        self.legal_actions = [*self.legal_actions, *legal_actions]
        self.num_tasks = len(self.legal_actions)
        masks = legal_action_masks(self.legal_actions, int(self.action_space.n))
        self.action_masks = th.as_tensor(masks, device=self.action_masks.device)

    def obs_to_tensor(self, observation: np.ndarray | dict[str, np.ndarray]) -> tuple[PyTorchObs, bool]:
        check_task_observation(observation, self.observation_space)
        return super().obs_to_tensor(observation)

    def act(self, obs: PyTorchObs, epsilon: float = 0.0) -> th.Tensor:
        """Greedy legal action of each observation; with probability ``epsilon`` a uniformly random legal one."""
        task_ids = check_task_ids(obs, self.num_tasks)
        legal = self.action_masks[task_ids]
        if epsilon > 0:
            # argmax of uniform noise over the legal entries: a uniform legal action
            random_actions = th.rand(legal.shape, device=legal.device).masked_fill(~legal, -1.0).argmax(dim=1)
            if epsilon >= 1.0:  # warm-up: no forward pass needed
                return random_actions
        actions = self.q_net.q_values(obs).masked_fill(~legal, -th.inf).argmax(dim=1)
        if epsilon > 0:
            explore = th.rand(actions.shape, device=actions.device) < epsilon
            actions = th.where(explore, random_actions, actions)
        return actions

    def forward(self, obs: PyTorchObs, deterministic: bool = True) -> th.Tensor:
        return self._predict(obs, deterministic)

    def _predict(self, observation: PyTorchObs, deterministic: bool = True) -> th.Tensor:
        return self.act(observation)

    def set_training_mode(self, mode: bool) -> None:
        set_training_flags(self.q_net, mode)  # the target stays in eval mode
        self.training = mode

    def _get_constructor_parameters(self) -> dict[str, Any]:
        data = super()._get_constructor_parameters()
        data.update(
            net_arch=self.net_arch,
            n_atoms=self.n_atoms,
            v_min=self.v_min,
            v_max=self.v_max,
            num_tasks=self.num_tasks,
            embedding_dim=self.embedding_dim,
            embedding_norm=self.embedding_norm,
            legal_actions=self.legal_actions,
            lr_schedule=self._dummy_schedule,
            optimizer_class=self.optimizer_class,
            optimizer_kwargs=self.optimizer_kwargs,
            features_extractor_class=self.features_extractor_class,
            features_extractor_kwargs=self.features_extractor_kwargs,
        )
        return data


MlpPolicy = BRCDQNPolicy


class CnnPolicy(BRCDQNPolicy):
    """:class:`BRCDQNPolicy` with SB3's ``NatureCNN`` encoder (``ImpalaCNN`` via ``features_extractor_class``)."""

    def __init__(self, *args: Any, features_extractor_class: type[BaseFeaturesExtractor] = NatureCNN, **kwargs: Any):
        super().__init__(*args, **dict(kwargs, features_extractor_class=features_extractor_class))


class MultiInputPolicy(BRCDQNPolicy):
    """:class:`BRCDQNPolicy` for ``Dict`` observations of a single task (SB3's ``CombinedExtractor``)."""

    def __init__(self, *args: Any, features_extractor_class: type[BaseFeaturesExtractor] = CombinedExtractor, **kwargs: Any):
        super().__init__(*args, **dict(kwargs, features_extractor_class=features_extractor_class))
