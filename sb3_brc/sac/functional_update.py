"""BRCSAC's gradient update as one pure function of (parameters, optimiser state, batch, noise), compiled as one graph.

The eager update (``BRCSAC._gradient_update``) calls ``backward()`` and ``Optimizer.step()``, where ``torch.compile``
breaks its graph: compiling there only reaches the losses. Here the same losses (``BRCSAC._critic_loss`` and
``BRCSAC._actor_loss``, run on the parameters given) are differentiated with ``torch.func.grad_and_value``, and AdamW,
Polyak averaging and the temperature's Adam are plain tensor code, so that the whole update (critic, target, actor,
temperature, logged statistics) compiles into one graph. The parameters and the torch optimisers' own state tensors
are read as the graph's inputs and written back in place at its end: saving, loading and the eager update see the
same state. The noise that samples actions is drawn outside the graph, in the eager update's order, so both paths
compute the same numbers from the same seed.
"""

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import torch as th

from sb3_brc.common.functional import (
    ParametersCall,
    Tensors,
    adam_inputs,
    adam_step,
    compile_update,
    layout,
    optimizer_state,
    trained_names,
)

if TYPE_CHECKING:
    from sb3_brc.sac.sac import BRCSAC
    from sb3_brc.sac.update_runner import UpdateRunner


#: Gradient updates of one ``learn()`` call from which ``compile_update="auto"`` compiles the update on a CPU: its
#: compile time (paid once per process; inductor's cache shortens later ones) is then a small part of the run
COMPILE_MIN_UPDATES = 20_000


def compiles_by_default(model: "BRCSAC", runner: "UpdateRunner", updates: int) -> bool:
    """``compile_update="auto"``'s rule: compile the whole update for ``updates`` gradient updates of ``model`` when
    they are at least :data:`COMPILE_MIN_UPDATES`, on a CPU (on a GPU, ``cuda_graph=True`` is the fast path), with a
    C++ compiler for inductor's kernels, and an update it can run (:func:`unsupported_reason`)."""
    return (
        updates >= COMPILE_MIN_UPDATES
        and model.device.type == "cpu"
        and unsupported_reason(model, runner) is None
        and _cpp_compiler_found()
    )


def _cpp_compiler_found() -> bool:
    try:
        from torch._inductor.cpp_builder import get_cpp_compiler

        get_cpp_compiler()
    except Exception:  # no compiler (or an inductor without this helper): stay eager
        return False
    return True


def unsupported_reason(model: "BRCSAC", runner: "UpdateRunner") -> str | None:
    """Why the functional update cannot run ``model``'s update as ``runner`` would (None when it can): it implements
    AdamW for the actor and critic (one parameter group each) and the temperature's Adam, in float32, without
    BatchNorm and without a CUDA-graph capture."""
    optimizers = [model.actor.optimizer, model.critic.optimizer]
    if any(type(optimizer) is not th.optim.AdamW for optimizer in optimizers):
        return "the actor's and critic's optimiser is not AdamW"
    if model.ent_coef_optimizer is not None and type(model.ent_coef_optimizer) not in (th.optim.Adam, th.optim.AdamW):
        return "the temperature's optimiser is not Adam"
    if any(len(optimizer.param_groups) != 1 for optimizer in optimizers):
        return "an optimiser has several parameter groups"
    if any(group.get("differentiable") for optimizer in optimizers for group in optimizer.param_groups):
        return "a differentiable optimiser"
    if model.batch_norm_stats:
        return "the networks hold BatchNorm statistics"
    if runner.autocast_bf16:
        return "mixed precision (bf16)"
    if runner.capture:
        return "updates captured in CUDA graphs"
    return None


class FunctionalUpdate:
    """Runs BRCSAC's gradient update as one pure function, compiled once (``fullgraph``) unless ``compile=False``
    (see :func:`unsupported_reason` for the updates it can run).

    Called like ``BRCSAC._gradient_update`` (same arguments, same returned statistics and entropies).

    :param model: The BRCSAC whose update it runs
    :param compile: Compile the update with ``torch.compile(fullgraph=True)``; False runs the same function eagerly
    """

    def __init__(self, model: "BRCSAC", compile: bool = True):
        self.model = model
        self.apply = ParametersCall(model.policy)
        self._named: dict[str, th.Tensor] | None = None
        self._inputs: tuple[Any, Tensors, dict[str, list[str]], dict[str, list[Tensors]]] | None = None
        self.compile = compile
        self.update: Callable[..., tuple[Tensors, th.Tensor, th.Tensor]] = self._update
        #: The sum of the parameters' norms after the last update (``train()``'s health check), from the graph
        self.parameter_norm: th.Tensor | None = None
        self._compiled_layout: tuple[Any, ...] | None = None

    def __call__(self, replay_data: Any, rewards: th.Tensor, polyak: bool, actor_trainable: bool) -> tuple[Tensors, th.Tensor]:
        model = self.model
        # The eager update's random draws, by the policy's own noise source and in its order: the next actions'
        # (critic target), then the actor's
        actions = th.empty((rewards.shape[0], model.actor.action_dist.action_dim), device=model.device)
        next_noise = model.actor.action_dist.standard_noise(actions)
        noise = model.actor.action_dist.standard_noise(actions)
        optimizers = dict(critic=model.critic.optimizer, actor=model.actor.optimizer)
        if model.ent_coef_optimizer is not None and model.log_ent_coef is not None:
            optimizers["temperature"] = model.ent_coef_optimizer
        params, trained, states = self._tensors(optimizers, actor_trainable)
        groups, lrs = {}, {}
        for part, optimizer in optimizers.items():
            groups[part], lrs[part] = adam_inputs(optimizer, model.device)
        stats, entropy, self.parameter_norm = self.update(
            params, trained, states, groups, lrs, replay_data, rewards, next_noise, noise, polyak
        )
        return stats, entropy

    def _tensors(
        self, optimizers: dict[str, th.optim.Optimizer], actor_trainable: bool
    ) -> tuple[Tensors, dict[str, list[str]], dict[str, list[Tensors]]]:
        """The update's tensor inputs: detached aliases of the parameters (the graph writes the new values into them in
        place), the names each optimiser trains, and its state of each. Kept from call to call (collecting them costs
        as much as a small update's own work) until the optimisers, the trainable parameters or the parameters' storage
        change, or :meth:`forget` is called because tensors were replaced."""
        if self._named is None:
            self._named = dict(self.apply.named_parameters())
            if "temperature" in optimizers:
                assert self.model.log_ent_coef is not None  # a learned temperature has its optimiser
                self._named["log_ent_coef"] = self.model.log_ent_coef
        # A parameter's storage is part of the key: Module.to() and ``param.data = ...`` replace it in place of the
        # Parameter, which the detached aliases would not follow
        params_key = ((param.requires_grad, param.data_ptr()) for param in self._named.values())
        key = (actor_trainable, *map(id, optimizers.values()), *params_key)
        if self._inputs is None or self._inputs[0] != key:
            trained, states = {}, {}
            for part, optimizer in optimizers.items():
                trainable = part != "actor" or actor_trainable  # a frozen actor's log_prob still drives alpha
                trained[part] = trained_names(self._named, optimizer) if trainable else []
                states[part] = optimizer_state(optimizer, [self._named[name] for name in trained[part]])
            params = {name: param.detach() for name, param in self._named.items()}
            self._inputs = (key, params, trained, states)
            if self.compile:
                # The graph does not check the parameters and states it is given (compile_update's ``unguarded``):
                # compiled anew when their layout changes (new task embeddings, another device)
                state_tensors = [t for slots in states.values() for slot in slots for t in slot.values()]
                kept = layout([*params.values(), *state_tensors])
                if kept != self._compiled_layout:
                    self.update = compile_update(self._update, unguarded=("params", "states"))
                    self._compiled_layout = kept
        return self._inputs[1:]

    def forget(self) -> None:
        """Collect the tensor inputs anew at the next update: parameters or optimiser states were replaced (a load, a
        new optimiser, new task embeddings)."""
        self._named, self._inputs = None, None

    def _update(
        self,
        params: Tensors,
        trained: dict[str, list[str]],
        states: dict[str, list[Tensors]],
        groups: dict[str, dict[str, Any]],
        lrs: Tensors,
        replay_data: Any,
        rewards: th.Tensor,
        next_noise: th.Tensor,
        noise: th.Tensor,
        polyak: bool,
    ) -> tuple[Tensors, th.Tensor, th.Tensor]:
        model = self.model
        new: Tensors = {}
        log_ent_coef = params.get("log_ent_coef")
        ent_coef = th.exp(log_ent_coef) if log_ent_coef is not None else model.ent_coef_tensor

        def run(function: Callable[..., Any], values: Tensors, *args: Any) -> Any:
            return th.func.functional_call(self.apply, {**params, **new, **values}, (function, *args))

        def step(part: str, grads: Tensors) -> None:
            names = trained[part]
            updated, new_states[part] = adam_step(
                [params[n] for n in names], [grads[n] for n in names], states[part], groups[part], lrs[part]
            )
            new.update(zip(names, updated, strict=True))

        def critic_loss(values: Tensors) -> tuple[th.Tensor, th.Tensor]:
            return run(model._critic_loss, values, replay_data, rewards, ent_coef, next_noise)

        new_states: dict[str, list[Tensors]] = {}
        critic_params = {n: params[n] for n in trained["critic"]}
        critic_grads, (loss, logits) = th.func.grad_and_value(critic_loss, has_aux=True)(critic_params)
        step("critic", critic_grads)
        if polyak:
            # Polyak right after the critic step, as in the reference (the task embedding included)
            for name in params:
                if name.startswith("policy.critic_target."):
                    online = name.replace("policy.critic_target.", "policy.critic.", 1)
                    new[name] = params[name].lerp(new.get(online, params[online]), model.tau)

        def actor_loss(values: Tensors) -> tuple[th.Tensor, th.Tensor]:
            return run(model._actor_loss, values, replay_data.observations, ent_coef, noise)

        actor_params = {n: params[n] for n in trained["actor"]}
        if actor_params:
            actor_grads, (actor_loss_value, log_prob) = th.func.grad_and_value(actor_loss, has_aux=True)(actor_params)
            step("actor", actor_grads)
        else:  # frozen after add_tasks(freeze=["actor"]): log_prob still drives alpha
            actor_loss_value, log_prob = actor_loss({})
        entropy = -log_prob
        stats = dict(critic_loss=loss, actor_loss=actor_loss_value, ent_coef=ent_coef.reshape(()))
        if log_ent_coef is not None:
            temperature_grad, temperature_loss = th.func.grad_and_value(model._temperature_loss)(log_ent_coef, entropy)
            step("temperature", {"log_ent_coef": temperature_grad})
            stats["ent_coef_loss"] = temperature_loss
        stats.update(model._critic_statistics(logits))
        # Write the new values into the parameters and the optimisers' state, in the graph
        for name, value in new.items():
            params[name].copy_(value)
        for part, slots in new_states.items():
            for slot, original in zip(slots, states[part], strict=True):
                for key, value in slot.items():
                    original[key].copy_(value)
        # The norm train()'s health check reads, computed here while the new values are at hand
        parameter_norm = th.stack([value.norm() for value in {**params, **new}.values()]).sum()
        return stats, entropy, parameter_norm
