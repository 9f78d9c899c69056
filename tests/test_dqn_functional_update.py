"""BRCDQN's whole update as one pure function (``compile_update``): the same parameters, optimiser state and loss as
the eager update (DrQ's shifts, the double-Q target, clipping and Adam included), and when it runs."""

import numpy as np
import pytest
import torch as th
from conftest import TINY_DQN
from envs import FramesEnv
from stable_baselines3.common.vec_env import DummyVecEnv

from sb3_brc import BRCDQN
from sb3_brc.dqn.functional_update import FunctionalUpdate, unsupported_reason
from sb3_brc.envs.vec_env import DiscreteMultiTaskVecEnv


def frames_env():
    return DummyVecEnv([FramesEnv])


def two_tasks():
    return DiscreteMultiTaskVecEnv(["CartPole-v1", "Acrobot-v1"], seed=0)


def filled_model(env_fn=two_tasks, **kwargs):
    kwargs = dict(dict(learning_starts=64, batch_size=16, seed=0, compile_update=False), **kwargs)
    model = BRCDQN("MlpPolicy", env_fn(), policy_kwargs=dict(TINY_DQN, **kwargs.pop("policy_kwargs", {})), **kwargs)
    model.learn(64)  # fills the buffer, no update yet
    return model


def optimizer_states(model):
    return [value for state in model.policy.optimizer.state.values() for value in state.values()]


def assert_same_training(eager, functional, calls=3, rtol=1e-5, atol=1e-6):
    for call in range(calls):
        for model in (eager, functional):
            th.manual_seed(call)  # DrQ's shifts
            np.random.seed(call)  # the replay sample
            model._on_step()  # the target copy learn() makes before each update
            model.train(gradient_steps=2, batch_size=16)
        assert eager.logger.name_to_value["train/loss"] == pytest.approx(
            functional.logger.name_to_value["train/loss"], rel=rtol, abs=atol
        )
    named = dict(functional.policy.named_parameters())
    for name, expected in eager.policy.named_parameters():
        th.testing.assert_close(named[name], expected, rtol=rtol, atol=atol, msg=name)
    for expected, actual in zip(optimizer_states(eager), optimizer_states(functional), strict=True):
        th.testing.assert_close(actual, expected, rtol=10 * rtol, atol=10 * atol)


CASES = {
    "two vector tasks": dict(),
    "images, DrQ shifts": dict(env_fn=frames_env),
    "no clipping, lr schedule, Polyak target": dict(max_grad_norm=None, learning_rate=lambda p: 1e-3 * p, tau=0.5),
    "tight clipping, AdamW": dict(
        max_grad_norm=0.01, policy_kwargs=dict(optimizer_class=th.optim.AdamW, optimizer_kwargs=dict(weight_decay=0.1))
    ),
}


@pytest.mark.parametrize("case", CASES)
def test_functional_update_equals_the_eager_update(case):
    eager, functional = filled_model(**CASES[case]), filled_model(**CASES[case])
    functional._functional_update = FunctionalUpdate(functional, compile=False)
    assert_same_training(eager, functional)


@pytest.mark.parametrize("backend", ["aot_eager", pytest.param("inductor", marks=pytest.mark.slow)])
def test_compiled_functional_update_equals_the_eager_update(monkeypatch, backend):
    compile_fn = th.compile
    monkeypatch.setattr(th, "compile", lambda fn, **kwargs: compile_fn(fn, **kwargs, backend=backend))
    eager, compiled = filled_model(frames_env), filled_model(frames_env, compile_update=True)
    assert isinstance(compiled._functional_update, FunctionalUpdate)
    assert_same_training(eager, compiled, rtol=1e-4, atol=1e-5)
    th._dynamo.reset()


def test_a_model_trained_by_the_functional_update_saves_and_loads(tmp_path):
    model = filled_model()
    model._functional_update = FunctionalUpdate(model, compile=False)
    model.train(gradient_steps=2, batch_size=16)
    model.save(tmp_path / "model")
    loaded = BRCDQN.load(tmp_path / "model", env=two_tasks())
    assert loaded._functional_update is None  # compile_update=False: rebuilt as the model says, never pickled
    for expected, actual in zip(optimizer_states(model), optimizer_states(loaded), strict=True):
        assert th.equal(expected, actual)


def test_compile_update_is_off_by_default_and_refuses_what_it_cannot_run():
    default = BRCDQN("MlpPolicy", "CartPole-v1", policy_kwargs=TINY_DQN)
    assert default.compile_update is False and default._functional_update is None
    sgd = filled_model(policy_kwargs=dict(optimizer_class=th.optim.SGD))
    assert unsupported_reason(sgd) == "the optimiser is SGD, not Adam"
    with pytest.raises(ValueError, match="compile_update=True cannot run this BRCDQN's update: the optimiser is SGD"):
        filled_model(policy_kwargs=dict(optimizer_class=th.optim.SGD), compile_update=True)
    with pytest.raises(ValueError, match="compile_update must be True or False, got 'auto'"):
        BRCDQN("MlpPolicy", "CartPole-v1", compile_update="auto")
