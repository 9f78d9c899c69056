"""BRCSAC.train() on a CUDA GPU: fp32, TF32 and bf16 next to SB3 SAC at equal width, and what limits small widths.

For each batch size and critic width it prints updates/s (2 gradient updates per train() call, as BRC's default),
achieved TFLOP/s (exact matmul FLOP count of one update, torch's FlopCounterMode) as a share of the peak of the
precision used (measured in the same run on 8192^3 products), and the share of wall time the GPU is busy running
kernels (torch profiler, kernel time / wall time over 10 updates): far below 100% means the update is bound by kernel
launches and Python, not by the GPU. Then ``torch.compile`` of the losses in the default mode and in
"reduce-overhead" (CUDA graphs) at the widths of ``--compile-widths``. Rows are printed as they finish and appended
as JSON lines to ``--out``; ``--budget-s`` stops starting new configurations after that many seconds.

    python benchmarks/gpu_throughput.py --out gpu.jsonl                         # widths 512-4096, batch 256 and 1024
    python benchmarks/gpu_throughput.py --widths 512 --batches 256 --compile-widths   # quick look, no compile
"""

import argparse
import json
import time

import torch as th
from throughput import make_model, measure
from torch.profiler import ProfilerActivity, profile

PRECISIONS = {"fp32": "highest", "tf32": "high"}  # torch.set_float32_matmul_precision per fp32 mode
CONFIGS = [("brc", "fp32"), ("brc", "tf32"), ("brc", "bf16"), ("sac", "fp32"), ("sac", "tf32")]


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


def compiled_losses(model, mode: str) -> tuple:
    """The model's losses under ``torch.compile(mode=...)``; outputs are copied at once, because CUDA-graph
    outputs ("reduce-overhead") are overwritten by the graph's next replay while train() still reads them."""

    def copied(fn):
        compiled = th.compile(fn, mode=mode)

        def call(*args):
            loss, extra = compiled(*args)
            return loss + 0, extra.clone()

        return call

    return copied(model._critic_loss), copied(model._actor_objective)


def time_updates(model, batch: int, seconds: float) -> float:
    """Updates per second (no FLOP counting: compiled functions are timed as they run)."""
    model.train(gradient_steps=2, batch_size=batch)
    steps, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        model.train(gradient_steps=2, batch_size=batch)
        steps += 2
    return steps / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--widths", type=int, nargs="+", default=[512, 1024, 2048, 4096])
    parser.add_argument("--batches", type=int, nargs="+", default=[256, 1024])
    parser.add_argument("--compile-widths", type=int, nargs="*", default=[512, 2048])
    parser.add_argument("--seconds", type=float, default=2.0, help="timing window per configuration")
    parser.add_argument("--budget-s", type=float, default=400.0)
    parser.add_argument("--out", default="gpu_throughput.jsonl")
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--precisions", nargs="+", default=["fp32", "tf32", "bf16"], choices=["fp32", "tf32", "bf16"])
    parser.add_argument("--peak-size", type=int, default=8192)
    args = parser.parse_args()
    begin = time.perf_counter()
    peaks = {}
    for name, mode in PRECISIONS.items():
        th.set_float32_matmul_precision(mode)
        peaks[name] = peak_tflops(th.float32, args.device, args.peak_size)
    peaks["bf16"] = peak_tflops(th.bfloat16, args.device, args.peak_size)
    name = th.cuda.get_device_name() if args.device.startswith("cuda") else args.device
    print(f"{name}, torch {th.__version__}, peak matmul TFLOP/s (8192^3): {peaks}", flush=True)
    out = open(args.out, "a")

    def record(row: dict) -> None:
        out.write(json.dumps(row) + "\n")
        out.flush()
        print(
            f"| {row['algo']} | {row['precision']} | {row['compile']} | {row['width']} | {row['batch']} "
            f"| {row['updates_per_s']:.1f} | {row['tflops']:.2f} | {100 * row['share_of_peak']:.1f}% "
            f"| {row.get('gpu_busy', float('nan')) * 100:.0f}% | {row.get('launches_per_update', float('nan')):.0f} |",
            flush=True,
        )

    print("| algo | precision | compile | width | batch | upd/s | TFLOP/s | % of peak | GPU busy | launches/update |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    flops_per_update: dict[tuple[int, int], float] = {}
    configs = [config for config in CONFIGS if config[1] in args.precisions]
    for batch in args.batches:
        for width in args.widths:
            for algo, precision in configs:
                if time.perf_counter() - begin > args.budget_s:
                    print("budget spent, stopping", flush=True)
                    return
                th.set_float32_matmul_precision(PRECISIONS.get(precision, "highest"))
                model = make_model("brc-bf16" if precision == "bf16" else algo, width, batch, device=args.device)
                ups, flops = measure(model, batch, args.seconds)
                if algo == "brc":
                    flops_per_update[width, batch] = flops
                row = dict(algo=algo, precision=precision, compile="-", width=width, batch=batch, updates_per_s=ups)
                row.update(tflops=ups * flops / 1e12, share_of_peak=ups * flops / 1e12 / peaks[precision])
                if algo == "brc" and batch == args.batches[0]:
                    kernel_s, launches = kernel_profile(model, batch)
                    row.update(gpu_busy=kernel_s * ups, launches_per_update=launches)
                record(row)
                del model
                th.cuda.empty_cache()
    th.set_float32_matmul_precision("highest")
    batch = args.batches[0]
    for width in args.compile_widths:
        for mode in ("default", "reduce-overhead"):
            if time.perf_counter() - begin > args.budget_s:
                print("budget spent, stopping", flush=True)
                return
            th._dynamo.reset()
            model = make_model("brc", width, batch, device=args.device)
            model._critic_loss_fn, model._actor_objective_fn = compiled_losses(model, mode)
            start = time.perf_counter()
            model.train(gradient_steps=2, batch_size=batch)  # compiles
            compile_s = time.perf_counter() - start
            ups = time_updates(model, batch, args.seconds)
            flops = flops_per_update.get((width, batch), float("nan"))  # the eager update's count
            row = dict(algo="brc", precision="fp32", compile=mode, width=width, batch=batch, updates_per_s=ups)
            row.update(tflops=ups * flops / 1e12, share_of_peak=ups * flops / 1e12 / peaks["fp32"], compile_s=compile_s)
            kernel_s, launches = kernel_profile(model, batch)
            row.update(gpu_busy=kernel_s * ups, launches_per_update=launches)
            record(row)
    print(f"done in {time.perf_counter() - begin:.0f} s", flush=True)


if __name__ == "__main__":
    main()
