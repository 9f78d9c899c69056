"""``cuda_graph=True``: BRCSAC's gradient update captured in a CUDA graph is the eager update.

The CPU tests check what the capture relies on (an update with no host synchronisation, optimiser state that moves
between the captured and the eager form); the CUDA tests, skipped without a GPU, capture and compare.
"""

import importlib
import json
import os
import sys
import warnings

import numpy as np
import pytest
import torch as th
from conftest import RecordingLogger
from envs import TargetEnv
from torch.utils._python_dispatch import TorchDispatchMode, _disable_current_modes

from sb3_brc import BRCSAC, MultiTaskVecEnv, ReturnNormalization
from sb3_brc.common.cuda_graphs import CapturedStep

needs_cuda = pytest.mark.skipif(not th.cuda.is_available(), reason="CUDA graphs need a CUDA GPU")

# aten ops that make the host wait for the device: a captured graph cannot contain them
HOST_SYNC_OPS = {"_local_scalar_dense", "nonzero", "masked_select", "is_nonzero", "equal", "unique", "_unique2"}


def two_task_model(device: str = "cpu", **kwargs) -> BRCSAC:
    env = MultiTaskVecEnv(
        [lambda: TargetEnv(obs_dim=3, act_dim=2), lambda: TargetEnv(obs_dim=4, act_dim=2)], task_names=["a", "b"], seed=0
    )
    model = BRCSAC(
        "MlpPolicy",
        env,
        learning_starts=300,
        batch_size=64,
        seed=0,
        device=device,
        policy_kwargs=dict(net_arch=dict(pi=[32], qf=[64, 64]), n_atoms=21),
        normalize_rewards=ReturnNormalization(entropy_term="per_task"),
        **kwargs,
    )
    model.learn(300)  # fills the buffer, no update yet
    return model


def train_calls(model: BRCSAC, calls: int, seed: int = 1) -> None:
    """``calls`` train() calls of 2 updates, the learning rate schedule advancing between them, from fixed seeds."""
    np.random.seed(seed)  # SB3's replay sampling
    th.manual_seed(seed)  # the actor's noise
    for call in range(calls):
        model._current_progress_remaining = 1.0 - call / calls
        model.train(gradient_steps=2, batch_size=64)


class OpRecorder(TorchDispatchMode):
    def __init__(self):
        super().__init__()
        self.ops: set[str] = set()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.ops.add(func._schema.name.split("::")[-1])
        return func(*args, **(kwargs or {}))


def unrecorded(function):
    def call(*args, **kwargs):
        with _disable_current_modes():
            return function(*args, **kwargs)

    return call


@pytest.mark.parametrize("frozen_actor", [False, True])
def test_gradient_update_never_waits_on_the_device(frozen_actor):
    model = two_task_model()
    if frozen_actor:
        model.actor.requires_grad_(False)
    data = model.replay_buffer.sample(64)
    # The optimiser steps are left out: on the CPU they cannot be capturable, and capturable ones keep their
    # step count on the device (torch's own contract, which the CUDA tests below exercise)
    for optimizer in [model.actor.optimizer, model.critic.optimizer, model.ent_coef_optimizer]:
        optimizer.step = unrecorded(optimizer.step)
    with OpRecorder() as recorder:
        stats, entropy = model._gradient_update(data, data.rewards, polyak=True, actor_trainable=not frozen_actor)
    assert "mm" in recorder.ops or "addmm" in recorder.ops  # the recorder sees the update's ops
    assert not recorder.ops & HOST_SYNC_OPS
    assert set(stats) == {
        "critic_loss",
        "actor_loss",
        "ent_coef",
        "ent_coef_loss",
        "q_mean",
        "critic_entropy",
    } and entropy.shape == (64,)


def test_cuda_graph_off_cuda_warns_and_trains_as_the_eager_model():
    with pytest.warns(UserWarning, match="cuda_graph=True ignored: cpu is not a CUDA device"):
        graphed = two_task_model(cuda_graph=True, learning_rate=lambda progress: 3e-4 * progress)
    eager = two_task_model(learning_rate=lambda progress: 3e-4 * progress)
    train_calls(graphed, 3)
    train_calls(eager, 3)
    assert not graphed._updates.captured
    for param, expected in zip(graphed.policy.parameters(), eager.policy.parameters(), strict=True):
        assert th.equal(param, expected)


def test_optimisers_of_a_captured_run_are_made_plain_again_where_updates_run_eagerly(tmp_path):
    model = two_task_model(learning_rate=lambda progress: 3e-4 * progress)
    model.train(gradient_steps=2, batch_size=64)
    optimizers = [model.actor.optimizer, model.critic.optimizer, model.ent_coef_optimizer]
    # The optimisers as a captured run leaves and saves them: capturable, the learning rate a tensor
    model._updates.capture = True
    model._updates.prepare(optimizers, model.lr_schedule(0.5))
    for optimizer in optimizers:
        assert optimizer.param_groups[0]["capturable"]
        assert isinstance(optimizer.param_groups[0]["lr"], th.Tensor)
        assert optimizer.param_groups[0]["lr"].item() == pytest.approx(1.5e-4)  # the schedule reaches the tensor
    model.save(tmp_path / "model.zip")
    model.save_replay_buffer(tmp_path / "replay.pkl")

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        loaded = BRCSAC.load(tmp_path / "model.zip", env=model.get_env(), device="cpu")
    loaded.load_replay_buffer(tmp_path / "replay.pkl")
    loaded.set_logger(RecordingLogger())
    loaded.train(gradient_steps=2, batch_size=64)  # a capturable optimiser would refuse to step on the CPU
    for optimizer in [loaded.actor.optimizer, loaded.critic.optimizer, loaded.ent_coef_optimizer]:
        group = optimizer.param_groups[0]
        assert group["capturable"] is False and isinstance(group["lr"], float)
        assert all(state["step"].device.type == "cpu" for state in optimizer.state.values())


@needs_cuda
def test_captured_updates_match_the_eager_updates_on_cuda():
    kwargs = dict(device="cuda", learning_rate=lambda progress: 3e-4 * progress)
    graphed, eager = two_task_model(cuda_graph=True, **kwargs), two_task_model(**kwargs)
    train_calls(graphed, 6)
    train_calls(eager, 6)
    assert graphed._updates.captured and all(step.graph is not None for step in graphed._updates.captured.values())
    for param, expected in zip(graphed.policy.parameters(), eager.policy.parameters(), strict=True):
        th.testing.assert_close(param, expected, rtol=1e-4, atol=1e-5)
    th.testing.assert_close(graphed.log_ent_coef, eager.log_ent_coef)
    np.testing.assert_allclose(graphed.return_normalizer.task_entropy, eager.return_normalizer.task_entropy, rtol=1e-4)
    lr = graphed.critic.optimizer.param_groups[0]["lr"]
    assert isinstance(lr, th.Tensor) and lr.item() == pytest.approx(3e-4 * (1 - 5 / 6))


@needs_cuda
def test_captured_update_is_recaptured_for_another_batch_size_and_for_a_frozen_actor():
    model = two_task_model(device="cuda", cuda_graph=True)
    train_calls(model, 3)
    model.train(gradient_steps=2, batch_size=32)
    model.actor.requires_grad_(False)
    actor_before = [param.clone() for param in model.actor.parameters()]
    for _ in range(3):
        model.train(gradient_steps=2, batch_size=32)
    assert len(model._updates.captured) == 3
    assert all(th.equal(param, before) for param, before in zip(model.actor.parameters(), actor_before, strict=True))


@needs_cuda
def test_cuda_graph_refuses_compiled_losses_on_cuda():
    with pytest.raises(ValueError, match="cuda_graph=True and compile_update=True do not combine"):
        two_task_model(device="cuda", cuda_graph=True, compile_update=True)


@needs_cuda
def test_captured_step_refuses_inputs_unlike_the_captured_ones():
    weight = th.ones(3, device="cuda")
    step = CapturedStep(lambda x: (x * weight).sum(), warmup=1)
    for value in (1.0, 2.0, 3.0):
        assert step(th.full((3,), value, device="cuda")).item() == 3 * value
    with pytest.raises(ValueError, match="shape \\(4,\\) where it captured"):
        step(th.ones(4, device="cuda"))


def test_gpu_throughput_benchmark_runs_its_sections(tmp_path, monkeypatch):
    # benchmarks/gpu_throughput.py backs the GPU results; on the CPU (cuda_graph warns and runs eagerly) it must
    # still run every section and write one row per configuration
    monkeypatch.syspath_prepend(os.path.join(os.path.dirname(__file__), "..", "benchmarks"))
    gpu_throughput = importlib.import_module("gpu_throughput")
    out = tmp_path / "rows.jsonl"
    argv = ["gpu_throughput.py", "--device", "cpu", "--widths", "32", "--batches", "16", "8", "--precisions", "fp32"]
    argv += ["--compile-widths", "--learn-widths", "32", "--learn-steps", "20", "--seconds", "0.05", "--peak-size", "64"]
    monkeypatch.setattr(sys, "argv", [*argv, "--out", str(out)])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        gpu_throughput.main()
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    updates = [(row["algo"], row["update"], row["batch"]) for row in rows if "learn" not in row]
    assert updates == [
        (algo, update, batch) for batch in (16, 8) for algo, update in [("brc", "eager"), ("brc", "graph"), ("sac", "eager")]
    ]
    assert [row["update"] for row in rows if "learn" in row] == ["eager", "graph"]
    assert all(row.get("updates_per_s", row.get("env_steps_per_s")) > 0 for row in rows)
