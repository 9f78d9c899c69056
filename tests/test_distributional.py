import math

import numpy as np
import pytest
import torch as th

from sb3_brc.common.distributional import categorical_cross_entropy, categorical_mean, categorical_projection, expected_value


def brute_force_projection(probs, target_atoms, support):
    """Slow reference: C51 projection written as a loop over samples and atoms, in float64 Python scalars."""
    v_min, v_max, n = float(support[0]), float(support[-1]), len(support)
    dz = (v_max - v_min) / (n - 1)
    out = np.zeros((probs.shape[0], n))
    for i in range(probs.shape[0]):
        for j in range(n):
            tz = min(max(float(target_atoms[i, j]), v_min), v_max)
            b = (tz - v_min) / dz
            low, up = math.floor(b), math.ceil(b)
            if low == up:
                out[i, low] += probs[i, j]
            else:
                out[i, low] += probs[i, j] * (up - b)
                out[i, up] += probs[i, j] * (b - low)
    return out


def hat_projection(probs, target_atoms, support):
    """Independent formulation: each atom spreads its mass with the triangular kernel max(0, 1 - |b - i|)."""
    n = len(support)
    dz = (support[-1] - support[0]) / (n - 1)
    b = (np.clip(target_atoms, support[0], support[-1]) - support[0]) / dz
    kernel = np.maximum(0.0, 1.0 - np.abs(b[:, :, None] - np.arange(n)[None, None, :]))
    return (probs[:, :, None] * kernel).sum(1)


def random_case(batch, n_atoms, v_min=-10.0, v_max=10.0, seed=0):
    rng = np.random.default_rng(seed)
    probs = rng.dirichlet(np.ones(n_atoms), size=batch)
    support = np.linspace(v_min, v_max, n_atoms)
    rewards = rng.normal(0, 5, size=(batch, 1))
    discounts = rng.choice([0.0, 0.9, 0.99], size=(batch, 1))
    shift = rng.normal(0, 1, size=(batch, 1))
    target_atoms = rewards + discounts * (support[None] - shift)  # wide: many atoms land outside the support
    return probs, target_atoms, support


def project(probs, target_atoms, support):
    return categorical_projection(th.tensor(probs), th.tensor(target_atoms), th.tensor(support)).numpy()


@pytest.mark.parametrize("n_atoms", [5, 11, 101])
@pytest.mark.parametrize("seed", [0, 1])
def test_projection_matches_brute_force_loop(n_atoms, seed):
    probs, target_atoms, support = random_case(64, n_atoms, seed=seed)
    ours = project(probs, target_atoms, support)
    np.testing.assert_allclose(ours, brute_force_projection(probs, target_atoms, support), atol=1e-10)
    np.testing.assert_allclose(ours, hat_projection(probs, target_atoms, support), atol=1e-10)


def test_projection_conserves_mass_and_clipped_mean():
    probs, target_atoms, support = random_case(256, 101, seed=3)
    ours = project(probs, target_atoms, support)
    np.testing.assert_allclose(ours.sum(1), 1.0, atol=1e-12)
    assert (ours >= 0).all()
    # Linear interpolation between neighbours keeps the mean of the clipped atoms
    clipped_mean = (probs * np.clip(target_atoms, support[0], support[-1])).sum(1)
    np.testing.assert_allclose(ours @ support, clipped_mean, atol=1e-9)


def test_projection_integer_positions_keep_all_mass():
    # Every target atom lands exactly on a support atom (b integer, l == u): a buggy projection loses or
    # doubles that mass (FastTD3 issue #29)
    support = np.linspace(-10.0, 10.0, 101)
    probs = np.random.default_rng(0).dirichlet(np.ones(101), size=4)
    for shift in (0.0, 0.2, -1.0, 3.4):
        target_atoms = np.tile(support + shift, (4, 1))
        ours = project(probs, target_atoms, support)
        np.testing.assert_allclose(ours.sum(1), 1.0, atol=1e-12)
        np.testing.assert_allclose(ours, brute_force_projection(probs, target_atoms, support), atol=1e-12)
    # zero shift is the identity
    np.testing.assert_allclose(project(probs, np.tile(support, (4, 1)), support), probs, atol=1e-12)


def test_projection_float32_at_support_edges():
    support = th.linspace(-10, 10, 101)
    probs = th.softmax(th.randn(8, 101), -1)
    target_atoms = th.full((8, 101), 10.0) + th.linspace(0, 1e-5, 101)  # at and just above v_max
    out = categorical_projection(probs, target_atoms, support)
    th.testing.assert_close(out[:, -1], th.ones(8))
    target_atoms = th.full((8, 101), -10.0) - 1e-6
    th.testing.assert_close(categorical_projection(probs, target_atoms, support)[:, 0], th.ones(8))


def test_cross_entropy_matches_loop():
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(16, 3, 11))
    target = rng.dirichlet(np.ones(11), size=16)
    expected = 0.0
    for critic in range(3):
        per_sample = []
        for i in range(16):
            log_z = math.log(sum(math.exp(x) for x in logits[i, critic]))
            per_sample.append(-sum(target[i, k] * (logits[i, critic, k] - log_z) for k in range(11)))
        expected += sum(per_sample) / 16
    ours = categorical_cross_entropy(th.tensor(logits), th.tensor(target)).item()
    assert ours == pytest.approx(expected, rel=1e-10)


def test_expected_value_is_mean_of_head_probabilities():
    logits = th.randn(5, 2, 11, dtype=th.float64)
    support = th.linspace(-10, 10, 11, dtype=th.float64)
    probs = th.softmax(logits, -1)
    manual = 0.5 * ((probs[:, 0] * support).sum(-1) + (probs[:, 1] * support).sum(-1))
    th.testing.assert_close(expected_value(logits, support), manual)


def test_categorical_mean_of_each_distribution():
    # Per action of BRCDQN, (batch, actions, atoms): sum_j p_j z_j with p_j = exp(l_j) / sum_k exp(l_k), in a loop
    logits = np.random.default_rng(0).normal(size=(3, 4, 11))
    support = np.linspace(-10, 10, 11)
    expected = np.zeros((3, 4))
    for row in range(3):
        for action in range(4):
            weights = [math.exp(value) for value in logits[row, action]]
            expected[row, action] = sum(w * z for w, z in zip(weights, support, strict=True)) / sum(weights)
    ours = categorical_mean(th.tensor(logits), th.tensor(support)).numpy()
    np.testing.assert_allclose(ours, expected, rtol=1e-12)
