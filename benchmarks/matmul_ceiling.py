"""How fast a BRC update could be on this CPU if only its matrix multiplies cost time.

Records every matmul of one ``BRCSAC.train()`` update (``mm``, ``addmm``, ``bmm``, ``baddbmm``, forward and
backward, with their shapes and memory layouts, through a ``TorchDispatchMode``), then replays those matmuls alone
on fresh tensors of the same layouts, back to back, and times them against the whole update and the machine's
fp32 matmul peak, all in one process. The replay is an upper bound for any implementation of the same update
(the official one included): its FLOPs are the update's (counted by torch's ``FlopCounterMode`` on both), and all
its other work is left out.

    python benchmarks/matmul_ceiling.py --threads 2 --widths 128 256 512 1024
"""

import argparse
import statistics
import time
from collections.abc import Callable
from typing import Any

import torch as th
from throughput import make_model, peak_matmul_gflops, updates_per_second
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils.flop_counter import FlopCounterMode

MATMULS = {th.ops.aten.mm.default, th.ops.aten.addmm.default, th.ops.aten.bmm.default, th.ops.aten.baddbmm.default}


class MatmulRecorder(TorchDispatchMode):
    """Keeps each matmul's op, the (shape, stride, dtype) of its tensor arguments and its other arguments."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[tuple[Any, list[Any], dict[str, Any]]] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func in MATMULS:
            layout = [(a.shape, a.stride(), a.dtype) if isinstance(a, th.Tensor) else a for a in args]
            self.calls.append((func, layout, dict(kwargs)))
        return func(*args, **kwargs)


def random_strided(shape: th.Size, stride: tuple[int, ...], dtype: th.dtype) -> th.Tensor:
    """Random values viewed with ``stride`` (broadcast biases have stride 0, transposed operands swapped strides)."""
    storage = 1 + sum((size - 1) * step for size, step in zip(shape, stride, strict=True))
    return th.randn(storage, dtype=dtype).as_strided(shape, stride)


def replay_of(calls: list[tuple[Any, list[Any], dict[str, Any]]]) -> Callable[[], None]:
    """A function running the recorded matmuls on random tensors of the recorded layouts."""
    prepared = []
    for func, layout, kwargs in calls:
        args = [random_strided(*item) if isinstance(item, tuple) else item for item in layout]
        prepared.append((func, args, kwargs))

    def replay() -> None:
        for func, args, kwargs in prepared:
            func(*args, **kwargs)

    return replay


def update_matmuls(model, batch: int) -> tuple[Callable[[], None], int, int]:
    """The replay of one update's matmuls, the update's FLOPs and its number of matmul calls; raises if the replay
    does not do exactly the update's matmul FLOPs (a matmul op the recorder does not know)."""
    recorder = MatmulRecorder()
    with FlopCounterMode(display=False) as update_counter, recorder:  # one update, counted and recorded
        model.train(gradient_steps=1, batch_size=batch)
    replay = replay_of(recorder.calls)
    with FlopCounterMode(display=False) as replay_counter:
        replay()
    flops = update_counter.get_total_flops()
    if replay_counter.get_total_flops() != flops:
        raise RuntimeError(f"replayed {replay_counter.get_total_flops()} FLOPs, the update counts {flops}: calls missed")
    return replay, flops, len(recorder.calls)


def runs_per_second(fn: Callable[[], None], seconds: float) -> float:
    fn()
    runs, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        fn()
        runs += 1
    return runs / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--widths", type=int, nargs="+", default=[128, 256, 512, 1024])
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seconds", type=float, default=4.0, help="timing window of each side, per slice")
    parser.add_argument("--slices", type=int, default=3, help="alternating timing windows per width")
    args = parser.parse_args()
    th.set_num_threads(args.threads)
    peak_start = peak_matmul_gflops()
    print(f"torch {th.__version__}, {args.threads} threads, batch {args.batch}; fp32 peak {peak_start:.1f} GFLOP/s")
    print(
        "| critic width | update upd/s | update % peak | matmuls alone upd/s | matmuls alone % peak | "
        "update time in matmuls | matmul calls per update |"
    )
    print("|---|---|---|---|---|---|---|")
    for width in args.widths:
        model = make_model("brc", width, args.batch)
        updates_per_second(model, args.batch, 1.0)  # warm-up
        replay, flops, n_calls = update_matmuls(model, args.batch)
        update_rates, replay_rates = [], []
        for _ in range(args.slices):
            update_rates.append(updates_per_second(model, args.batch, args.seconds))
            replay_rates.append(runs_per_second(replay, args.seconds))
        update_rate, replay_rate = statistics.median_high(update_rates), statistics.median_high(replay_rates)
        print(
            f"| {width} | {update_rate:.1f} | {100 * update_rate * flops / 1e9 / peak_start:.0f}% | {replay_rate:.1f} | "
            f"{100 * replay_rate * flops / 1e9 / peak_start:.0f}% | {100 * update_rate / replay_rate:.0f}% | "
            f"{n_calls} |",
            flush=True,
        )
    print(f"Rates: median of {args.slices} slices per side. fp32 peak at the end: {peak_matmul_gflops():.1f} GFLOP/s")


if __name__ == "__main__":
    main()
