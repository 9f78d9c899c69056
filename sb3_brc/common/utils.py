"""Small shared helpers."""

from typing import Any, NamedTuple, TypeVar

import numpy as np

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


def select_rows(samples: Samples, rows: Any) -> Samples:
    """The ``rows`` (slice or index tensor) of every field of a replay sample (Dict observations included)."""

    def take(value: Any) -> Any:
        if value is None:
            return None
        return {key: part[rows] for key, part in value.items()} if isinstance(value, dict) else value[rows]

    return samples._replace(**{field: take(value) for field, value in samples._asdict().items()})
