"""Small shared helpers."""

import contextlib
import os
import pathlib
from collections.abc import Callable, Iterator
from typing import IO, Any, NamedTuple, TypeVar, cast

import numpy as np
import torch as th
from stable_baselines3.common.off_policy_algorithm import OffPolicyAlgorithm
from stable_baselines3.common.type_aliases import TrainFreq

# The package version, written into every save so that a later version can tell which layout wrote it
SB3_BRC_VERSION = (pathlib.Path(__file__).parents[1] / "version.txt").read_text().strip()

#: A replay sample type (SB3's ``ReplayBufferSamples`` and the like).
Samples = TypeVar("Samples", bound=NamedTuple)

NON_FINITE_HINT = "Fix the environment, or wrap it (e.g. clip or replace non-finite values) before training."


def check_finite(name: str, values: np.ndarray, hint: str, env_indices: list[int] | None = None) -> None:
    """Raise a ``ValueError`` naming ``name``, the bad entries and a fix when ``values`` holds NaN or inf.

    :param name: What the values are ("reward", "observation", ...)
    :param values: Array to check; the first axis is the environment index
    :param hint: How to fix it, appended to the message
    :param env_indices: Environment index of each row, when rows are not all environments in order
    """
    values = np.atleast_1d(np.asarray(values))
    if values.dtype.kind not in "fc" or np.isfinite(values).all():
        return
    rows = np.flatnonzero(~np.isfinite(values.reshape(len(values), -1)).all(axis=1))
    envs = sorted(int(env_indices[r]) if env_indices is not None else int(r) for r in rows)
    raise ValueError(f"Non-finite {name} (NaN or inf) from environment index(es) {envs}: {values.tolist()!s:.200}. {hint}")


def _map_fields(function: Callable[..., Any], *samples: Samples) -> Samples:
    """Apply ``function`` to every field of one or more replay samples of one type (Dict observations per key)."""

    def apply(*values: Any) -> Any:
        if values[0] is None:
            return None
        if isinstance(values[0], dict):
            return {key: function(*(value[key] for value in values)) for key in values[0]}
        return function(*values)

    fields = samples[0]._asdict()
    return samples[0]._replace(**{field: apply(*(getattr(s, field) for s in samples)) for field in fields})


def select_rows(samples: Samples, rows: Any) -> Samples:
    """The ``rows`` (slice or index tensor) of every field of a replay sample (Dict observations included)."""
    return _map_fields(lambda value: value[rows], samples)


def concat_samples(first: Samples, second: Samples) -> Samples:
    """Two replay samples of one type stacked into one batch."""
    return _map_fields(lambda a, b: th.cat([a, b]), first, second)


def set_training_flags(module: th.nn.Module, mode: bool) -> None:
    """``module.train(mode)``: the same flags set, by a cheaper walk. ``Module.train`` goes through ``children()`` and
    ``Module.__setattr__`` for each submodule, and SB3 switches a policy's mode three times per env step (``predict``,
    ``collect_rollouts``, ``train()``); a module whose class has its own ``train`` is left to it."""
    if type(module).train is not th.nn.Module.train:
        module.train(mode)
        return
    module.__dict__["training"] = mode  # where Module.__setattr__ puts a plain attribute
    for child in module._modules.values():
        if child is not None:
            set_training_flags(child, mode)


def native_bf16_matmul(device: th.device) -> bool:
    """Whether ``device`` multiplies bf16 matrices in hardware: a CUDA GPU of compute capability 8.0 or newer, or a
    CPU with AVX512-BF16 or AMX. Elsewhere PyTorch emulates bf16 matmuls, far slower than float32 (about 70x for a
    BRC update on an AVX2-only AMD EPYC), so bf16 autocast only pays off where this is ``True``."""
    if device.type == "cuda":
        return th.cuda.is_bf16_supported(including_emulation=False)
    if device.type == "cpu":
        return th.cpu._is_avx512_bf16_supported() or th.cpu._is_amx_tile_supported()
    return True  # other accelerators: autocast picks what the backend supports


@contextlib.contextmanager
def no_weight_grads(module: th.nn.Module) -> Iterator[None]:
    """Within the block, gradients flow through ``module`` to its inputs but its parameters get none: their
    ``requires_grad`` is off meanwhile, so autograd skips the weight gradients altogether. Frozen parameters stay
    frozen afterwards."""
    trainable = [param for param in module.parameters() if param.requires_grad]
    for param in trainable:
        param.requires_grad_(False)
    try:
        yield
    finally:
        for param in trainable:
            param.requires_grad_(True)


@contextlib.contextmanager
def atomic_file(path: str | pathlib.Path, mode: str = "wb") -> Iterator[IO[Any]]:
    """Open ``path`` for an atomic write: the block writes a temporary file next to it (named after this process),
    which is flushed to disk and renamed over ``path`` when the block ends. A crash or an error mid-write leaves the
    previous file, never half of one.

    :param path: File to write
    :param mode: ``"wb"`` or ``"w"``
    """
    path = pathlib.Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, mode) as file:
            yield file
            file.flush()
            os.fsync(file.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def remaining_updates(model: OffPolicyAlgorithm, total_timesteps: int) -> int:
    """Gradient updates ``model.learn()`` still does until ``total_timesteps`` env steps (all tasks together)."""
    start = max(model.num_timesteps, model.learning_starts)
    vector_steps = max(total_timesteps - start, 0) // model.n_envs
    frequency = cast(TrainFreq, model.train_freq).frequency  # SB3 made it a TrainFreq
    per_call = model.gradient_steps if model.gradient_steps >= 0 else frequency * model.n_envs
    return vector_steps // frequency * per_call
