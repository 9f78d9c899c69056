"""BRCDQN policies: encoder -> (task embedding) -> BroNet head -> per-action categorical logits, with action masks."""

from typing import Any

import torch as th
from gymnasium import spaces
from stable_baselines3.common.policies import BaseModel, BasePolicy
from stable_baselines3.common.preprocessing import is_image_space
from stable_baselines3.common.torch_layers import BaseFeaturesExtractor, FlattenExtractor, NatureCNN
from stable_baselines3.common.type_aliases import PyTorchObs, Schedule
from torch import nn

from sb3_brc.common.distributional import expected_value
from sb3_brc.common.torch_layers import BroNet, TaskEmbedding


class ImpalaResidual(nn.Module):
    """``x + conv(relu(conv(relu(x))))`` with 3x3 convolutions."""

    def __init__(self, channels: int):
        super().__init__()
        self.net = nn.Sequential(
            nn.ReLU(), nn.Conv2d(channels, channels, 3, padding=1), nn.ReLU(), nn.Conv2d(channels, channels, 3, padding=1)
        )

    def forward(self, x: th.Tensor) -> th.Tensor:
        return x + self.net(x)


class ImpalaCNN(BaseFeaturesExtractor):
    """Impala-style encoder (Espeholt et al. 2018): per stage a 3x3 conv, a 3x3 max-pool with stride 2 and two
    residual blocks; then ReLU, flatten and a linear layer to ``features_dim``.

    :param observation_space: Channel-first image space
    :param features_dim: Output size
    :param channels: Channels of each stage
    """

    def __init__(self, observation_space: spaces.Box, features_dim: int = 256, channels: tuple[int, ...] = (16, 32, 32)):
        super().__init__(observation_space, features_dim)
        layers: list[nn.Module] = []
        in_channels = observation_space.shape[0]
        for out_channels in channels:
            layers += [
                nn.Conv2d(in_channels, out_channels, 3, padding=1),
                nn.MaxPool2d(3, stride=2, padding=1),
                ImpalaResidual(out_channels),
                ImpalaResidual(out_channels),
            ]
            in_channels = out_channels
        self.cnn = nn.Sequential(*layers, nn.ReLU(), nn.Flatten())
        with th.no_grad():
            n_flatten = self.cnn(th.zeros(1, *observation_space.shape)).shape[1]
        self.linear = nn.Sequential(nn.Linear(n_flatten, features_dim), nn.ReLU())

    def forward(self, observations: th.Tensor) -> th.Tensor:
        return self.linear(self.cnn(observations))


class CategoricalQNetwork(BaseModel):
    """Encoder, then ``concat(features, task embedding)`` into a BroNet whose head gives ``n_atoms`` logits per
    action. The task embedding is owned by this network and trained by its loss.

    :param observation_space: Observation space of the encoder (the ``obs`` part of multi-task observations)
    :param action_space: ``Discrete`` action space
    :param features_extractor: Encoder
    :param features_dim: Encoder output size
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
        features_dim: int,
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
            observation_space, action_space, features_extractor=features_extractor, normalize_images=normalize_images
        )
        self.n_actions, self.n_atoms, self.num_tasks = int(action_space.n), n_atoms, num_tasks
        self.register_buffer("support", th.linspace(v_min, v_max, n_atoms))
        self.task_embedding = TaskEmbedding(num_tasks, embedding_dim, embedding_norm) if num_tasks > 1 else None
        input_dim = features_dim + (embedding_dim if num_tasks > 1 else 0)
        self.head = BroNet(input_dim, net_arch, output_dim=self.n_actions * n_atoms)

    def forward(self, obs: th.Tensor, task_ids: th.Tensor) -> th.Tensor:
        """:return: ``(batch, n_actions, n_atoms)`` logits"""
        features = self.extract_features(obs, self.features_extractor)
        if self.task_embedding is not None:
            features = th.cat([features, self.task_embedding(task_ids)], dim=-1)
        return self.head(features).view(-1, self.n_actions, self.n_atoms)

    def q_values(self, obs: th.Tensor, task_ids: th.Tensor) -> th.Tensor:
        """Expected value of each action's distribution, ``(batch, n_actions)``."""
        logits = self(obs, task_ids)
        return expected_value(logits.flatten(0, 1).unsqueeze(1), self.support).view(-1, self.n_actions)


class BRCDQNPolicy(BasePolicy):
    """Policy of :class:`BRCDQN`: an online and a target :class:`CategoricalQNetwork`, greedy (or epsilon-greedy)
    over each task's legal actions.

    Observations are a ``Box`` (single task: images or vectors) or the ``Dict(obs, task_id)`` of a
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
    :param legal_actions: Per task, the legal union actions (default: all actions legal)
    :param features_extractor_class: Encoder class (default: ``NatureCNN`` for images, flatten otherwise)
    :param features_extractor_kwargs: Keyword arguments of the encoder
    :param normalize_images: Whether to divide image observations by 255
    :param optimizer_class: Optimizer (Adam, as in DrQ(eps))
    :param optimizer_kwargs: Optimizer keyword arguments (default ``eps=1.5e-4``)
    """

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
        if n_atoms < 2 or not v_min < v_max:
            raise ValueError(
                f"The categorical Q-network needs n_atoms >= 2 and v_min < v_max, got {n_atoms}, {v_min}, {v_max}"
            )
        self.encoder_space = observation_space["obs"] if isinstance(observation_space, spaces.Dict) else observation_space
        if features_extractor_class is None:
            image = is_image_space(self.encoder_space, check_channels=False)
            features_extractor_class = NatureCNN if image else FlattenExtractor
        super().__init__(
            observation_space,
            action_space,
            features_extractor_class,
            features_extractor_kwargs,
            optimizer_class=optimizer_class,
            optimizer_kwargs={"eps": 1.5e-4} if optimizer_kwargs is None else optimizer_kwargs,
            normalize_images=normalize_images,
        )
        self.net_arch = [512, 512] if net_arch is None else net_arch
        self.n_atoms, self.v_min, self.v_max = n_atoms, float(v_min), float(v_max)
        self.num_tasks, self.embedding_dim, self.embedding_norm = num_tasks, embedding_dim, embedding_norm
        n_actions = int(action_space.n)
        self.legal_actions_list = legal_actions
        masks = th.ones(num_tasks, n_actions, dtype=th.bool)
        if legal_actions is not None:
            if len(legal_actions) != num_tasks:
                raise ValueError(f"legal_actions lists {len(legal_actions)} tasks, the policy has {num_tasks}")
            masks[:] = False
            for task, legal in enumerate(legal_actions):
                masks[task, list(legal)] = True
        self.register_buffer("legal_actions", masks)
        self.q_net, self.q_net_target = self.make_q_net(), self.make_q_net()
        self.q_net_target.load_state_dict(self.q_net.state_dict())
        self.q_net_target.set_training_mode(False)
        self.optimizer = self.optimizer_class(self.q_net.parameters(), lr=lr_schedule(1), **self.optimizer_kwargs)

    def make_q_net(self) -> CategoricalQNetwork:
        extractor = self.features_extractor_class(self.encoder_space, **self.features_extractor_kwargs)
        return CategoricalQNetwork(
            self.encoder_space,
            self.action_space,
            extractor,
            extractor.features_dim,
            self.net_arch,
            n_atoms=self.n_atoms,
            v_min=self.v_min,
            v_max=self.v_max,
            num_tasks=self.num_tasks,
            embedding_dim=self.embedding_dim,
            embedding_norm=self.embedding_norm,
            normalize_images=self.normalize_images,
        ).to(self.device)

    def split_observation(self, obs: PyTorchObs) -> tuple[th.Tensor, th.Tensor]:
        """``(encoder input, task ids)``; single-task ``Box`` observations belong to task 0."""
        if isinstance(obs, dict):
            return obs["obs"], obs["task_id"].reshape(-1).long()
        return obs, th.zeros(obs.shape[0], dtype=th.long, device=obs.device)

    def act(self, obs: PyTorchObs, epsilon: float = 0.0) -> th.Tensor:
        """Greedy legal action of each observation; with probability ``epsilon`` a uniformly random legal one."""
        encoder_input, task_ids = self.split_observation(obs)
        if task_ids.numel() and not (0 <= int(task_ids.min()) and int(task_ids.max()) < self.num_tasks):
            raise ValueError(f"Task ids {sorted(set(task_ids.tolist()))} are outside [0, {self.num_tasks}) of this model.")
        legal = self.legal_actions[task_ids]
        if epsilon > 0:
            # argmax of uniform noise over the legal entries: a uniform legal action
            random_actions = th.rand(legal.shape, device=legal.device).masked_fill(~legal, -1.0).argmax(dim=1)
            if epsilon >= 1.0:  # warm-up: no forward pass needed
                return random_actions
        actions = self.q_net.q_values(encoder_input, task_ids).masked_fill(~legal, -th.inf).argmax(dim=1)
        if epsilon > 0:
            explore = th.rand(actions.shape, device=actions.device) < epsilon
            actions = th.where(explore, random_actions, actions)
        return actions

    def forward(self, obs: PyTorchObs, deterministic: bool = True) -> th.Tensor:
        return self._predict(obs, deterministic)

    def _predict(self, observation: PyTorchObs, deterministic: bool = True) -> th.Tensor:
        return self.act(observation)

    def set_training_mode(self, mode: bool) -> None:
        self.q_net.set_training_mode(mode)
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
            legal_actions=self.legal_actions_list,
            lr_schedule=self._dummy_schedule,
            optimizer_class=self.optimizer_class,
            optimizer_kwargs=self.optimizer_kwargs,
            features_extractor_class=self.features_extractor_class,
            features_extractor_kwargs=self.features_extractor_kwargs,
        )
        return data


MlpPolicy = BRCDQNPolicy
CnnPolicy = BRCDQNPolicy
MultiInputPolicy = BRCDQNPolicy
