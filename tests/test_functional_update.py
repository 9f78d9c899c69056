"""The whole update as one pure function (``compile_update``): the same parameters, optimiser state and logs as
the eager update, and the rule that decides when ``compile_update="auto"`` compiles it."""

import numpy as np
import pytest
import torch as th
from envs import TargetEnv

from sb3_brc import BRCSAC, MultiTaskVecEnv
from sb3_brc.common.functional import compile_update
from sb3_brc.sac import functional_update
from sb3_brc.sac.functional_update import COMPILE_MIN_UPDATES, FunctionalUpdate, compiles_by_default, unsupported_reason
from sb3_brc.tools.transfer import add_tasks, new_task_env


def two_task_env():
    return MultiTaskVecEnv([lambda: TargetEnv(obs_dim=3, act_dim=2), lambda: TargetEnv(obs_dim=4, act_dim=1)])


def filled_model(env_fn=two_task_env, **kwargs):
    kwargs = dict(dict(learning_starts=200, batch_size=32, seed=0, compile_update=False), **kwargs)
    policy_kwargs = dict(dict(net_arch=dict(pi=[16], qf=[32, 32]), n_atoms=11), **kwargs.pop("policy_kwargs", {}))
    model = BRCSAC("MlpPolicy", env_fn(), policy_kwargs=policy_kwargs, **kwargs)
    model.learn(200)  # fills the buffer, no update yet
    return model


def optimizer_states(model):
    optimizers = [model.actor.optimizer, model.critic.optimizer]
    optimizers += [model.ent_coef_optimizer] if model.ent_coef_optimizer is not None else []
    return [value for optimizer in optimizers for state in optimizer.state.values() for value in state.values()]


def assert_same_training(eager, functional, calls=3, rtol=1e-5, atol=1e-6):
    for call in range(calls):
        for model in (eager, functional):
            th.manual_seed(call)
            np.random.seed(call)  # the replay sample
            model.train(gradient_steps=2, batch_size=32)
        assert eager.logger.name_to_value == pytest.approx(functional.logger.name_to_value, rel=rtol, abs=atol)
    named = dict(functional.policy.named_parameters())
    for name, expected in eager.policy.named_parameters():
        th.testing.assert_close(named[name], expected, rtol=rtol, atol=atol, msg=name)
    # The moments average gradients, which the two differentiate in another order of rounding
    for expected, actual in zip(optimizer_states(eager), optimizer_states(functional), strict=True):
        th.testing.assert_close(actual, expected, rtol=10 * rtol, atol=10 * atol)
    if eager.log_ent_coef is not None:
        th.testing.assert_close(functional.log_ent_coef, eager.log_ent_coef, rtol=rtol, atol=atol)


CASES = {
    "two tasks": dict(),
    "single task": dict(env_fn=lambda: TargetEnv(obs_dim=4, act_dim=2)),
    "fixed temperature": dict(ent_coef=0.05),
    "lr schedule, Polyak every 2nd update": dict(learning_rate=lambda progress: 1e-3 * progress, target_update_interval=2),
    "AdamW settings": dict(policy_kwargs=dict(optimizer_kwargs=dict(amsgrad=True, weight_decay=0.1, eps=1e-6))),
}


@pytest.mark.parametrize("case", CASES)
def test_functional_update_equals_the_eager_update(case):
    # The same function uncompiled: differentiated with torch.func, AdamW and Adam as plain tensor code
    eager, functional = filled_model(**CASES[case]), filled_model(**CASES[case])
    functional._updates.functional = FunctionalUpdate(functional, compile=False)
    assert_same_training(eager, functional)


def test_functional_update_with_a_frozen_actor_trains_the_rest():
    eager, functional = filled_model(), filled_model()
    for model in (eager, functional):
        model.actor.requires_grad_(False)
    functional._updates.functional = FunctionalUpdate(functional, compile=False)
    actor_before = [p.clone() for p in functional.actor.parameters()]
    assert_same_training(eager, functional)
    assert all(th.equal(a, b) for a, b in zip(actor_before, functional.actor.parameters(), strict=True))


def test_the_functional_update_follows_frozen_parameters_and_loaded_states(tmp_path):
    # It keeps its inputs (parameters, optimiser states) from update to update: freezing a part, a load that puts the
    # optimisers' state into new tensors, or parameters moved to new storage must reach it
    eager, functional = filled_model(), filled_model()
    functional._updates.functional = FunctionalUpdate(functional, compile=False)
    assert_same_training(eager, functional, calls=1)
    for model in (eager, functional):
        model.actor.requires_grad_(False)
    assert_same_training(eager, functional, calls=1)
    eager.save(tmp_path / "eager")
    for model in (eager, functional):
        model.set_parameters(str(tmp_path / "eager.zip"))
    assert_same_training(eager, functional, calls=1)
    for model in (eager, functional):
        for param in model.policy.parameters():
            param.data = param.data.clone()  # what Module.to() does to each parameter on a change of device
    assert_same_training(eager, functional, calls=1)


@pytest.mark.parametrize("backend", ["aot_eager", pytest.param("inductor", marks=pytest.mark.slow)])
def test_compiled_functional_update_equals_the_eager_update(monkeypatch, backend):
    # One graph (fullgraph=True: no break at backward or the optimiser steps). "aot_eager" traces the forward and
    # backward graphs as inductor gets them, quickly; "inductor" (the default backend, a minute to compile on a CPU)
    # also runs its generated kernels
    compile_fn = th.compile
    monkeypatch.setattr(th, "compile", lambda fn, **kwargs: compile_fn(fn, **kwargs, backend=backend))
    eager, compiled = filled_model(), filled_model(compile_update=True)
    assert isinstance(compiled._updates.functional, FunctionalUpdate)
    assert_same_training(eager, compiled, rtol=1e-4, atol=1e-5)
    th._dynamo.reset()


def test_a_compiled_update_is_compiled_anew_when_the_parameters_change_shape(monkeypatch):
    # The graph does not guard the parameters and optimiser states (compile_update's ``unguarded``): new task
    # embeddings must reach a graph compiled for them, not one traced for fewer rows
    compile_fn = th.compile
    monkeypatch.setattr(th, "compile", lambda fn, **kwargs: compile_fn(fn, **kwargs, backend="aot_eager"))
    eager, compiled = filled_model(), filled_model(compile_update=True)
    assert_same_training(eager, compiled, calls=1, rtol=1e-4, atol=1e-5)
    first_graph = compiled._updates.functional.update
    for model in (eager, compiled):
        new_env = new_task_env(model, [lambda: TargetEnv(obs_dim=2, act_dim=2)], task_names=["new"])
        add_tasks(model, new_env, keep_replay=True)
    assert_same_training(eager, compiled, calls=1, rtol=1e-4, atol=1e-5)
    assert compiled._updates.functional.update is not first_graph
    th._dynamo.reset()


def test_compile_update_does_not_guard_the_tensors_its_caller_keeps(monkeypatch):
    # What the caller's layout check stands in for: a kept tensor of another shape reuses the graph (backend "eager"
    # replays it at any shape), any other argument's does not
    from torch._dynamo.utils import counters

    compile_fn = th.compile
    monkeypatch.setattr(th, "compile", lambda fn, **kwargs: compile_fn(fn, **kwargs, backend="eager"))

    class Update:
        def run(self, params, states, batch):
            return (batch @ params["weight"]).sum() + states[0]["moment"].sum()

    update = compile_update(Update().run, unguarded=("params", "states"))
    graphs_before = counters["stats"]["unique_graphs"]
    update({"weight": th.ones(3, 2)}, [{"moment": th.ones(2)}], th.ones(4, 3))
    update({"weight": th.ones(3, 5)}, [{"moment": th.ones(7)}], th.ones(4, 3))
    assert counters["stats"]["unique_graphs"] - graphs_before == 1
    update({"weight": th.ones(3, 5)}, [{"moment": th.ones(7)}], th.ones(6, 3))
    assert counters["stats"]["unique_graphs"] - graphs_before == 2
    th._dynamo.reset()


def test_every_model_of_a_process_gets_its_compiled_update(monkeypatch):
    # torch.compile stops compiling a function after its recompile limit (8): the models of one process (trials of a
    # search over widths, runs of a worker) must not share one compiled function, or the ninth would run uncompiled
    from torch._dynamo.utils import counters

    compile_fn = th.compile
    monkeypatch.setattr(th, "compile", lambda fn, **kwargs: compile_fn(fn, **kwargs, backend="eager"))
    models = [
        filled_model(lambda: TargetEnv(obs_dim=2, act_dim=1), compile_update=True, policy_kwargs=dict(net_arch=[8 + i]))
        for i in range(9)
    ]
    graphs_before = counters["stats"]["unique_graphs"]
    for model in models:
        model.train(gradient_steps=1, batch_size=32)
    assert counters["stats"]["unique_graphs"] - graphs_before == 9
    th._dynamo.reset()


def test_a_model_trained_by_the_functional_update_saves_and_resumes(tmp_path):
    model = filled_model()
    model._updates.functional = FunctionalUpdate(model, compile=False)
    model.train(gradient_steps=2, batch_size=32)
    model.save(tmp_path / "model")
    loaded = BRCSAC.load(tmp_path / "model", env=two_task_env())
    for expected, actual in zip(optimizer_states(model), optimizer_states(loaded), strict=True):
        assert th.equal(expected, actual)


def test_auto_compiles_long_cpu_runs_only(monkeypatch):
    model = filled_model()
    assert model.compile_update is False and model._updates.functional is None
    auto = filled_model(compile_update="auto")
    assert auto._updates.functional is None  # learn(200): no update, nothing compiled
    monkeypatch.setattr(functional_update, "_cpp_compiler_found", lambda: True)
    runner = auto._updates
    assert compiles_by_default(auto, runner, COMPILE_MIN_UPDATES)
    assert not compiles_by_default(auto, runner, COMPILE_MIN_UPDATES - 1)
    # A learn() call long enough gets the compiled update (built here, compiled at its first update)
    updates_per_env_step = auto.gradient_steps // auto.train_freq.frequency
    auto._setup_learn(auto.num_timesteps + (COMPILE_MIN_UPDATES // updates_per_env_step + 1) * auto.n_envs, None, False)
    assert isinstance(auto._updates.functional, FunctionalUpdate)
    # Not without a C++ compiler for inductor, nor for an update it cannot run, nor on another device
    monkeypatch.setattr(functional_update, "_cpp_compiler_found", lambda: False)
    assert not compiles_by_default(auto, runner, 10 * COMPILE_MIN_UPDATES)
    monkeypatch.setattr(functional_update, "_cpp_compiler_found", lambda: True)
    adam = filled_model(policy_kwargs=dict(optimizer_class=th.optim.Adam), compile_update="auto")
    assert unsupported_reason(adam, adam._updates) == "the actor's and critic's optimiser is not AdamW"
    assert not compiles_by_default(adam, adam._updates, 10 * COMPILE_MIN_UPDATES)
    monkeypatch.setattr(auto, "device", th.device("cuda"))
    assert not compiles_by_default(auto, runner, 10 * COMPILE_MIN_UPDATES)
    with pytest.raises(ValueError, match="compile_update must be True, False or 'auto', got 'yes'"):
        BRCSAC("MlpPolicy", TargetEnv(), compile_update="yes")
