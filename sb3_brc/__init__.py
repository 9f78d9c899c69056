"""sb3-brc: BRC (Bigger, Regularized, Categorical) for Stable-Baselines3."""

import os

from sb3_brc.common.buffers import CompactNStepReplayBuffer, CompactReplayBuffer
from sb3_brc.common.callbacks import RewardNormalizationCallback
from sb3_brc.common.distributional import categorical_cross_entropy, categorical_projection
from sb3_brc.common.normalizer import ReturnNormalizer
from sb3_brc.common.torch_layers import BroNet, TaskEmbedding
from sb3_brc.dqn import BRCDQN, BRCDQNPolicy
from sb3_brc.envs.suites import SUITES, make_atari_suite, make_suite
from sb3_brc.envs.vec_env import DiscreteMultiTaskVecEnv, MultiTaskVecEnv
from sb3_brc.sac import BRCSAC, BRCPolicy
from sb3_brc.tools.checkpoint import CheckpointCallback, load_checkpoint, save_checkpoint
from sb3_brc.tools.diagnostics import DiagnosticsCallback, task_diagnostics
from sb3_brc.tools.evaluation import MultiTaskEvalCallback, evaluate_tasks

with open(os.path.join(os.path.dirname(__file__), "version.txt")) as file_handler:
    __version__ = file_handler.read().strip()

__all__ = [
    "BRCDQN",
    "BRCSAC",
    "SUITES",
    "BRCDQNPolicy",
    "BRCPolicy",
    "BroNet",
    "CheckpointCallback",
    "CompactNStepReplayBuffer",
    "CompactReplayBuffer",
    "DiagnosticsCallback",
    "DiscreteMultiTaskVecEnv",
    "MultiTaskEvalCallback",
    "MultiTaskVecEnv",
    "ReturnNormalizer",
    "RewardNormalizationCallback",
    "TaskEmbedding",
    "categorical_cross_entropy",
    "categorical_projection",
    "evaluate_tasks",
    "load_checkpoint",
    "make_atari_suite",
    "make_suite",
    "save_checkpoint",
    "task_diagnostics",
]
