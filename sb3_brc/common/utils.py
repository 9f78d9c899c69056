"""Small shared helpers."""

import numpy as np


def check_finite(name: str, values: np.ndarray, hint: str) -> None:
    """Raise a ``ValueError`` naming ``name``, the bad entries and a fix when ``values`` holds NaN or inf.

    :param name: What the values are ("reward", "observation", ...)
    :param values: Array to check; the first axis is the environment index
    :param hint: How to fix it, appended to the message
    """
    values = np.asarray(values)
    if values.dtype.kind not in "fc" or np.isfinite(values).all():
        return
    bad = np.argwhere(~np.isfinite(values.reshape(len(values), -1)) if values.ndim else ~np.isfinite(values[None]))
    envs = sorted({int(i) for i in bad[:, 0]})
    raise ValueError(f"Non-finite {name} (NaN or inf) from environment index(es) {envs}: {values.tolist()!s:.200}. {hint}")
