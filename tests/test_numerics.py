import numpy as np
import pytest
import torch as th
from conftest import TINY_POLICY
from envs import TargetEnv

from sb3_brc import BRCSAC, MultiTaskVecEnv
from sb3_brc.sac.functional_update import FunctionalUpdate


def trained(env=None, seed=0, steps=80):
    model = BRCSAC(
        "MlpPolicy",
        env if env is not None else TargetEnv(),
        learning_starts=50,
        batch_size=16,
        policy_kwargs=TINY_POLICY,
        seed=seed,
    )
    model.learn(steps)
    return model


def test_non_finite_loss_is_reported_with_update_and_tasks():
    env = MultiTaskVecEnv(
        [lambda: TargetEnv(obs_dim=3, act_dim=2), lambda: TargetEnv(obs_dim=2, act_dim=1)], task_names=["left", "right"]
    )
    model = trained(env, steps=120)
    with th.no_grad():
        model.critic.q_networks.head.weight[0, 0, 0] = float("nan")
    updates = model._n_updates
    with pytest.raises(FloatingPointError, match=rf"Non-finite critic_loss at gradient update {updates + 1} ") as info:
        model.train(gradient_steps=2, batch_size=16)
    assert "left" in str(info.value) and "reward scales" in str(info.value) and "Lower the learning rate" in str(info.value)


@pytest.mark.parametrize("functional", [False, True], ids=["eager", "functional"])
def test_non_finite_parameter_is_reported(functional):
    model = trained()
    if functional:  # its graph computes the parameter norm the check reads (run eagerly here)
        model._updates.functional = FunctionalUpdate(model, compile=False)
    with th.no_grad():
        model.actor.log_std.bias[0] = float("inf")  # losses stay finite through the tanh squashing
    with pytest.raises(FloatingPointError, match=r"Non-finite parameter actor\.log_std\.bias at gradient update"):
        model.train(gradient_steps=1, batch_size=16)


def test_seeded_runs_are_reproducible_on_cpu():
    first, second = trained(seed=3), trained(seed=3)
    for p, q in zip(first.policy.parameters(), second.policy.parameters(), strict=True):
        assert th.equal(p, q)
    np.testing.assert_array_equal(first.replay_buffer.actions, second.replay_buffer.actions)
    other = trained(seed=4)
    assert not all(th.equal(p, q) for p, q in zip(first.policy.parameters(), other.policy.parameters(), strict=True))
