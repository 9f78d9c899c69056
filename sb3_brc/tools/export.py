"""Share a trained policy safely: tensors plus a JSON config, loadable without unpickling any Python object.

SB3's ``.zip`` saves cloudpickle Python objects (spaces, schedules, classes), so loading one from a stranger
can run arbitrary code. ``export_policy`` writes ``policy.pt`` (a state dict: tensors only, read back with
``torch.load(weights_only=True)``) and ``policy.json`` (spaces and architecture as plain JSON).
"""

import dataclasses
import json
import os
from typing import Any, cast

import numpy as np
import torch as th
from gymnasium import spaces
from torch import nn

from sb3_brc.common.task_layout import TaskLayout, is_task_observation_space, observation_part, task_observation_space
from sb3_brc.common.utils import atomic_file
from sb3_brc.sac.policies import BRCPolicy
from sb3_brc.sac.sac import BRCSAC

# Version 2: multi-task policies take Dict(observation, task_id) observations (sb3-brc 0.2)
FORMAT = "sb3-brc-policy/2"


def _box_to_json(space: spaces.Space) -> dict[str, Any]:
    if not isinstance(space, spaces.Box):
        raise TypeError(f"export_policy supports Box observation and action spaces (MlpPolicy), got {space}")
    return dict(low=space.low.tolist(), high=space.high.tolist(), shape=list(space.shape), dtype=str(space.dtype))


def _box_from_json(data: dict[str, Any]) -> spaces.Box:
    dtype = np.dtype(data["dtype"])
    low = np.array(data["low"], dtype=dtype).reshape(data["shape"])
    high = np.array(data["high"], dtype=dtype).reshape(data["shape"])
    return spaces.Box(low, high, dtype=dtype)


def export_policy(model: BRCSAC, directory: str) -> None:
    """Write ``directory/policy.pt`` (weights) and ``directory/policy.json`` (config) for :func:`load_exported_policy`."""
    if not isinstance(model, BRCSAC):
        raise TypeError(f"export_policy exports BRCSAC policies, got a {type(model).__name__}: share its .zip instead.")
    policy = model.policy
    if policy.features_extractor_class.__name__ != "FlattenExtractor":
        raise TypeError("export_policy supports MlpPolicy (flat Box observations) only; share the .zip for others.")
    activation = cast(type[nn.Module], policy.net_args["activation_fn"])
    if getattr(nn, activation.__name__, None) is not activation:
        raise TypeError(f"export_policy needs an activation from torch.nn, got {activation}")
    config = dict(
        format=FORMAT,
        observation_space=_box_to_json(observation_part(policy.observation_space)),
        task_ids=is_task_observation_space(policy.observation_space),
        action_space=_box_to_json(policy.action_space),
        net_arch=policy.net_arch,
        activation_fn=activation.__name__,
        n_critics=policy.critic.n_critics,
        n_atoms=policy.n_atoms,
        v_min=policy.v_min,
        v_max=policy.v_max,
        num_tasks=policy.num_tasks,
        embedding_dim=policy.embedding_dim,
        embedding_norm=policy.embedding_norm,
        task_layout=None if model.task_layout is None else dataclasses.asdict(model.task_layout),
    )
    os.makedirs(directory, exist_ok=True)
    with atomic_file(os.path.join(directory, "policy.pt")) as file:
        th.save({key: value.cpu() for key, value in policy.state_dict().items()}, file)
    with atomic_file(os.path.join(directory, "policy.json"), "w") as file:
        json.dump(config, file, indent=2)


def load_exported_policy(directory: str, device: th.device | str = "cpu") -> BRCPolicy:
    """Rebuild an exported policy from JSON and tensors only (no unpickling). Use ``policy.predict(obs)``."""
    with open(os.path.join(directory, "policy.json")) as file:
        config = json.load(file)
    if config.get("format") != FORMAT:
        raise ValueError(f"{directory}/policy.json is not an sb3-brc policy export (format {config.get('format')!r})")
    observation_space = _box_from_json(config["observation_space"])
    policy = BRCPolicy(
        task_observation_space(observation_space) if config["task_ids"] else observation_space,
        _box_from_json(config["action_space"]),
        lambda _: 0.0,
        net_arch=config["net_arch"],
        activation_fn=getattr(nn, config["activation_fn"]),
        n_critics=config["n_critics"],
        n_atoms=config["n_atoms"],
        v_min=config["v_min"],
        v_max=config["v_max"],
        num_tasks=config["num_tasks"],
        embedding_dim=config["embedding_dim"],
        embedding_norm=config["embedding_norm"],
    )
    state = th.load(os.path.join(directory, "policy.pt"), map_location=device, weights_only=True)
    policy.load_state_dict(state)
    policy.set_training_mode(False)
    # The tasks it was trained on, for as_task_of (one task on its own env) and its error messages
    policy.task_layout = None if config.get("task_layout") is None else TaskLayout(**config["task_layout"])
    return policy.to(device)
