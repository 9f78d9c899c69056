"""sb3-brc: BRC (Bigger, Regularized, Categorical) for Stable-Baselines3."""

from sb3_brc.common.buffers import CompactNStepReplayBuffer, CompactReplayBuffer
from sb3_brc.common.distributional import categorical_cross_entropy, categorical_projection
from sb3_brc.common.normalization_callback import ReturnNormalizationCallback
from sb3_brc.common.normalizer import ReturnNormalization, ReturnNormalizer
from sb3_brc.common.task_layout import TaskLayout
from sb3_brc.common.torch_layers import BroNet, ImpalaCNN, TaskEmbedding
from sb3_brc.common.utils import SB3_BRC_VERSION
from sb3_brc.dqn import BRCDQN, BRCDQNPolicy
from sb3_brc.envs.suites import SUITES, make_atari_suite, make_suite
from sb3_brc.envs.vec_env import DiscreteMultiTaskVecEnv, MultiTaskVecEnv
from sb3_brc.envs.wrappers import as_task_of
from sb3_brc.sac import BRCSAC, BRCPolicy
from sb3_brc.tools.checkpoint import CheckpointCallback, load_checkpoint, save_checkpoint
from sb3_brc.tools.diagnostics import DiagnosticsCallback, task_diagnostics
from sb3_brc.tools.evaluation import MultiTaskEvalCallback, evaluate_tasks
from sb3_brc.tools.transfer import add_tasks, new_task_env

__version__ = SB3_BRC_VERSION

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
    "ImpalaCNN",
    "MultiTaskEvalCallback",
    "MultiTaskVecEnv",
    "ReturnNormalization",
    "ReturnNormalizationCallback",
    "ReturnNormalizer",
    "TaskEmbedding",
    "TaskLayout",
    "add_tasks",
    "as_task_of",
    "categorical_cross_entropy",
    "categorical_projection",
    "evaluate_tasks",
    "load_checkpoint",
    "make_atari_suite",
    "make_suite",
    "new_task_env",
    "save_checkpoint",
    "task_diagnostics",
]
