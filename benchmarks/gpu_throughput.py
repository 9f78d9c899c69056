"""BRCSAC.train() on a CUDA GPU: eager and captured in CUDA graphs, fp32, TF32 and bf16, next to SB3 SAC at equal width.

For each batch size and critic width it prints updates/s (2 gradient updates per train() call, as BRC's default),
achieved TFLOP/s (exact matmul FLOP count of one eager update, torch's FlopCounterMode) as a share of the peak of the
precision used (measured in the same run on 8192^3 products), and, at the first batch size, the share of wall time
the GPU is busy running kernels (torch profiler, kernel time / wall time over 10 updates) and the kernel launches per
update: far below 100% busy means the update waits on launches and Python, not on the GPU. "graph" rows run
``BRCSAC(cuda_graph=True)`` (each update replayed from one CUDA graph); ``--compile-widths`` adds
``compile_update=True``; ``--learn-widths`` times whole ``learn()`` loops, eager against graph.
Rows are printed as they finish and appended as JSON lines to ``--out``; ``--budget-s`` stops starting new
configurations after that many seconds.

    python benchmarks/gpu_throughput.py --out gpu.jsonl                         # widths 512-4096, batch 256 and 1024
    python benchmarks/gpu_throughput.py --widths 512 --batches 256 --compile-widths   # quick look, no compile
"""

import argparse
import json
import time

import torch as th
from throughput import flops_per_update, make_model, updates_per_second
from torch.profiler import ProfilerActivity, profile

PRECISIONS = {"fp32": "highest", "tf32": "high"}  # torch.set_float32_matmul_precision per fp32 mode
# (algorithm, precision, how BRCSAC runs its update)
CONFIGS = [
    ("brc", "fp32", "eager"),
    ("brc", "fp32", "graph"),
    ("brc", "tf32", "eager"),
    ("brc", "tf32", "graph"),
    ("brc", "bf16", "eager"),
    ("brc", "bf16", "graph"),
    ("sac", "fp32", "eager"),
    ("sac", "tf32", "eager"),
]
UPDATE_OPTIONS = {
    "eager": {},
    "graph": dict(cuda_graph=True),
    "compile": dict(compile_update=True),
}


def synchronize() -> None:
    if th.cuda.is_available():
        th.cuda.synchronize()


def peak_tflops(dtype: th.dtype, device: str, size: int = 8192, repeats: int = 10) -> float:
    a, b = th.randn(size, size, device=device, dtype=dtype), th.randn(size, size, device=device, dtype=dtype)
    for _ in range(3):
        a @ b
    synchronize()
    start = time.perf_counter()
    for _ in range(repeats):
        a @ b
    synchronize()
    return 2 * size**3 * repeats / (time.perf_counter() - start) / 1e12


def kernel_profile(model, batch: int, updates: int = 10) -> tuple[float, float]:
    """(GPU kernel seconds, kernel launches) per gradient update, from the torch profiler over ``updates`` updates.

    Kernel seconds times the unprofiled updates/s is the share of wall time the GPU is busy."""
    model.train(gradient_steps=2, batch_size=batch)
    synchronize()
    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        model.train(gradient_steps=updates, batch_size=batch)
        synchronize()
    averages = prof.key_averages()
    kernel_us = sum(getattr(e, "self_device_time_total", 0) for e in averages)
    launches = sum(e.count for e in averages if e.key in ("cudaLaunchKernel", "cuLaunchKernel", "cudaLaunchKernelExC"))
    graph_launches = sum(e.count for e in averages if e.key == "cudaGraphLaunch")
    return kernel_us / 1e6 / updates, (launches + graph_launches) / updates


def time_updates(model, batch: int, seconds: float) -> float:
    """Updates per second after 4 warm-up updates (compilation, the eager updates before a capture, the capture)."""
    for _ in range(2):
        model.train(gradient_steps=2, batch_size=batch)
    return updates_per_second(model, batch, seconds)


def learn_rate(model, env_steps: int) -> tuple[float, float]:
    """(env steps/s, updates/s) of ``model.learn(env_steps)`` on a filled buffer (2 updates per env step)."""
    model.learn(200, reset_num_timesteps=False)  # warm-up: compilation, capture
    synchronize()
    start = time.perf_counter()
    model.learn(env_steps, reset_num_timesteps=False)
    synchronize()
    seconds = time.perf_counter() - start
    return env_steps / seconds, 2 * env_steps / seconds


class Bench:
    """One run: the peaks, the output file, the FLOP counts and the time budget shared by its sections."""

    def __init__(self, args: argparse.Namespace):
        self.args, self.begin = args, time.perf_counter()
        self.peaks = {}
        for name, mode in PRECISIONS.items():
            th.set_float32_matmul_precision(mode)
            self.peaks[name] = peak_tflops(th.float32, args.device, args.peak_size)
        self.peaks["bf16"] = peak_tflops(th.bfloat16, args.device, args.peak_size)
        name = th.cuda.get_device_name() if args.device.startswith("cuda") else args.device
        print(f"{name}, torch {th.__version__}, peak matmul TFLOP/s (8192^3): {self.peaks}", flush=True)
        self.out = open(args.out, "a")
        self.flops: dict[tuple[str, int, int], float] = {}

    def within_budget(self) -> bool:
        if time.perf_counter() - self.begin > self.args.budget_s:
            print("budget spent, stopping", flush=True)
            return False
        return True

    def write(self, row: dict) -> None:
        self.out.write(json.dumps(row) + "\n")
        self.out.flush()

    def run(self, algo: str, precision: str, update: str, width: int, batch: int, profile_it: bool) -> None:
        th.set_float32_matmul_precision(PRECISIONS.get(precision, "highest"))
        options = UPDATE_OPTIONS[update] if algo == "brc" else {}
        model = make_model("brc-bf16" if precision == "bf16" else algo, width, batch, device=self.args.device, **options)
        if (algo, width, batch) not in self.flops:  # the first model of each algorithm and size runs eagerly
            self.flops[algo, width, batch] = flops_per_update(model, batch)
        start = time.perf_counter()
        model.train(gradient_steps=2, batch_size=batch)
        first_s = time.perf_counter() - start  # compilation, when compiled
        ups = time_updates(model, batch, self.args.seconds)
        tflops = ups * self.flops[algo, width, batch] / 1e12
        row = dict(algo=algo, precision=precision, update=update, width=width, batch=batch, updates_per_s=ups)
        row.update(tflops=tflops, share_of_peak=tflops / self.peaks[precision], first_call_s=first_s)
        if profile_it:
            kernel_s, launches = kernel_profile(model, batch)
            row.update(gpu_busy=kernel_s * ups, launches_per_update=launches)
        self.write(row)
        print(
            f"| {algo} | {precision} | {update} | {width} | {batch} | {ups:.1f} | {tflops:.2f} "
            f"| {100 * row['share_of_peak']:.1f}% | {row.get('gpu_busy', float('nan')) * 100:.0f}% "
            f"| {row.get('launches_per_update', float('nan')):.0f} |",
            flush=True,
        )
        del model
        th.cuda.empty_cache()

    def learn(self, width: int, batch: int, update: str) -> None:
        th.set_float32_matmul_precision("highest")
        model = make_model("brc", width, batch, device=self.args.device, **UPDATE_OPTIONS[update])
        steps_per_s, ups = learn_rate(model, self.args.learn_steps)
        self.write(dict(learn=True, width=width, batch=batch, update=update, env_steps_per_s=steps_per_s))
        print(f"| {width} | {batch} | {update} | {steps_per_s:.1f} | {ups:.1f} |", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--widths", type=int, nargs="+", default=[512, 1024, 2048, 4096])
    parser.add_argument("--batches", type=int, nargs="+", default=[256, 1024])
    parser.add_argument("--compile-widths", type=int, nargs="*", default=[512, 2048])
    parser.add_argument("--learn-widths", type=int, nargs="*", default=[512, 2048])
    parser.add_argument("--learn-steps", type=int, default=1000, help="env steps per timed learn()")
    parser.add_argument("--seconds", type=float, default=2.0, help="timing window per configuration")
    parser.add_argument("--budget-s", type=float, default=400.0)
    parser.add_argument("--out", default="gpu_throughput.jsonl")
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--precisions", nargs="+", default=["fp32", "tf32", "bf16"], choices=["fp32", "tf32", "bf16"])
    parser.add_argument("--updates", nargs="+", default=["eager", "graph"], choices=["eager", "graph"])
    parser.add_argument("--peak-size", type=int, default=8192)
    args = parser.parse_args()
    bench = Bench(args)
    print("| algo | precision | update | width | batch | upd/s | TFLOP/s | % of peak | GPU busy | launches/update |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    configs = [c for c in CONFIGS if c[1] in args.precisions and (c[0] == "sac" or c[2] in args.updates)]
    batch = args.batches[0]
    # In order of interest, so that a short budget cuts the least: the first batch size, compiled, learn(), the rest
    sections: list[list[tuple]] = [
        [(*config, width, batch, config[0] == "brc") for width in args.widths for config in configs],
        [("brc", "fp32", "compile", width, batch, True) for width in args.compile_widths],
        [("learn", width, batch, update) for width in args.learn_widths for update in ("eager", "graph")],
        [(*config, width, b, False) for b in args.batches[1:] for width in args.widths for config in configs],
    ]
    for section in sections:
        if section and section[0][0] == "learn":
            print("learn() end to end: | width | batch | update | env steps/s | updates/s in learn() |", flush=True)
        for run in section:
            if not bench.within_budget():
                return
            th._dynamo.reset()
            if run[0] == "learn":
                bench.learn(*run[1:])
            else:
                bench.run(*run)
    print(f"done in {time.perf_counter() - bench.begin:.0f} s", flush=True)


if __name__ == "__main__":
    main()
