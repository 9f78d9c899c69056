import math

import numpy as np
import pytest
import torch as th
from gymnasium import spaces
from torch import nn

from sb3_brc.common.torch_layers import BroNet, EnsembleLayerNorm, EnsembleLinear, TaskEmbedding
from sb3_brc.sac.policies import BRCPolicy, StableSquashedDiagGaussianDistribution


def make_policy(**kwargs):
    obs_space = spaces.Box(-1, 1, (5,), np.float32)
    act_space = spaces.Box(-1, 1, (3,), np.float32)
    return BRCPolicy(obs_space, act_space, lambda _: 3e-4, **kwargs)


def assert_orthogonal(weight: th.Tensor, gain: float):
    w = weight.detach().double()
    gram = w @ w.T if w.shape[0] <= w.shape[1] else w.T @ w
    th.testing.assert_close(gram, gain**2 * th.eye(gram.shape[0], dtype=th.float64), atol=1e-5, rtol=0)


def test_bronet_structure():
    net = BroNet(7, [32, 32], output_dim=5)
    lin, ln, act = net.input_layer
    assert isinstance(lin, nn.Linear) and (lin.in_features, lin.out_features) == (7, 32)
    assert isinstance(ln, nn.LayerNorm) and ln.eps == 1e-6 and isinstance(act, nn.ReLU)
    assert len(net.blocks) == 2
    for block in net.blocks:
        kinds = [type(m) for m in block.net]
        assert kinds == [nn.Linear, nn.LayerNorm, nn.ReLU, nn.Linear, nn.LayerNorm]
        assert all(m.eps == 1e-6 for m in block.net if isinstance(m, nn.LayerNorm))
    assert isinstance(net.head, nn.Linear) and net.head.out_features == 5
    assert BroNet(7, [32]).head is None


def test_bronet_forward_is_residual_with_no_activation_after_add():
    net = BroNet(4, [8, 8], output_dim=3).double()
    x = th.randn(10, 4, dtype=th.float64)
    h = net.input_layer(x)
    for block in net.blocks:
        lin1, ln1, _, lin2, ln2 = block.net
        h = h + ln2(lin2(th.relu(ln1(lin1(h)))))  # may go negative: no ReLU after the add
    th.testing.assert_close(net(x), net.head(h))


def test_bronet_init_orthogonal_gain_sqrt2_zero_bias():
    net = BroNet(7, [16, 16], output_dim=101)
    for module in net.modules():
        if isinstance(module, nn.Linear):
            assert_orthogonal(module.weight, math.sqrt(2))
            assert th.all(module.bias == 0)
        if isinstance(module, nn.LayerNorm):
            assert th.all(module.weight == 1) and th.all(module.bias == 0)


def test_ensemble_init_is_orthogonal_per_member():
    net = BroNet(7, [16, 16], output_dim=11, ensemble_size=3)
    for module in net.modules():
        if isinstance(module, EnsembleLinear):
            for member in range(3):
                assert_orthogonal(module.weight[member], math.sqrt(2))
            assert th.all(module.bias == 0)
    first = net.input_layer[0].weight
    assert not th.allclose(first[0], first[1])  # members are independent


def test_ensemble_equals_separate_networks():
    th.manual_seed(0)
    ensemble = BroNet(6, [16, 16], output_dim=11, ensemble_size=3).double()
    with th.no_grad():  # random LayerNorm affine parameters, so they are checked too
        for module in ensemble.modules():
            if isinstance(module, EnsembleLayerNorm):
                module.weight.normal_()
                module.bias.normal_()
    x = th.randn(9, 6, dtype=th.float64)
    out = ensemble(x)
    assert out.shape == (3, 9, 11)
    for member in range(3):
        single = BroNet(6, [16, 16], output_dim=11).double()
        ens_modules = [m for m in ensemble.modules() if isinstance(m, EnsembleLinear | EnsembleLayerNorm)]
        single_modules = [m for m in single.modules() if isinstance(m, nn.Linear | nn.LayerNorm)]
        with th.no_grad():
            for ens, sgl in zip(ens_modules, single_modules, strict=True):
                if isinstance(sgl, nn.Linear):
                    sgl.weight.copy_(ens.weight[member].T)
                else:
                    sgl.weight.copy_(ens.weight[member, 0])
                sgl.bias.copy_(ens.bias[member, 0])
        th.testing.assert_close(out[member], single(x))
    # a per-member input gives the same result as the shared one
    th.testing.assert_close(ensemble(x.expand(3, 9, 6)), out)


def test_policy_networks_and_head_inits():
    policy = make_policy(net_arch=dict(pi=[32], qf=[64, 64]), n_atoms=21)
    actor, critic = policy.actor, policy.critic
    assert actor.latent_pi.width == 32 and len(actor.latent_pi.blocks) == 1
    assert critic.q_networks.width == 64 and len(critic.q_networks.blocks) == 2
    assert critic.q_networks.ensemble_size == 2 and critic.q_networks.head.out_features == 21
    assert_orthogonal(actor.mu.weight, math.sqrt(2))
    assert_orthogonal(actor.log_std.weight, 1.0)
    assert th.all(actor.mu.bias == 0) and th.all(actor.log_std.bias == 0)
    # target starts as an exact copy
    for p, q in zip(policy.critic.parameters(), policy.critic_target.parameters(), strict=True):
        assert th.equal(p, q)
    assert isinstance(actor.optimizer, th.optim.AdamW) and actor.optimizer.defaults["weight_decay"] == 1e-4
    assert isinstance(critic.optimizer, th.optim.AdamW) and critic.optimizer.defaults["weight_decay"] == 1e-4


def test_default_net_arch_is_brc_reference():
    policy = make_policy()
    assert policy.actor.latent_pi.width == 256 and len(policy.actor.latent_pi.blocks) == 1
    assert policy.critic.q_networks.width == 512 and len(policy.critic.q_networks.blocks) == 2
    assert policy.critic.n_atoms == 101 and policy.critic.support[0] == -10 and policy.critic.support[-1] == 10


def test_log_std_is_squashed_into_brc_range():
    policy = make_policy(net_arch=[16])
    with th.no_grad():
        policy.actor.log_std.weight.mul_(1e4)  # saturate tanh
    obs = th.randn(256, 5) * 10
    _, log_std, _ = policy.actor.get_action_dist_params(obs)
    assert log_std.min() >= -10.0 and log_std.max() <= 2.0
    assert log_std.min() < -9.9 and log_std.max() > 1.9


def test_stable_tanh_log_prob_matches_torch_transformed_distribution():
    dist = StableSquashedDiagGaussianDistribution(3)
    mean, log_std = th.randn(100, 3, dtype=th.float64), th.randn(100, 3, dtype=th.float64) * 0.5
    _, log_prob = dist.log_prob_from_params(mean, log_std)
    u = dist.gaussian_actions
    # change of variables in float64, where log(1 - tanh(u)^2) is still accurate for these |u|
    expected = (th.distributions.Normal(mean, log_std.exp()).log_prob(u) - th.log(1 - th.tanh(u) ** 2)).sum(-1)
    th.testing.assert_close(log_prob, expected)
    # stays finite where 1 - tanh(u)^2 underflows
    u = th.tensor([[30.0, -30.0, 0.0]], dtype=th.float64)
    dist.proba_distribution(th.zeros(1, 3, dtype=th.float64), th.zeros(1, 3, dtype=th.float64))
    assert th.isfinite(dist.log_prob(th.tanh(u), u)).all()


def test_log_prob_is_exact_at_the_floor_of_the_log_std():
    # A policy at its log-std floor (sigma = e^-10) far from the origin: float32 (u - mu) / sigma has lost the noise
    dist = StableSquashedDiagGaussianDistribution(2)
    mean = th.tensor([[0.9, -1.7]] * 1000)
    log_std = th.full_like(mean, -10.0)
    th.manual_seed(0)
    _, log_prob = dist.log_prob_from_params(mean, log_std)
    th.manual_seed(0)
    noise = th.randn_like(mean).double()  # the noise that drew the sample, in float64
    u = mean.double() + log_std.double().exp() * noise
    base = (-0.5 * noise**2 - log_std.double() - 0.5 * math.log(2 * math.pi)).sum(-1)
    expected = base - th.log(1 - th.tanh(u) ** 2).sum(-1)
    th.testing.assert_close(log_prob.double(), expected, rtol=1e-6, atol=1e-4)
    # what the noise rebuilt from the float32 sample gives instead: visibly wrong (kept as the reason for the above)
    rebuilt = dist.log_prob(th.tanh(dist.gaussian_actions), dist.gaussian_actions).double()
    assert (rebuilt - expected).abs().max() > 1e-3


def test_exploration_and_log_prob_draw_the_same_noise():
    dist = StableSquashedDiagGaussianDistribution(3)
    mean, log_std = th.randn(4, 3), th.randn(4, 3)
    dist.standard_noise = lambda like: th.ones_like(like)  # type: ignore[method-assign]
    actions, _ = dist.log_prob_from_params(mean, log_std)
    th.testing.assert_close(actions, th.tanh(mean + log_std.exp()))
    th.testing.assert_close(dist.actions_from_params(mean, log_std), actions)


@pytest.mark.parametrize("norm", ["l2", "l1"])
def test_task_embedding_norm(norm):
    emb = TaskEmbedding(5, 32, norm=norm)
    out = emb(th.arange(5))
    th.testing.assert_close(out.norm(p=2 if norm == "l2" else 1, dim=-1), th.ones(5))
    assert emb.embedding.weight.std().item() == pytest.approx(1 / math.sqrt(32), rel=0.3)
    with pytest.raises(ValueError, match="embedding_norm"):
        TaskEmbedding(5, 32, norm="max")
