"""Why multi-task training works or fails: per-task critic loss, gradient norm, policy entropy, gradient conflicts.

The paper's argument for cross-entropy critics is that they keep these per-task quantities on one scale
across tasks with very different rewards; gradient conflicts (negative cosine between task gradients) are
what larger critics reduce.
"""

import itertools
from typing import Any, cast

import numpy as np
import torch as th
from matplotlib.figure import Figure
from stable_baselines3.common.callbacks import BaseCallback

from sb3_brc.common.multitask import MultiTaskAlgorithm
from sb3_brc.common.utils import select_rows


def gradient_conflict_rate(gradients: list[th.Tensor]) -> tuple[float, np.ndarray]:
    """Share of task pairs whose gradients point in opposing directions (negative cosine).

    :param gradients: One flattened gradient per task
    :return: (conflict rate over the ``n (n - 1) / 2`` pairs, the ``n x n`` cosine matrix)
    """
    if len(gradients) < 2:
        raise ValueError(f"gradient_conflict_rate needs gradients of at least 2 tasks, got {len(gradients)}")
    stacked = th.stack([g.detach().double().flatten() for g in gradients])
    unit = stacked / stacked.norm(dim=1, keepdim=True).clamp(min=1e-30)
    cosines = (unit @ unit.T).cpu().numpy()
    pairs = list(itertools.combinations(range(len(gradients)), 2))
    return float(np.mean([cosines[i, j] < 0 for i, j in pairs])), cosines


def task_diagnostics(model: MultiTaskAlgorithm, samples_per_task: int = 256) -> dict[str, Any]:
    """Per-task value loss (BRCSAC's critic loss, BRCDQN's Q loss), its gradient norm and the policy entropy on fresh
    replay samples, and the gradient-conflict rate between the tasks' value-network gradients. Parameters, ``.grad``
    and the random generators (NumPy's, which samples the replay buffer, and torch's) are left untouched, so a run
    with diagnostics trains exactly as one without.

    :param model: A trained ``BRCSAC`` or ``BRCDQN`` with data in its replay buffer
    :param samples_per_task: Transitions per task (drawn from a larger uniform sample)
    :return: ``{"tasks", "critic_loss", "grad_norm", "entropy", "conflict_rate", "cosines"}``; per-task values are
        lists in task order (``nan`` for a task without samples, and for the entropy of a policy without one)
    """
    numpy_state = np.random.get_state()
    try:
        with th.random.fork_rng(devices=[model.device] if model.device.type == "cuda" else []):
            return _task_diagnostics(model, samples_per_task)
    finally:
        np.random.set_state(numpy_state)


def _task_diagnostics(model: MultiTaskAlgorithm, samples_per_task: int) -> dict[str, Any]:
    assert model.replay_buffer is not None  # made by the model's _setup_model
    data = model.replay_buffer.sample(samples_per_task * model.num_tasks * 2, env=model._vec_normalize_env)
    task_ids = model.task_ids(data.observations)
    params = [p for p in model.value_network.parameters() if p.requires_grad]
    losses, norms, entropies, gradients = [], [], [], []
    for task in range(model.num_tasks):
        rows = (task_ids == task).nonzero().flatten()[:samples_per_task]
        if len(rows) == 0:
            losses.append(float("nan"))
            norms.append(float("nan"))
            entropies.append(float("nan"))
            continue
        subset = select_rows(data, rows)
        loss = model.value_loss(subset)
        grads = th.autograd.grad(loss, params, allow_unused=True)
        flat = th.cat([(g if g is not None else th.zeros_like(p)).flatten() for g, p in zip(grads, params, strict=True)])
        with th.no_grad():
            entropy = model.policy_entropy(subset.observations)
        losses.append(loss.item())
        norms.append(flat.norm().item())
        entropies.append(float("nan") if entropy is None else entropy.item())
        gradients.append(flat)
    rate, cosines = gradient_conflict_rate(gradients) if len(gradients) > 1 else (float("nan"), np.ones((1, 1)))
    return dict(
        tasks=model.task_names, critic_loss=losses, grad_norm=norms, entropy=entropies, conflict_rate=rate, cosines=cosines
    )


class DiagnosticsCallback(BaseCallback):
    """Log :func:`task_diagnostics` every ``every_n_updates`` gradient updates (cheap enough to leave on).

    Keys: ``diagnostics/<task>/critic_loss``, ``.../grad_norm``, ``.../entropy``, ``diagnostics/conflict_rate``
    and the across-task variance of each per-task quantity (``diagnostics/var_<quantity>``).

    :param every_n_updates: Gradient updates between two diagnostics
    :param samples_per_task: Transitions per task for each diagnostic
    """

    def __init__(self, every_n_updates: int = 1000, samples_per_task: int = 256, verbose: int = 0):
        super().__init__(verbose)
        if every_n_updates < 1 or samples_per_task < 1:
            raise ValueError(
                f"every_n_updates and samples_per_task must be >= 1, got {every_n_updates} and {samples_per_task}"
            )
        self.every_n_updates, self.samples_per_task = every_n_updates, samples_per_task
        self.history: list[dict[str, Any]] = []
        self._last = 0

    def _init_callback(self) -> None:
        # Scheduled on the update count, which a resumed model restores: the same schedule after a resume
        self._last = self.model._n_updates

    def _on_step(self) -> bool:
        updates = self.model._n_updates
        if updates // self.every_n_updates == self._last // self.every_n_updates:
            return True
        self._last = updates
        result = task_diagnostics(cast(MultiTaskAlgorithm, self.model), self.samples_per_task)  # a BRCSAC or BRCDQN
        self.history.append(dict(num_timesteps=self.num_timesteps, **result))
        for quantity in ("critic_loss", "grad_norm", "entropy"):
            for name, value in zip(result["tasks"], result[quantity], strict=True):
                self.logger.record(f"diagnostics/{name}/{quantity}", value)
            if not np.isnan(result[quantity]).all():
                self.logger.record(f"diagnostics/var_{quantity}", float(np.nanvar(result[quantity])))
        if not np.isnan(result["conflict_rate"]):
            self.logger.record("diagnostics/conflict_rate", result["conflict_rate"])
        return True


def plot_task_embeddings(model: MultiTaskAlgorithm, path: str) -> np.ndarray:
    """PCA of the learned (normalised) task embeddings, one labelled point per task, saved as a PNG.

    :return: the ``(num_tasks, 2)`` projected coordinates
    """
    embedding = model.value_network.task_embedding
    if embedding is None:
        raise ValueError("This model has no task embeddings (single-task run)")
    with th.no_grad():
        rows = embedding(th.arange(embedding.num_tasks, device=model.device)).cpu().double().numpy()
    centred = rows - rows.mean(0)
    _, _, vt = np.linalg.svd(centred, full_matrices=False)
    coords = centred @ vt[:2].T if vt.shape[0] >= 2 else np.c_[centred @ vt[:1].T, np.zeros(len(rows))]
    fig = Figure(figsize=(5, 4))  # no pyplot: the user's matplotlib backend stays as it is
    ax = fig.subplots()
    ax.scatter(coords[:, 0], coords[:, 1])
    for name, (x, y) in zip(model.task_names, coords, strict=True):
        ax.annotate(name, (x, y), fontsize=8, xytext=(3, 3), textcoords="offset points")
    ax.set_title("Task embeddings (PCA)")
    ax.set_xlabel("PC 1")
    ax.set_ylabel("PC 2")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    return coords
