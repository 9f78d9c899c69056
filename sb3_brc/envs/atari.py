"""Atari (ALE) games for multi-game BRC: standard preprocessing and the 18-action union.

Preprocessing (DQN and DrQ(eps) conventions): frame skip 4 with max-pooling of the last two
frames, 84x84 grayscale, up to 30 no-op starts, a stack of the last 4 frames, no sticky actions by default,
and loss of a life ends the episode *for training only* (the game itself continues, as in DQN; evaluation
plays whole games). Rewards are not clipped: BRCDQN normalises returns per task instead.
"""

import functools
from collections.abc import Callable
from typing import cast

import gymnasium as gym
from gymnasium import spaces
from stable_baselines3.common.atari_wrappers import EpisodicLifeEnv
from stable_baselines3.common.monitor import Monitor

from sb3_brc.envs.scores import ATARI_SCORES, atari_game
from sb3_brc.envs.tasks import require

# ALE's full action set; a game's minimal action set is a subset, named the same way. Action ``k`` of the
# union space means the same thing in every game (1 is FIRE, 3 is RIGHT, ...).
FULL_ACTION_MEANINGS = [
    "NOOP", "FIRE", "UP", "RIGHT", "LEFT", "DOWN", "UPRIGHT", "UPLEFT", "DOWNRIGHT", "DOWNLEFT",
    "UPFIRE", "RIGHTFIRE", "LEFTFIRE", "DOWNFIRE", "UPRIGHTFIRE", "UPLEFTFIRE", "DOWNRIGHTFIRE", "DOWNLEFTFIRE",
]  # fmt: skip


ATARI_5 = ["Pong", "Breakout", "Boxing", "Freeway", "MsPacman"]
ATARI_100K = [game for game in ATARI_SCORES if game not in ("BeamRider", "Enduro", "SpaceInvaders")]


def legal_union_actions(env: gym.Env) -> tuple[list[int], int]:
    """The union-space ids of a discrete task's actions and the union's size: ALE games map their minimal
    action set into ALE's 18 full actions by name; any other ``Discrete(n)`` task uses ids ``0..n-1``."""
    unwrapped = env.unwrapped
    if hasattr(unwrapped, "ale") and hasattr(unwrapped, "get_action_meanings"):
        return [FULL_ACTION_MEANINGS.index(m) for m in unwrapped.get_action_meanings()], len(FULL_ACTION_MEANINGS)
    n = int(cast(spaces.Discrete, env.action_space).n)
    return list(range(n)), n


def make_atari(
    game: str,
    training: bool = True,
    frame_stack: int = 4,
    noop_max: int = 30,
    sticky_actions: float = 0.0,
    max_frames: int = 108_000,
) -> gym.Env:
    """One preprocessed ALE game.

    :param game: Game name (``"Pong"``) or ALE id (``"ALE/Pong-v5"``)
    :param training: End the episode when a life is lost (the game continues after the reset); ``False`` for
        evaluation (whole games)
    :param frame_stack: Number of stacked frames
    :param noop_max: Maximum number of no-op actions at the start of a game
    :param sticky_actions: ALE's ``repeat_action_probability`` (0: deterministic, the DrQ(eps) setting)
    :param max_frames: Emulator frames per game before truncation (ALE's 108k = 30 minutes)
    :return: An env with ``Box(0, 255, (frame_stack, 84, 84), uint8)`` observations and the game's minimal
        action set; ``Monitor`` inside records whole-game returns
    """
    ale_py = require("ale_py")
    require("cv2")
    gym.register_envs(ale_py)
    game = atari_game(game)
    env = gym.make(
        f"ALE/{game}-v5", frameskip=1, repeat_action_probability=sticky_actions, max_num_frames_per_episode=max_frames
    )
    env = gym.wrappers.AtariPreprocessing(env, noop_max=noop_max, frame_skip=4, screen_size=84, grayscale_obs=True)
    env = Monitor(env)  # inside the life-loss wrapper: episode statistics are whole games
    if training:
        env = EpisodicLifeEnv(env)
    return gym.wrappers.FrameStackObservation(env, frame_stack)


def atari_factory(game: str, training: bool = True, **kwargs) -> Callable[[], gym.Env]:
    """A picklable factory of :func:`make_atari` (for ``SubprocVecEnv``)."""
    return functools.partial(make_atari, game, training, **kwargs)
