"""Crash-safe checkpoints: model, optimisers, alpha, normaliser, replay buffer and RNG states.

A checkpoint is a directory ``<root>/step-<N>`` written under a temporary name and renamed into place when
complete; ``<root>/latest`` (replaced atomically) names the newest one. Its ``checkpoint.json`` records the step
count, the algorithm and the sb3-brc version that wrote it (as does its ``model.zip``), and marks it complete: a
directory without one is never loaded. A crash while saving leaves the previous checkpoint untouched, so a run can
always resume from the last complete checkpoint.
"""

import contextlib
import json
import os
import pickle
import random
import shutil
import warnings
from collections.abc import Callable, Iterable, Iterator
from typing import Any, cast

import numpy as np
import torch as th
from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.type_aliases import GymEnv

from sb3_brc.common.buffers import end_episodes_at_newest
from sb3_brc.common.multitask import MultiTaskAlgorithm
from sb3_brc.common.utils import SB3_BRC_VERSION, atomic_file
from sb3_brc.dqn.dqn import BRCDQN
from sb3_brc.sac.sac import BRCSAC

ALGORITHMS: dict[str, type[MultiTaskAlgorithm]] = {"BRCSAC": BRCSAC, "BRCDQN": BRCDQN}

#: The file naming the newest complete checkpoint of a root
LATEST = "latest"
#: A checkpoint directory's metadata, written last: its presence marks the checkpoint complete
CHECKPOINT_META = "checkpoint.json"
#: Checkpoint directories are ``step-<num_timesteps>``
STEP_PREFIX = "step-"


def checkpoint_step(name: str) -> int | None:
    """``N`` of a checkpoint directory named ``step-N``, else ``None``."""
    digits = name[len(STEP_PREFIX) :]
    return int(digits) if name.startswith(STEP_PREFIX) and digits.isdigit() else None


def by_step(names: Iterable[str]) -> list[str]:
    """The checkpoint directory names (``step-N``) among ``names``, oldest first."""
    steps = {name: step for name in names if (step := checkpoint_step(name)) is not None}
    return sorted(steps, key=steps.__getitem__)


def set_latest(root: str, name: str) -> None:
    """Name the checkpoint ``name`` (a directory under ``root``) the newest one (an atomic write)."""
    with atomic_file(os.path.join(root, LATEST)) as file:
        file.write(name.encode())


def rng_state() -> dict[str, Any]:
    """The Python, NumPy, PyTorch (and CUDA) random generator states."""
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": th.get_rng_state()}
    if th.cuda.is_available():
        state["cuda"] = th.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore the generator states of :func:`rng_state`."""
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    th.set_rng_state(state["torch"])
    if "cuda" in state and th.cuda.is_available():
        th.cuda.set_rng_state_all(state["cuda"])


def save_checkpoint(model: MultiTaskAlgorithm, root: str, replay_buffer: bool = True, keep: int = 1) -> str:
    """Write a complete checkpoint of ``model`` under ``root`` and return its directory.

    :param model: The model (its policy, optimisers, temperature and return normaliser go into ``model.zip``)
    :param root: Checkpoint root directory
    :param replay_buffer: Also save the replay buffer (large, but resuming without it restarts the data)
    :param keep: How many complete checkpoints to keep (older ones are deleted after the new one is in place)
    """
    if keep < 1:
        raise ValueError(f"keep counts the checkpoints left after this one is written: >= 1, got {keep}")
    os.makedirs(root, exist_ok=True)
    name = f"{STEP_PREFIX}{model.num_timesteps}"
    final_dir = os.path.join(root, name)
    tmp_dir = os.path.join(root, f".{name}.{os.getpid()}.tmp")
    shutil.rmtree(tmp_dir, ignore_errors=True)
    os.makedirs(tmp_dir)
    try:
        model.save(os.path.join(tmp_dir, "model.zip"))
        if replay_buffer and model.replay_buffer is not None:
            model.save_replay_buffer(os.path.join(tmp_dir, "replay_buffer.pkl"))
        with open(os.path.join(tmp_dir, "rng.pkl"), "wb") as file:
            pickle.dump(rng_state(), file)
        meta = dict(
            num_timesteps=model.num_timesteps,
            replay_buffer=replay_buffer,
            algorithm=type(model).__name__,
            format=1,
            sb3_brc_version=SB3_BRC_VERSION,
        )
        with open(os.path.join(tmp_dir, CHECKPOINT_META), "w") as file:
            json.dump(meta, file)
        shutil.rmtree(final_dir, ignore_errors=True)
        os.replace(tmp_dir, final_dir)
    finally:
        shutil.rmtree(tmp_dir, ignore_errors=True)
    set_latest(root, name)
    for old in by_step(os.listdir(root))[:-keep]:
        shutil.rmtree(os.path.join(root, old), ignore_errors=True)
    return final_dir


def latest_checkpoint(root: str) -> str | None:
    """Directory of the newest complete checkpoint under ``root``, or ``None``. The ``latest`` pointer names it; when
    the pointer is missing, garbled or names no complete checkpoint, the complete ``step-N`` with the largest ``N``
    is used, with a warning."""

    def complete(name: str) -> bool:
        return checkpoint_step(name) is not None and os.path.exists(os.path.join(root, name, CHECKPOINT_META))

    pointer = os.path.join(root, LATEST)
    try:
        with open(pointer, encoding="utf-8") as file:
            named = file.read().strip()
    except (OSError, UnicodeDecodeError):
        named = ""
    if complete(named):
        return os.path.join(root, named)
    steps = by_step(name for name in os.listdir(root) if complete(name)) if os.path.isdir(root) else []
    if not steps:
        return None
    newest = steps[-1]
    problem = "is missing" if not os.path.exists(pointer) else f"names {named!r}, not a complete checkpoint"
    warnings.warn(f"{pointer} {problem}: using the newest complete checkpoint, {newest}.", stacklevel=2)
    return os.path.join(root, newest)


def checkpoint_timesteps(root: str) -> int:
    """``num_timesteps`` of the newest complete checkpoint under ``root`` (0 when there is none)."""
    path = latest_checkpoint(root)
    if path is None:
        return 0
    with open(os.path.join(path, CHECKPOINT_META)) as file:
        return int(json.load(file)["num_timesteps"])


def load_checkpoint(
    root: str, env: GymEnv, algorithm: type[BaseAlgorithm] | None = None, **load_kwargs: Any
) -> MultiTaskAlgorithm:
    """Restore the newest checkpoint under ``root`` for ``env``: model, replay buffer and RNG states (with a warning
    when another sb3-brc version wrote it).

    Continue with ``model.learn(total_timesteps - model.num_timesteps, reset_num_timesteps=False)`` (the
    schedule and step count carry on from the checkpoint).

    :param root: Checkpoint root directory
    :param env: The env to continue on
    :param algorithm: The model's class (default: the BRC algorithm the checkpoint names; give it for other
        off-policy SB3 algorithms, whose checkpoints :func:`save_checkpoint` writes the same way)
    :param load_kwargs: Further keyword arguments of ``algorithm.load`` (``device``)
    """
    path = latest_checkpoint(root)
    if path is None:
        raise FileNotFoundError(f"No complete checkpoint under {root!r}: nothing to resume from.")
    with open(os.path.join(path, CHECKPOINT_META)) as file:
        meta = json.load(file)
    if algorithm is None:
        algorithm = ALGORITHMS[meta.get("algorithm", "BRCSAC")]  # checkpoints before BRCDQN: BRCSAC
    written_by = meta.get("sb3_brc_version")  # recorded since 0.2.0; model.zip's own check refuses older layouts
    if written_by is not None and written_by != SB3_BRC_VERSION:
        warnings.warn(
            f"Resuming from {path}, written by sb3-brc {written_by}, with sb3-brc {SB3_BRC_VERSION}: training continues "
            "with this version's code (see CHANGELOG.md for what changed)."
        )
    # A BRCSAC / BRCDQN, or an SB3 off-policy baseline (SAC, TQC, CrossQ) of the benchmark grid
    model = cast(MultiTaskAlgorithm, algorithm.load(os.path.join(path, "model.zip"), env=env, **load_kwargs))
    buffer_path, rng_path = os.path.join(path, "replay_buffer.pkl"), os.path.join(path, "rng.pkl")
    if os.path.exists(buffer_path):
        with _unpickling(buffer_path):
            model.load_replay_buffer(buffer_path)
        assert model.replay_buffer is not None  # just loaded
        end_episodes_at_newest(model.replay_buffer)  # the loaded model resets its envs: new episodes follow
    with _unpickling(rng_path), open(rng_path, "rb") as file:
        set_rng_state(pickle.load(file))
    return model


@contextlib.contextmanager
def _unpickling(path: str) -> Iterator[None]:
    """A clear error naming ``path`` for a checkpoint file that cannot be unpickled (truncated or corrupted)."""
    try:
        yield
    except (pickle.UnpicklingError, EOFError, ValueError, AttributeError, ImportError, IndexError, KeyError) as error:
        raise ValueError(
            f"Cannot resume from {os.path.dirname(path)}: {os.path.basename(path)} is truncated or corrupted "
            f"({type(error).__name__}: {error}). Move that checkpoint directory away to resume from an earlier one, "
            "or start the run over."
        ) from error


class CheckpointCallback(BaseCallback):
    """Checkpoint every ``save_freq`` env steps per task (vector steps), and at the end of training.

    A checkpoint due at a step is written once that step is complete: its transition stored and its updates
    done (SB3 calls ``on_step`` in between), so the resumed run neither lacks nor repeats anything.

    :param root: Checkpoint root directory
    :param save_freq: Env steps per task between checkpoints
    :param replay_buffer: Include the replay buffer
    :param verbose: Print a line per checkpoint when 1
    :param on_save: Called with each checkpoint's directory once it is complete (to copy it elsewhere, say)
    """

    def __init__(
        self,
        root: str,
        save_freq: int,
        replay_buffer: bool = True,
        verbose: int = 0,
        on_save: Callable[[str], None] | None = None,
    ):
        super().__init__(verbose)
        if save_freq < 1:
            raise ValueError(f"save_freq counts env steps per task between checkpoints: >= 1, got {save_freq}")
        self.root, self.save_freq, self.replay_buffer, self.on_save = root, save_freq, replay_buffer, on_save
        self.saved_at: int | None = None
        self.due = False

    def _on_step(self) -> bool:
        # Scheduled on the step count, not on calls, so a resumed run keeps the same schedule
        if (self.num_timesteps // self.training_env.num_envs) % self.save_freq == 0:
            self.due = True
        return True

    def _on_rollout_start(self) -> None:
        # The previous rollout's transitions are stored and its train() call is done
        if self.due:
            self._save()

    def _on_training_end(self) -> None:
        if self.saved_at != self.model.num_timesteps:  # not twice when the last rollout's start saved
            self._save()

    def _save(self) -> None:
        path = save_checkpoint(cast(MultiTaskAlgorithm, self.model), self.root, self.replay_buffer)  # a BRCSAC or BRCDQN
        self.saved_at, self.due = self.model.num_timesteps, False
        if self.verbose:
            print(f"checkpoint: {path}")
        if self.on_save is not None:
            self.on_save(path)
