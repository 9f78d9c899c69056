"""How BRCSAC runs its gradient update: the same maths (``BRCSAC._gradient_update``, the eager reference) run eagerly,
with compiled losses, as one compiled graph (:class:`~sb3_brc.sac.functional_update.FunctionalUpdate`), or captured
in CUDA graphs (:class:`~sb3_brc.common.cuda_graphs.CapturedStep`), with or without bf16 autocast. The choice is made
where the model runs (also after ``load()`` on another machine), from ``mixed_precision``, ``compile_update`` and
``cuda_graph``."""

import warnings
from collections.abc import Callable
from typing import TYPE_CHECKING

import torch as th

from sb3_brc.common.cuda_graphs import CapturedStep
from sb3_brc.common.functional import with_own_code
from sb3_brc.common.utils import native_bf16_matmul
from sb3_brc.sac.functional_update import FunctionalUpdate, compiles_by_default, unsupported_reason

if TYPE_CHECKING:
    from sb3_brc.sac.sac import BRCSAC

#: A gradient update: (replay data, scaled rewards, Polyak or not, actor trainable) -> (statistics, entropies)
Update = Callable[..., tuple[dict[str, th.Tensor], th.Tensor]]


class UpdateRunner:
    """Runs the gradient updates of ``model`` the way its settings and device call for.

    :param model: The BRCSAC (its networks and optimisers built)
    """

    def __init__(self, model: "BRCSAC"):
        self.model = model
        # Emulated bf16 would be a trap: many times slower than float32
        self.autocast_bf16 = model.mixed_precision and native_bf16_matmul(model.device)
        if model.mixed_precision and not self.autocast_bf16:
            warnings.warn(
                f"mixed_precision=True ignored: {model.device} has no native bf16 matrix multiply (CUDA compute capability "
                "8.0+, or a CPU with AVX512-BF16 or AMX), and emulated bf16 runs many times slower than float32. "
                "Training in float32.",
                stacklevel=4,  # the user's BRCSAC(...) line
            )
        self.capture = model.cuda_graph and model.device.type == "cuda"
        if model.cuda_graph and not self.capture:
            warnings.warn(f"cuda_graph=True ignored: {model.device} is not a CUDA device. Training eagerly.", stacklevel=4)
        if self.capture and model.compile_update is True:
            # The compiled losses' backward fails inside a capture (torch 2.11: "dependency created on uncaptured work
            # in another stream"); on a GPU the graph is what pays, far more than compiling (figures: the performance
            # guide)
            raise ValueError("cuda_graph=True and compile_update=True do not combine yet: choose cuda_graph=True on a GPU.")
        self.captured: dict[tuple, CapturedStep] = {}
        # The losses the eager update calls (compiled where the whole update cannot be)
        self.critic_loss, self.actor_loss = model._critic_loss, model._actor_loss
        self.functional: FunctionalUpdate | None = None
        if model.compile_update is True:
            if unsupported_reason(model, self) is None:
                self.functional = FunctionalUpdate(model)
            else:
                self.critic_loss = th.compile(with_own_code(model._critic_loss))
                self.actor_loss = th.compile(with_own_code(model._actor_loss))

    def start_learning(self, updates: int) -> None:
        """``compile_update="auto"``: compile the whole update for a ``learn()`` call of ``updates`` updates when the
        rule of :func:`~sb3_brc.sac.functional_update.compiles_by_default` says so."""
        if self.model.compile_update == "auto" and self.functional is None and compiles_by_default(self.model, self, updates):
            self.functional = FunctionalUpdate(self.model)

    def autocast(self) -> th.autocast:
        """bf16 autocast of the update's forward passes where mixed precision is on (its weight cache would outlive a
        graph capture: off when capturing; each weight is cast once per autocast block anyway)."""
        return th.autocast(
            self.model.device.type, dtype=th.bfloat16, enabled=self.autocast_bf16, cache_enabled=not self.capture
        )

    def update(self, batch_size: int, polyak: bool) -> Update:
        """The update to run next: captured (one graph per batch size, Polyak or not, and set of trained
        parameters), compiled, or eager."""
        if self.capture:
            trainable = tuple(param.requires_grad for param in self.model.policy.parameters())
            key = (batch_size, polyak, trainable)
            if key not in self.captured:
                self.captured[key] = CapturedStep(self.model._gradient_update)
            return self.captured[key]
        return self.functional or self.model._gradient_update

    def parameter_norm(self) -> th.Tensor:
        """The sum of the parameters' norms after the last update, for ``train()``'s health check: the compiled
        update's, computed in its graph (a walk over the parameters outside it costs a small update a few per
        cent), else by a walk."""
        if self.functional is not None and not self.capture and self.functional.parameter_norm is not None:
            return self.functional.parameter_norm
        return th.stack(th._foreach_norm([param.detach() for param in self.model.policy.parameters()])).sum()

    def prepare(self, optimizers: list[th.optim.Optimizer], learning_rate: float) -> None:
        """Give ``optimizers`` the form the update needs and the learning rate of this ``train()`` call.

        Captured updates need optimisers that step on the device alone (``capturable``, their step count and learning
        rate as device tensors, the latter so that a schedule reaches the graph); eager ones plain ones, also when a
        model saved by a captured run is loaded where it runs eagerly."""
        for optimizer in optimizers:
            for group in optimizer.param_groups:
                if group.get("capturable", False) != self.capture or isinstance(group["lr"], th.Tensor) != self.capture:
                    group["capturable"] = self.capture
                    lr = float(group["lr"])
                    group["lr"] = th.tensor(lr, device=self.model.device) if self.capture else lr
                    for param in group["params"]:
                        state = optimizer.state.get(param, {})
                        if "step" in state:  # where torch keeps it: with the parameter when capturable or fused
                            on_device = self.capture or group.get("fused")
                            state["step"] = state["step"].to(param.device if on_device else "cpu")
                    self.captured.clear()
                if isinstance(group["lr"], th.Tensor):
                    group["lr"].fill_(learning_rate)  # read on the device by the captured update
                else:
                    group["lr"] = learning_rate

    def forget_tensors(self) -> None:
        """Drop the captured updates and the compiled update's kept inputs: the tensors they read were replaced (loaded
        parameters, a new optimiser)."""
        self.captured.clear()
        if self.functional is not None:
            self.functional.forget()
