"""Categorical (C51-style) distributional pieces shared by every BRC algorithm."""

import torch as th


def at_least_fp32(x: th.Tensor) -> th.Tensor:
    """Half-precision tensors (from bf16 autocast) go to float32 before softmaxes and losses."""
    return x.float() if x.dtype in (th.bfloat16, th.float16) else x


def categorical_projection(probs: th.Tensor, target_atoms: th.Tensor, support: th.Tensor) -> th.Tensor:
    """Project a distribution with mass ``probs`` on shifted atoms ``target_atoms`` onto a fixed ``support``.

    Two-neighbour (linear) projection of C51: the target atoms are clipped to ``[v_min, v_max]``; atom ``j``
    at fractional position ``b_j = (Tz_j - v_min) / dz`` gives ``p_j * (u - b_j)`` to ``l = floor(b_j)`` and
    ``p_j * (b_j - l)`` to ``u = ceil(b_j)``. When ``b_j`` is an integer (``l == u``) the whole mass goes to
    ``l``; forgetting that case loses the mass (or, with ``u - l`` weights, double counts it).

    :param probs: ``(batch, n_atoms)`` probabilities of the source distribution
    :param target_atoms: ``(batch, n_atoms)`` positions of those probabilities (e.g. ``r + gamma * z``)
    :param support: ``(n_atoms,)`` evenly spaced target support ``linspace(v_min, v_max, n_atoms)``
    :return: ``(batch, n_atoms)`` projected probabilities on ``support``
    """
    n_atoms = support.shape[0]
    v_min, v_max = support[0], support[-1]
    delta_z = (v_max - v_min) / (n_atoms - 1)
    # Clamp the position too: rounding in (Tz - v_min) / dz can land a hair outside [0, n_atoms - 1]
    b = ((target_atoms.clamp(v_min, v_max) - v_min) / delta_z).clamp(0, n_atoms - 1)
    # A NaN position (from a diverged actor) must not index out of bounds; BRCSAC.train() reports the NaN
    b = th.nan_to_num(b, nan=0.0)
    lower = b.floor()
    upper = b.ceil()
    lower_mass = probs * (upper - b + (lower == upper).to(probs.dtype))
    upper_mass = probs * (b - lower)
    projected = th.zeros_like(probs)
    projected.scatter_add_(-1, lower.long(), lower_mass)
    projected.scatter_add_(-1, upper.long(), upper_mass)
    return projected


def categorical_cross_entropy(logits: th.Tensor, target_probs: th.Tensor) -> th.Tensor:
    """BRC critic loss: cross-entropy of each critic head against one shared target.

    ``-(target * log_softmax(logits)).sum(atoms).mean(batch).sum(critics)``

    :param logits: ``(batch, n_critics, n_atoms)`` critic logits
    :param target_probs: ``(batch, n_atoms)`` target distribution (no gradient)
    :return: scalar loss
    """
    log_probs = th.log_softmax(at_least_fp32(logits), dim=-1)
    return -(target_probs.unsqueeze(1) * log_probs).sum(-1).mean(0).sum()


def categorical_mean(logits: th.Tensor, support: th.Tensor) -> th.Tensor:
    """Expectation ``sum_j softmax(logits)_j * z_j`` of each distribution (over the last dimension).

    :param logits: ``(..., n_atoms)``
    :param support: ``(n_atoms,)``
    :return: ``(...)``
    """
    return th.softmax(at_least_fp32(logits), dim=-1) @ support


def expected_value(logits: th.Tensor, support: th.Tensor) -> th.Tensor:
    """Q-value of the critic ensemble: the mean of the heads' probabilities, then its expectation.

    :param logits: ``(batch, n_critics, n_atoms)``
    :param support: ``(n_atoms,)``
    :return: ``(batch,)``
    """
    return th.softmax(at_least_fp32(logits), dim=-1).mean(1) @ support
