"""The fast paths of the update give the same results as the plain ones.

(The batched critic ensemble against separate networks: ``test_networks.py``.)
"""

import copy
import importlib
import os
import warnings

import numpy as np
import pytest
import torch as th
from envs import TargetEnv

from sb3_brc import BRCSAC
from sb3_brc.common.utils import native_bf16_matmul, set_training_flags
from sb3_brc.sac import update_runner


def filled_model(optimizer_class=th.optim.AdamW, **kwargs):
    model = BRCSAC(
        "MlpPolicy",
        TargetEnv(obs_dim=4, act_dim=2),
        learning_starts=400,
        batch_size=64,
        seed=0,
        policy_kwargs=dict(net_arch=dict(pi=[32], qf=[64, 64]), n_atoms=21, optimizer_class=optimizer_class),
        **kwargs,
    )
    model.learn(400)  # fills the buffer, no update yet
    return model


def test_one_replay_sample_per_train_call():
    model = filled_model()
    calls = []
    original = model.replay_buffer.sample

    def spy(batch_size, env=None):
        calls.append(batch_size)
        return original(batch_size, env)

    model.replay_buffer.sample = spy
    model.train(gradient_steps=3, batch_size=16)
    assert calls == [48]


def test_single_sample_is_uniform_like_per_step_sampling():
    # One draw of N * B indices, chunked, has the distribution of N independent draws of B: i.i.d. uniform
    model = filled_model()
    np.random.seed(0)
    n_steps, batch, rows = 200, 64, []
    for _ in range(10):
        data = model.replay_buffer.sample(n_steps * batch)
        rows.append(data.observations[:, 0].numpy())
    # identify each sampled transition by its first observation entry; compare frequency histograms
    values = np.concatenate(rows)
    np.random.seed(1)
    per_step = np.concatenate([model.replay_buffer.sample(batch).observations[:, 0].numpy() for _ in range(10 * n_steps)])
    edges = np.quantile(values, np.linspace(0, 1, 21))
    h1, _ = np.histogram(values, edges)
    h2, _ = np.histogram(per_step, edges)
    # chi-square two-sample statistic with 19 degrees of freedom: 99.9% quantile is about 43.8
    chi2 = ((h1 - h2) ** 2 / np.maximum(h1 + h2, 1)).sum()
    assert chi2 < 43.8


def test_bf16_losses_close_to_fp32():
    model = filled_model()
    data = model.replay_buffer.sample(256)
    ent_coef = model._current_ent_coef()
    th.manual_seed(0)
    fp32, _ = model._critic_loss(data, data.rewards * 0.1, ent_coef)
    th.manual_seed(0)
    with th.autocast("cpu", dtype=th.bfloat16):
        bf16, _ = model._critic_loss(data, data.rewards * 0.1, ent_coef)
    assert bf16.dtype == th.float32
    assert bf16.item() == pytest.approx(fp32.item(), rel=0.02)
    th.manual_seed(0)
    actor32, _ = model._actor_loss(data.observations, ent_coef)
    th.manual_seed(0)
    with th.autocast("cpu", dtype=th.bfloat16):
        actor16, _ = model._actor_loss(data.observations, ent_coef)
    assert actor16.item() == pytest.approx(actor32.item(), rel=0.05, abs=0.02)


def test_mixed_precision_training_runs_and_keeps_fp32_state(monkeypatch):
    # bf16 on any CPU here (emulated where the CPU lacks it: slow, but the same numbers path)
    monkeypatch.setattr(update_runner, "native_bf16_matmul", lambda device: True)
    model = filled_model(mixed_precision=True)
    assert model._updates.autocast_bf16
    model.train(gradient_steps=2, batch_size=32)
    assert all(p.dtype == th.float32 for p in model.policy.parameters())
    assert all(th.isfinite(p).all() for p in model.policy.parameters())


@pytest.mark.parametrize("avx512_bf16, amx", [(True, False), (False, True), (False, False)])
def test_mixed_precision_only_where_bf16_is_native(monkeypatch, avx512_bf16, amx):
    monkeypatch.setattr(th.cpu, "_is_avx512_bf16_supported", lambda: avx512_bf16)
    monkeypatch.setattr(th.cpu, "_is_amx_tile_supported", lambda: amx)
    native = avx512_bf16 or amx
    assert native_bf16_matmul(th.device("cpu")) is native
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        model = BRCSAC("MlpPolicy", TargetEnv(), mixed_precision=True, policy_kwargs=dict(net_arch=[16]), device="cpu")
    assert model.mixed_precision and model._updates.autocast_bf16 is native
    assert any("mixed_precision=True ignored" in str(w.message) for w in caught) is not native
    # CUDA: compute capability 8.0+ only, never counting PyTorch's emulation
    asked = []
    monkeypatch.setattr(th.cuda, "is_bf16_supported", lambda including_emulation=True: asked.append(including_emulation))
    native_bf16_matmul(th.device("cuda"))
    assert asked == [False]


@pytest.mark.parametrize("backend", ["aot_eager", pytest.param("inductor", marks=pytest.mark.slow)])
def test_compiled_losses_match_eager(monkeypatch, backend):
    # Where the whole update cannot compile as one graph (here: Adam in place of BRC's AdamW), compile_update compiles
    # the two losses; "aot_eager" checks the captured forward and backward graphs quickly, "inductor" (the default
    # backend, minutes to compile on CPU) also its generated kernels
    import torch._inductor.config

    compile_fn = th.compile
    monkeypatch.setattr(th, "compile", lambda fn, **kwargs: compile_fn(fn, backend=backend, **kwargs))
    eager = filled_model(th.optim.Adam, compile_update=False)
    compiled = filled_model(th.optim.Adam, compile_update=True)
    assert compiled._updates.functional is None and compiled._updates.critic_loss is not compiled._critic_loss
    with torch._inductor.config.patch(fallback_random=True):  # eager's random numbers
        for model in (eager, compiled):
            th.manual_seed(1)
            np.random.seed(1)
            model.train(gradient_steps=3, batch_size=32)
    for (name, expected), actual in zip(eager.policy.named_parameters(), compiled.policy.parameters(), strict=True):
        assert th.allclose(actual, expected, atol=1e-5), name
    assert eager.logger.name_to_value == pytest.approx(compiled.logger.name_to_value, rel=1e-5)
    # the compiled actor loss trains the actor only (one gradient per critic weight and update: the critic loss's),
    # and leaves the critic trainable
    gradients = {name: [] for name, _ in compiled.critic.named_parameters()}
    hooks = [p.register_hook(gradients[name].append) for name, p in compiled.critic.named_parameters()]
    compiled.policy.zero_grad(set_to_none=True)
    compiled.train(gradient_steps=2, batch_size=32)
    for hook in hooks:
        hook.remove()
    assert {name: len(grads) for name, grads in gradients.items()} == {name: 2 for name in gradients}
    assert all(p.requires_grad for p in compiled.critic.parameters())
    assert all(p.grad is not None for p in compiled.actor.parameters())
    th._dynamo.reset()


def test_matmul_ceiling_benchmark_replays_exactly_the_updates_matmuls(monkeypatch):
    # benchmarks/matmul_ceiling.py backs the "matmuls alone" ceiling of the results: its replay must do the
    # update's matmul FLOPs, no more and no fewer (it raises otherwise), with the recorded layouts
    benchmarks = os.path.join(os.path.dirname(__file__), "..", "benchmarks")
    monkeypatch.syspath_prepend(benchmarks)
    ceiling = importlib.import_module("matmul_ceiling")
    replay, flops, n_calls = ceiling.update_matmuls(filled_model(), 64)
    assert flops > 0 and n_calls > 10
    replay()  # runs again on its own tensors
    broadcast = ceiling.random_strided(th.Size([4, 3]), (0, 1), th.float32)
    assert th.equal(broadcast[0], broadcast[3])  # stride 0 repeats one row, as an expanded bias does


def test_the_policies_switch_training_mode_as_module_train_does():
    """The cheaper walk of ``set_training_mode`` sets the flags ``Module.train`` sets, the target's excepted as in SAC,
    and leaves a module with its own ``train`` to it (here one that keeps its BatchNorm in eval mode)."""

    class FrozenStatistics(th.nn.Module):
        def __init__(self):
            super().__init__()
            self.norm, self.linear = th.nn.BatchNorm1d(4), th.nn.Linear(4, 4)

        def train(self, mode=True):
            super().train(mode)
            self.norm.eval()
            return self

    tree = th.nn.Sequential(th.nn.Linear(4, 4), th.nn.Sequential(th.nn.Dropout(), FrozenStatistics()))
    tree.register_module("absent", None)
    expected = copy.deepcopy(tree).train(True)
    set_training_flags(tree.eval(), True)
    assert [m.training for m in tree.modules()] == [m.training for m in expected.modules()]
    assert not tree[1][1].norm.training and tree[1][1].linear.training and tree[1][0].training

    policy = filled_model().policy
    for mode in (True, False, True):
        policy.set_training_mode(mode)
        assert policy.training is mode
        assert all(m.training is mode for part in (policy.actor, policy.critic) for m in part.modules())
        assert not any(m.training for m in policy.critic_target.modules())
