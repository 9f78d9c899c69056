"""BRCDQN's gradient update as one pure function of (parameters, optimiser state, batch, shifts), compiled as one graph.

The eager update (``BRCDQN._gradient_update``) calls ``backward()`` and ``Optimizer.step()``, where ``torch.compile``
breaks its graph. Here the same loss (``BRCDQN._q_loss``: DrQ's shifts, the double-Q n-step target, the categorical
cross-entropy, run on the parameters given) is differentiated with ``torch.func.grad_and_value``, and the gradient-norm
clipping and Adam are plain tensor code, so that the whole update compiles into one graph. The parameters and the
optimiser's own state tensors are written back in place at its end, so saving, loading and the eager update see one
state. The augmentation's random shifts are drawn outside the graph, as the eager update draws them, so both paths
compute the same numbers from the same seed. The target network's update stays where it is (``BRCDQN._on_step``).
"""

from typing import TYPE_CHECKING, Any

import torch as th

from sb3_brc.common.functional import (
    ParametersCall,
    Tensors,
    adam_inputs,
    adam_step,
    clip_grad_norm,
    compile_update,
    optimizer_state,
    trained_names,
)

if TYPE_CHECKING:
    from sb3_brc.dqn.dqn import BRCDQN


def unsupported_reason(model: "BRCDQN") -> str | None:
    """Why the functional update cannot run ``model``'s update (None when it can): it implements Adam / AdamW with one
    parameter group, without BatchNorm statistics."""
    optimizer = model.policy.optimizer
    if type(optimizer) not in (th.optim.Adam, th.optim.AdamW):
        return f"the optimiser is {type(optimizer).__name__}, not Adam"
    if len(optimizer.param_groups) != 1:
        return "the optimiser has several parameter groups"
    if optimizer.param_groups[0].get("differentiable"):
        return "a differentiable optimiser"
    if model.batch_norm_stats:
        return "the network holds BatchNorm statistics"
    return None


class FunctionalUpdate:
    """Runs BRCDQN's gradient update as one pure function, compiled once (``fullgraph``) unless ``compile=False``.

    Called like ``BRCDQN._gradient_update`` (same arguments, the loss returned).

    :param model: The BRCDQN whose update it runs
    :param compile: Compile the update with ``torch.compile(fullgraph=True)``; False runs the same function eagerly
    """

    def __init__(self, model: "BRCDQN", compile: bool = True):
        reason = unsupported_reason(model)
        if reason is not None:
            raise ValueError(f"compile_update=True cannot run this BRCDQN's update: {reason}. Use compile_update=False.")
        self.model = model
        self.call = ParametersCall(model.policy)
        self.update = compile_update(self._update) if compile else self._update

    def __call__(self, replay_data: Any, reward_scale: th.Tensor, shifts: tuple[th.Tensor, th.Tensor] | None) -> th.Tensor:
        optimizer = self.model.policy.optimizer
        named = dict(self.call.named_parameters())
        trained = trained_names(named, optimizer)
        state = optimizer_state(optimizer, [named[name] for name in trained])
        settings, lr = adam_inputs(optimizer, self.model.device)
        # Detached aliases: the graph writes the new values into them in place
        params = {name: param.detach() for name, param in named.items()}
        return self.update(params, trained, state, settings, lr, replay_data, reward_scale, shifts)

    def _update(
        self,
        params: Tensors,
        trained: list[str],
        state: list[Tensors],
        settings: dict[str, Any],
        lr: th.Tensor,
        replay_data: Any,
        reward_scale: th.Tensor,
        shifts: tuple[th.Tensor, th.Tensor] | None,
    ) -> th.Tensor:
        model = self.model

        def q_loss(values: Tensors) -> tuple[th.Tensor, th.Tensor]:
            inputs = (model._q_loss, replay_data, reward_scale, shifts)
            return th.func.functional_call(self.call, {**params, **values}, inputs)

        grads, (loss, _) = th.func.grad_and_value(q_loss, has_aux=True)({name: params[name] for name in trained})
        gradients = [grads[name] for name in trained]
        if model.max_grad_norm is not None:
            gradients = clip_grad_norm(gradients, model.max_grad_norm)
        new_params, new_state = adam_step([params[name] for name in trained], gradients, state, settings, lr)
        # Write the new values into the parameters and the optimiser's state, in the graph
        for name, value in zip(trained, new_params, strict=True):
            params[name].copy_(value)
        for slot, original in zip(new_state, state, strict=True):
            for key, value in slot.items():
                original[key].copy_(value)
        return loss.detach()
