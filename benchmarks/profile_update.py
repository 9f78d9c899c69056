"""Where the time of one BRC update goes: torch profiler over a few updates, grouped by kind of op.

python benchmarks/profile_update.py --threads 2 --width 1024 --batch 256
"""

import argparse
from collections import defaultdict

import torch as th
from throughput import make_model
from torch.profiler import ProfilerActivity, profile

GROUPS = {
    "matmul (forward and backward)": ("mm", "bmm", "baddbmm", "addmm", "matmul", "linear"),
    "layer norm": ("layer_norm",),
    "optimiser (AdamW, Polyak)": ("adam", "_foreach", "lerp", "sqrt", "addcdiv"),
    "softmax / log-softmax / projection": ("softmax", "scatter", "floor", "ceil", "clamp"),
    "replay sampling": ("sample", "index", "randint"),
}


def group_of(name: str) -> str:
    lowered = name.lower()
    for group, keys in GROUPS.items():
        if any(key in lowered for key in keys):
            return group
    return "other (elementwise, copies, Python)"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--width", type=int, default=1024)
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--updates", type=int, default=10)
    args = parser.parse_args()
    th.set_num_threads(args.threads)
    model = make_model("brc", args.width, args.batch)
    model.train(gradient_steps=2, batch_size=args.batch)
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        model.train(gradient_steps=args.updates, batch_size=args.batch)
    events = [e for e in prof.key_averages() if e.key.startswith("aten::")]
    total = sum(e.self_cpu_time_total for e in events)
    by_group: dict[str, float] = defaultdict(float)
    for event in events:
        by_group[group_of(event.key)] += event.self_cpu_time_total
    print(
        f"width {args.width}, batch {args.batch}, {args.threads} threads, {args.updates} updates: "
        f"{total / 1e3 / args.updates:.1f} ms of aten ops per update"
    )
    print("| kind of op | share of time |\n|---|---|")
    for group, time_us in sorted(by_group.items(), key=lambda kv: -kv[1]):
        print(f"| {group} | {100 * time_us / total:.1f}% |")
    print("\nTop ops by self time:")
    print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=12))


if __name__ == "__main__":
    main()
