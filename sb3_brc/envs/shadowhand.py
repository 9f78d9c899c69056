"""ShadowHand in-hand rotation as the BRC paper trains on it.

Two sources of tasks, both gymnasium-robotics' ``MujocoManipulateEnv`` (Shadow hand, Dict observation with
``observation`` 61, ``achieved_goal`` 7 and ``desired_goal`` 7 values, 20 actions in [-1, 1], 100-step episodes,
sparse reward -1/0 with ``info["is_success"]``):

- gymnasium-robotics' own ``HandManipulate*`` ids (the ``shadowhand`` extra installs it);
- the BRC paper's 114 objects (85 training, 29 held out), ``dex_envs`` of the reference repository
  (``naumix/BiggerRegularizedCategorical``): ``import dex_envs`` registers ``<object>-rotate-v1`` (z-rotation target)
  for each object whose model it ships. The reference builds ``gym.make(f"{obj}-rotate-v1", reward_type="sparse")``.

The agent sees ``observation`` followed by ``desired_goal`` (68 values), as the reference flattens these envs; the
achieved goal is left out (the object's pose is part of ``observation`` already). The score is the success rate.
"""

import importlib
from collections.abc import Sequence
from typing import cast

import gymnasium as gym
import numpy as np
from gymnasium import spaces

# Score kind of ShadowHand tasks (sb3_brc.envs.scores: the success rate)
SHADOWHAND_KIND = "shadowhand"

# gymnasium-robotics' rotation tasks (sparse reward, no touch sensors)
SHADOWHAND_TASKS = [
    "HandManipulateBlockRotateZ-v1",
    "HandManipulateBlockRotateParallel-v1",
    "HandManipulateBlockRotateXYZ-v1",
    "HandManipulateEggRotate-v1",
    "HandManipulatePenRotate-v1",
]

#: The BRC paper's 85 multi-task training objects (the reference's ``jaxrl/env_names.py``)
#: :meta hide-value:
SHADOWHAND_TRAIN_OBJECTS = [
    "e_toy_airplane", "knife", "flat_screwdriver", "elephant", "apple", "scissors", "i_cups", "cup", "foam_brick",
    "pudding_box", "wristwatch", "padlock", "power_drill", "binoculars", "b_lego_duplo", "ps_controller", "mouse",
    "hammer", "f_lego_duplo", "piggy_bank", "can", "extra_large_clamp", "peach", "a_lego_duplo", "racquetball",
    "tuna_fish_can", "a_cups", "pan", "strawberry", "d_toy_airplane", "wood_block", "small_marker", "sugar_box", "ball",
    "torus", "i_toy_airplane", "chain", "j_cups", "c_toy_airplane", "airplane", "nine_hole_peg_test", "water_bottle",
    "c_cups", "medium_clamp", "large_marker", "h_cups", "b_colored_wood_blocks", "j_lego_duplo", "f_toy_airplane",
    "toothbrush", "tennis_ball", "mug", "sponge", "k_lego_duplo", "phillips_screwdriver", "f_cups", "c_lego_duplo",
    "d_marbles", "d_cups", "camera", "d_lego_duplo", "golf_ball", "k_toy_airplane", "b_cups", "softball", "wine_glass",
    "chips_can", "cube", "master_chef_can", "alarm_clock", "gelatin_box", "h_lego_duplo", "baseball", "light_bulb",
    "banana", "rubber_duck", "headphones", "i_lego_duplo", "b_toy_airplane", "pitcher_base", "j_toy_airplane",
    "g_lego_duplo", "cracker_box", "orange", "e_cups",
]  # fmt: skip

#: The BRC paper's 29 held-out objects of its transfer experiments (the reference's ``jaxrl/env_names.py``)
#: :meta hide-value:
SHADOWHAND_TEST_OBJECTS = [
    "rubiks_cube", "dice", "bleach_cleanser", "pear", "e_lego_duplo", "pyramid", "stapler", "flashlight", "large_clamp",
    "a_toy_airplane", "tomato_soup_can", "fork", "cell_phone", "m_lego_duplo", "toothpaste", "flute", "stanford_bunny",
    "a_marbles", "potted_meat_can", "timer", "lemon", "utah_teapot", "train", "g_cups", "l_lego_duplo", "bowl",
    "door_knob", "mustard_bottle", "plum",
]  # fmt: skip

# dex_envs registers its tasks under this suffix (the reference's version "v1": z-rotation, sparse reward)
ROTATE_SUFFIX = "-rotate-v1"

HOW_TO_GET_OBJECTS = (
    "The BRC paper's ShadowHand objects come with its reference code: clone "
    "https://github.com/naumix/BiggerRegularizedCategorical and put the repository root on PYTHONPATH "
    "(`import dex_envs` must work), with gymnasium-robotics installed: pip install 'sb3-brc[shadowhand]'."
)


def object_task(name: str) -> str:
    """The Gymnasium id of a BRC object (``"apple"`` -> ``"apple-rotate-v1"``)."""
    return name + ROTATE_SUFFIX


def is_shadowhand_task(task: str) -> bool:
    """Whether ``task`` is a ShadowHand id: a gymnasium-robotics ``HandManipulate*`` id or a BRC object's
    ``<object>-rotate-v1``."""
    objects = SHADOWHAND_TRAIN_OBJECTS + SHADOWHAND_TEST_OBJECTS
    return task.startswith("HandManipulate") or (task.endswith(ROTATE_SUFFIX) and task.removesuffix(ROTATE_SUFFIX) in objects)


def _import_gymnasium_robotics() -> None:
    try:
        gym.register_envs(importlib.import_module("gymnasium_robotics"))
    except ImportError as error:
        raise ImportError("ShadowHand tasks need gymnasium-robotics: pip install 'sb3-brc[shadowhand]'") from error


def available_objects() -> list[str]:
    """The BRC objects whose task ``dex_envs`` registered (empty when ``dex_envs`` or gymnasium-robotics is missing)."""
    try:
        _import_gymnasium_robotics()
        importlib.import_module("dex_envs")
    except ImportError:
        return []
    return [name for name in SHADOWHAND_TRAIN_OBJECTS + SHADOWHAND_TEST_OBJECTS if object_task(name) in gym.registry]


def check_objects(objects: Sequence[str]) -> None:
    """Raise one ``ImportError`` naming every object of ``objects`` that cannot be built, and how to get them.

    :param objects: BRC object names (``"apple"``)
    :raises ValueError: For names that are not BRC objects
    """
    unknown = [name for name in objects if name not in SHADOWHAND_TRAIN_OBJECTS + SHADOWHAND_TEST_OBJECTS]
    if unknown:
        raise ValueError(f"Not BRC ShadowHand objects: {unknown} (see SHADOWHAND_TRAIN_OBJECTS, SHADOWHAND_TEST_OBJECTS)")
    available = set(available_objects())
    missing = [name for name in objects if name not in available]
    if missing:
        raise ImportError(
            f"{len(missing)} of {len(objects)} ShadowHand objects are not available: {', '.join(missing)}. "
            f"{HOW_TO_GET_OBJECTS}"
        )


class GoalObservation(gym.ObservationWrapper):
    """A goal-conditioned env's ``observation`` followed by its ``desired_goal``, in one vector.

    :param env: An env with Dict observations holding ``observation`` and ``desired_goal``
    """

    def __init__(self, env: gym.Env):
        super().__init__(env)
        parts = [cast(spaces.Box, cast(spaces.Dict, env.observation_space)[key]) for key in ("observation", "desired_goal")]
        self.observation_space = spaces.Box(
            np.concatenate([part.low for part in parts]), np.concatenate([part.high for part in parts]), dtype=parts[0].dtype
        )

    def observation(self, observation: dict[str, np.ndarray]) -> np.ndarray:
        return np.concatenate([observation["observation"], observation["desired_goal"]])


def make_shadowhand(env_id: str) -> gym.Env:
    """A ShadowHand task as the BRC paper trains on it (observation + desired goal, sparse reward, 100 steps).

    Imports the packages that register the id first, so that subprocess workers can build it.

    :param env_id: A gymnasium-robotics ``HandManipulate*`` id or a BRC object's ``<object>-rotate-v1``
    """
    if env_id.startswith("HandManipulate"):
        _import_gymnasium_robotics()
        return GoalObservation(gym.make(env_id))
    check_objects([env_id.removesuffix(ROTATE_SUFFIX)])  # imports gymnasium-robotics and dex_envs
    return GoalObservation(gym.make(env_id, reward_type="sparse"))
