"""Pieces of a gradient update written as one pure function, to be compiled as one graph (``torch.compile`` breaks
its graph at ``backward()`` and ``Optimizer.step()``): running a module's methods on given parameters, torch's Adam /
AdamW and gradient-norm clipping as plain tensor code, and the optimisers' state tensors. BRCSAC's and BRCDQN's
functional updates (``sac/functional_update.py``, ``dqn/functional_update.py``) are built from them."""

import types
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import torch as th
from torch import nn

Tensors = dict[str, th.Tensor]
# The settings of torch's Adam and AdamW that the update reads (the learning rate is an input of its own)
ADAM_SETTINGS = ("betas", "eps", "weight_decay", "amsgrad", "maximize", "decoupled_weight_decay")


def compile_update(update: Callable[..., Any], unguarded: tuple[str, ...] = ()) -> Callable[..., Any]:
    """``torch.compile`` of a pure update method as one graph (``fullgraph``, static shapes) whose kernels inductor
    calls from C++ (``cpp_wrapper``) instead of Python.

    :param update: A bound method, compiled for its object alone (:func:`with_own_code`)
    :param unguarded: Arguments (dicts or lists of tensors) whose tensors dynamo does not check at each call: for the
        hundred-odd parameters and optimiser states of an update those checks cost a few percent of a small update.
        The graph is then only valid for tensors laid out as at its compilation: the caller keeps their
        :func:`layout` and compiles anew when it changes.
    """

    def keep_guard(guards: list[Any]) -> list[bool]:
        names = tuple(f"{argument}[" for argument in unguarded)
        return [not (guard.guard_type == "TENSOR_MATCH" and guard.name.startswith(names)) for guard in guards]

    options: dict[str, str | int | bool | Callable[..., Any]] = {"cpp_wrapper": True, "guard_filter_fn": keep_guard}
    return th.compile(with_own_code(update), fullgraph=True, dynamic=False, options=options)


def layout(tensors: Iterable[th.Tensor]) -> tuple[Any, ...]:
    """What a compiled graph assumes of tensors it does not guard: shape, strides, dtype and device of each."""
    return tuple((tensor.shape, tensor.stride(), tensor.dtype, tensor.device) for tensor in tensors)


def with_own_code(method: Callable[..., Any]) -> Callable[..., Any]:
    """A bound ``method`` whose function has a code object of its own, to be compiled for its object alone.

    torch.compile keeps its compiled graphs per code object, one per shape of model up to a recompile limit (8):
    shared by every model of a process (hyperparameter trials over widths, a grid's runs in one worker), a method's
    code would stop compiling there (with ``fullgraph=True``: "Dynamo recompile limit exceeded")."""
    function = method.__func__  # type: ignore[attr-defined]  # a bound method
    own = types.FunctionType(
        function.__code__.replace(), function.__globals__, function.__name__, function.__defaults__, function.__closure__
    )
    own.__kwdefaults__ = function.__kwdefaults__
    return types.MethodType(own, method.__self__)  # type: ignore[attr-defined]


class ParametersCall(nn.Module):
    """Holds a policy so that ``torch.func.functional_call`` can run any of its methods on given parameters (BRCSAC's
    actor reads the critic's task embedding through a reference, which the reparametrisation reaches too)."""

    def __init__(self, policy: nn.Module):
        super().__init__()
        self.policy = policy

    def forward(self, function: Callable[..., Any], *args: Any) -> Any:
        return function(*args)


def adam_step(
    params: list[th.Tensor], grads: list[th.Tensor], state: list[Tensors], group: dict[str, Any], lr: th.Tensor
) -> tuple[list[th.Tensor], list[Tensors]]:
    """One step of torch's Adam / AdamW (decoupled weight decay) with ``group``'s settings, as torch computes it:
    the new parameters and the new state (moments, step count) of each."""
    beta1, beta2 = group["betas"]
    weight_decay, decoupled = group["weight_decay"], group.get("decoupled_weight_decay", True)  # AdamW: decoupled
    new_params, new_state = [], []
    for param, grad, slot in zip(params, grads, state, strict=True):
        if group["maximize"]:
            grad = -grad
        if weight_decay and not decoupled:
            grad = grad + weight_decay * param
        if weight_decay and decoupled:
            param = param * (1.0 - lr * weight_decay)
        new = dict(step=slot["step"] + 1, exp_avg=slot["exp_avg"].lerp(grad, 1.0 - beta1))
        new["exp_avg_sq"] = slot["exp_avg_sq"] * beta2 + (1.0 - beta2) * grad * grad
        second_moment = new["exp_avg_sq"]
        if group["amsgrad"]:
            second_moment = new["max_exp_avg_sq"] = th.maximum(slot["max_exp_avg_sq"], new["exp_avg_sq"])
        bias_correction1 = 1.0 - beta1 ** new["step"]
        denom = second_moment.sqrt() / (1.0 - beta2 ** new["step"]).sqrt() + group["eps"]
        new_params.append(param - (lr / bias_correction1) * new["exp_avg"] / denom)
        new_state.append(new)
    return new_params, new_state


def trained_names(named: Mapping[str, th.Tensor], optimizer: th.optim.Optimizer) -> list[str]:
    """The names among ``named`` of the parameters ``optimizer`` trains: those of its one parameter group that require
    gradients."""
    owned = {id(param) for param in optimizer.param_groups[0]["params"]}
    return [name for name, param in named.items() if id(param) in owned and param.requires_grad]


def adam_inputs(optimizer: th.optim.Optimizer, device: th.device) -> tuple[dict[str, Any], th.Tensor]:
    """The settings of the optimiser's one parameter group that :func:`adam_step` reads, and its learning rate as a
    tensor input (a schedule then changes it without recompiling)."""
    group = optimizer.param_groups[0]
    return {key: group[key] for key in ADAM_SETTINGS if key in group}, th.tensor(float(group["lr"]), device=device)


def optimizer_state(optimizer: th.optim.Optimizer, params: list[th.Tensor]) -> list[Tensors]:
    """The optimiser's state tensors of each parameter, created as torch creates them at its first step."""
    group = optimizer.param_groups[0]
    slots = []
    for param in params:
        state = optimizer.state[param]
        if not state:
            on_device = group.get("fused") or group.get("capturable")
            state["step"] = th.zeros((), dtype=th.float32, device=param.device if on_device else "cpu")
            state["exp_avg"] = th.zeros_like(param, memory_format=th.preserve_format)
            state["exp_avg_sq"] = th.zeros_like(param, memory_format=th.preserve_format)
            if group["amsgrad"]:
                state["max_exp_avg_sq"] = th.zeros_like(param, memory_format=th.preserve_format)
        slots.append(state)
    return slots


def clip_grad_norm(grads: list[th.Tensor], max_norm: float) -> list[th.Tensor]:
    """``grads`` scaled as ``torch.nn.utils.clip_grad_norm_`` scales them: by ``max_norm / (total 2-norm + 1e-6)``
    where that is below 1."""
    total_norm = th.linalg.vector_norm(th.stack([th.linalg.vector_norm(grad) for grad in grads]))
    scale = (max_norm / (total_norm + 1e-6)).clamp(max=1.0)
    return [grad * scale for grad in grads]
