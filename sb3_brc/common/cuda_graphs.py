"""A training step captured once as a CUDA graph and replayed, for updates bound by kernel launches."""

from collections.abc import Callable
from typing import Any

import torch as th
from torch.utils._pytree import tree_flatten, tree_map_only


class CapturedStep:
    """``step(*inputs)`` captured as one CUDA graph over static copies of its tensor inputs, then replayed.

    A small network's update is hundreds of short kernels, each launched by the host: on a GPU the update waits on the
    launches, not on the math. Replaying a captured graph launches them all at once.

    The first ``warmup`` calls run the step eagerly on a side stream; they are real steps, and they initialise what the
    capture must find ready (optimiser state, cuBLAS workspaces, compiled kernels). The next call captures the step and
    replays it; every later call copies its inputs into the captured ones and replays. Outputs are cloned, since the
    next replay overwrites the graph's own.

    The step must run the same kernels on every call: no host synchronisation (``.item()``, data-dependent shapes),
    no Python branch on tensor values, and optimisers built with ``capturable=True``. Whoever changes what the step does
    (another batch shape, frozen parameters, a new optimiser) makes a new ``CapturedStep``.

    :param step: Function of tensors (or nested tuples and dicts of them) returning the same
    :param warmup: Eager calls before the capture
    """

    def __init__(self, step: Callable[..., Any], warmup: int = 3):
        self.step = step
        self.warmup = warmup
        self.eager_calls = 0
        self.graph: th.cuda.CUDAGraph | None = None
        self.spec: Any = None
        self.static_inputs: list[Any] = []
        self.static_outputs: Any = None

    def __call__(self, *inputs: Any) -> Any:
        if self.eager_calls < self.warmup:
            self.eager_calls += 1
            side_stream = th.cuda.Stream()
            side_stream.wait_stream(th.cuda.current_stream())
            with th.cuda.stream(side_stream):
                outputs = self.step(*inputs)
            th.cuda.current_stream().wait_stream(side_stream)
            return outputs
        leaves, spec = tree_flatten(inputs)
        if self.graph is None:
            self.spec = spec
            self.static_inputs = [leaf.clone() if isinstance(leaf, th.Tensor) else leaf for leaf in leaves]
            self.graph = th.cuda.CUDAGraph()
            with th.cuda.graph(self.graph):
                self.static_outputs = self.step(*self.spec.unflatten(self.static_inputs))
        else:
            self._copy_inputs(leaves, spec)
        self.graph.replay()
        return tree_map_only(th.Tensor, th.clone, self.static_outputs)

    def _copy_inputs(self, leaves: list[Any], spec: Any) -> None:
        if spec != self.spec:
            raise ValueError(f"CapturedStep called with inputs structured as {spec}, captured with {self.spec}")
        for static, leaf in zip(self.static_inputs, leaves, strict=True):
            if isinstance(static, th.Tensor):
                if leaf.shape != static.shape or leaf.dtype != static.dtype:
                    raise ValueError(
                        f"CapturedStep called with a {leaf.dtype} tensor of shape {tuple(leaf.shape)} where it captured "
                        f"{static.dtype} {tuple(static.shape)}: make a new CapturedStep for other shapes"
                    )
                static.copy_(leaf, non_blocking=True)
            elif leaf != static:
                raise ValueError(f"CapturedStep called with {leaf!r} where it captured {static!r}")
