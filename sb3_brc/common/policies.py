"""The task-conditioned categorical value network that BRC's critic (BRCSAC) and Q-network (BRCDQN) share."""

from typing import Any

import torch as th
from gymnasium import spaces
from stable_baselines3.common.policies import BaseModel
from stable_baselines3.common.preprocessing import is_image_space
from stable_baselines3.common.torch_layers import BaseFeaturesExtractor
from stable_baselines3.common.type_aliases import PyTorchObs

from sb3_brc.common.task_layout import observation_part, split_task_observation
from sb3_brc.common.torch_layers import TaskEmbedding

#: Named network sizes (``net_arch`` of BRCSAC's policy; BRCDQN's head takes the critic blocks). Depth stays 2
#: critic blocks; BRC scales width only.
#: Parameter counts are for the critic, 2 heads + target, on a DMC-dog-sized input (223 observation + 38 action
#: entries); the paper's "64M / 256M / 1B" most likely count the same way (unverified).
SIZE_PRESETS: dict[str, dict[str, list[int]]] = {
    "tiny": dict(pi=[64], qf=[128, 128]),  # CPU demos and tests
    "small": dict(pi=[256], qf=[512, 512]),  # reference class default, ~5M
    "medium": dict(pi=[256], qf=[1024, 1024]),  # ~18M
    "64M": dict(pi=[256], qf=[2048, 2048]),  # ~70M
    "256M": dict(pi=[256], qf=[4096, 4096]),  # reference train.py default, ~275M
    "1B": dict(pi=[256], qf=[8192, 8192]),  # ~1.09B
}


def check_categorical_support(n_atoms: Any, v_min: float, v_max: float) -> None:
    """Clear errors for a support the categorical loss cannot use."""
    if isinstance(n_atoms, bool) or not isinstance(n_atoms, int) or n_atoms < 2:
        raise ValueError(f"n_atoms must be an integer >= 2 (BRC uses 101), got {n_atoms!r}")
    if not v_min < v_max:
        raise ValueError(f"The categorical support needs v_min < v_max, got v_min={v_min}, v_max={v_max}")


def optimizer_kwargs_over_defaults(
    optimizer_class: type[th.optim.Optimizer],
    default_class: type[th.optim.Optimizer],
    defaults: dict[str, Any],
    user_kwargs: dict[str, Any] | None,
) -> dict[str, Any]:
    """An algorithm's optimiser defaults with the user's ``optimizer_kwargs`` over them: ``dict(eps=1e-5)`` changes
    ``eps`` and keeps the default weight decay (replacing the dict would fall back to PyTorch's defaults, e.g. AdamW's
    weight decay 0.01 instead of BRC's 1e-4). Another optimiser class takes the user's arguments alone: the defaults
    are the default optimiser's."""
    if not issubclass(optimizer_class, default_class):
        return dict(user_kwargs or {})
    return {**defaults, **(user_kwargs or {})}


class TaskConditionedNetwork(BaseModel):
    """Base of BRC's value networks: a features extractor on the observation part, the task embedding it owns
    (and trains, through its loss) and the categorical support ``linspace(v_min, v_max, n_atoms)``.

    Subclasses feed :meth:`task_inputs` into their BroNet.

    :param observation_space: Observation space (a multi-task ``Dict(observation, task_id)`` or a plain space)
    :param action_space: Action space
    :param features_extractor: Network encoding the observation part
    :param normalize_images: Whether to divide image observations by 255
    :param n_atoms: Number of atoms of the categorical distribution
    :param v_min: Lowest atom
    :param v_max: Highest atom
    :param num_tasks: Number of tasks; above 1 a task embedding is learned
    :param embedding_dim: Size of the task embedding
    :param embedding_norm: ``"l2"`` (reference code) or ``"l1"`` (paper) normalisation of the embedding
    """

    features_extractor: BaseFeaturesExtractor
    support: th.Tensor  # a registered buffer

    def __init__(
        self,
        observation_space: spaces.Space,
        action_space: spaces.Space,
        features_extractor: BaseFeaturesExtractor,
        normalize_images: bool = True,
        n_atoms: int = 101,
        v_min: float = -10.0,
        v_max: float = 10.0,
        num_tasks: int = 1,
        embedding_dim: int = 32,
        embedding_norm: str = "l2",
    ):
        check_categorical_support(n_atoms, v_min, v_max)
        # SB3 preprocesses (e.g. scales images) with the space of what the extractor encodes
        super().__init__(
            observation_part(observation_space),
            action_space,
            features_extractor=features_extractor,
            normalize_images=normalize_images,
        )
        self.n_atoms, self.num_tasks = n_atoms, num_tasks
        # SB3's preprocessing of a Box: /255 for images. Decided here once: SB3's image test reads the space's bounds
        # with NumPy at every call, which a compiled update cannot trace
        part = self.observation_space
        self.scaled_box = normalize_images and is_image_space(part) if isinstance(part, spaces.Box) else None
        self.register_buffer("support", th.linspace(v_min, v_max, n_atoms))
        self.task_embedding = TaskEmbedding(num_tasks, embedding_dim, embedding_norm) if num_tasks > 1 else None
        # Input size of the BroNet without the subclass's own extra inputs (e.g. the critic's action)
        self.task_input_dim = features_extractor.features_dim + (embedding_dim if num_tasks > 1 else 0)

    def extract_features(self, obs: PyTorchObs, features_extractor: BaseFeaturesExtractor) -> th.Tensor:
        """SB3's ``extract_features``, with the preprocessing of a Box (float, /255 for images) decided at construction."""
        if self.scaled_box is None:
            return super().extract_features(obs, features_extractor)
        assert isinstance(obs, th.Tensor)  # a Box's observation
        return features_extractor(obs.float() / 255.0 if self.scaled_box else obs.float())

    def task_inputs(self, obs: PyTorchObs, *extra: th.Tensor) -> th.Tensor:
        """``concat(features, *extra, task embedding)``: the BroNet input (the reference's order for the critic)."""
        observation, task_ids = split_task_observation(obs)
        inputs = [self.extract_features(observation, self.features_extractor), *extra]
        if self.task_embedding is not None:
            inputs.append(self.task_embedding(task_ids))
        return th.cat(inputs, dim=-1)

    def add_tasks(self, count: int, new_rows: str) -> None:
        """Grow the embedding table by ``count`` tasks (transfer); see :meth:`TaskEmbedding.add_rows`."""
        if self.task_embedding is None:
            raise ValueError("This network has no task embedding (single-task model): there is no table to grow.")
        self.task_embedding.add_rows(count, new_rows)
        self.num_tasks += count


def grow_task_embeddings(online: TaskConditionedNetwork, target: TaskConditionedNetwork, count: int, new_rows: str) -> None:
    """Grow the embedding tables of a value network and its target by ``count`` tasks (transfer); the target's new
    rows copy the online ones, so both start equal on the new tasks as they did at construction."""
    old_tasks = online.num_tasks
    online.add_tasks(count, new_rows)
    target.add_tasks(count, new_rows)
    assert online.task_embedding is not None and target.task_embedding is not None  # add_tasks raised without one
    with th.no_grad():
        target.task_embedding.embedding.weight[old_tasks:] = online.task_embedding.embedding.weight[old_tasks:]
