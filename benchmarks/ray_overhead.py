"""Ray backend vs the local process pool: wall time of the same small grid, and the work lost when a worker dies.

    MUJOCO_GL=disable python benchmarks/ray_overhead.py --workers 2

1. The same grid (brc_sac and sac on InvertedPendulum-v5 and InvertedDoublePendulum-v5, seeds 0 and 1) three times
   in this process, into fresh directories: on the local pool, on Ray starting its own local instance (what
   ``--backend ray`` without ``--address`` does), and on Ray joining an instance already running (what a grid on
   an existing cluster pays). Prints the wall time of each, the sum of the runs' own wall times, and whether the
   evaluations of every run are identical across the three.
2. Lost work: one run on each backend, its worker killed (SIGKILL, by the pid in ``attempts.jsonl``) once
   ``--kill-after`` seconds after its first checkpoint; the driver retries it and it resumes from the last checkpoint.
   Prints where it resumed, the steps redone (at least what the run had reported before the kill, at most the
   checkpoint interval), the seconds of training redone (kill time minus the checkpoint's time) and the restart
   latency (kill to the new attempt's start).
"""

import argparse
import json
import os
import signal
import tempfile
import threading
import time
from datetime import datetime

import ray

from sb3_brc.bench import BenchSettings, grid, run_grid, run_grid_ray
from sb3_brc.bench.grid import ATTEMPTS, CHECKPOINTS
from sb3_brc.tools.checkpoint import checkpoint_timesteps, latest_checkpoint

ALGOS, TASKS, SEEDS = ["brc_sac", "sac"], ["InvertedPendulum-v5", "InvertedDoublePendulum-v5"], [0, 1]
SMALL = dict(eval_every=100, eval_episodes=1, learning_starts=100, batch_size=32, gradient_steps=1, width=16)


def grid_overhead(workdir: str, workers: int, steps: int) -> None:
    settings = BenchSettings(steps_per_task=steps, **SMALL)
    print(f"1. {len(ALGOS)} algorithms x {len(TASKS)} tasks x {len(SEEDS)} seeds, {steps} steps/task, {workers} at a time")
    variants = {
        "local pool": lambda runs: run_grid(runs, workers=workers, progress=False),
        "ray, own local instance": lambda runs: run_grid_ray(runs, workers=workers, progress=False),
        "ray, joining a running instance": lambda runs: run_grid_ray(runs, workers=workers, progress=False),
    }
    evaluations = {}
    for name, run in variants.items():
        runs = grid(os.path.join(workdir, name.replace(" ", "_").replace(",", "")), ALGOS, TASKS, SEEDS, settings)
        if name.startswith("ray, joining"):
            start = time.time()
            ray.init(num_cpus=workers, include_dashboard=False, log_to_driver=False)
            print(f"   (ray.init of the instance to join: {time.time() - start:.1f} s, not counted below)")
        start = time.time()
        results = run(runs)
        wall = time.time() - start
        if ray.is_initialized():
            ray.shutdown()
        assert all(r["status"] == "done" for r in results), results
        own = sum(r["wall_s"] for r in results)
        print(f"   {name:32s} wall {wall:6.1f} s   sum of run walls {own:6.1f} s")
        evaluations[name] = [open(os.path.join(spec.run_dir, "evaluations.csv")).read() for spec in runs]
    same = all(value == evaluations["local pool"] for value in evaluations.values())
    print(f"   evaluations of every run identical across the three: {same}")


def lost_work(workdir: str, backend: str, steps: int, kill_after: float) -> None:
    settings = BenchSettings(steps_per_task=steps, **SMALL)
    (spec,) = grid(os.path.join(workdir, f"fault_{backend}"), ["brc_sac"], ["InvertedPendulum-v5"], [0], settings)
    root = os.path.join(spec.run_dir, CHECKPOINTS)
    killed = {}

    def kill() -> None:
        while checkpoint_timesteps(root) == 0:
            time.sleep(0.02)
        time.sleep(kill_after)
        with open(os.path.join(spec.run_dir, ATTEMPTS)) as file:
            pid = json.loads(file.read().splitlines()[-1])["pid"]
        killed.update(
            time=time.time(), checkpoint_time=os.path.getmtime(latest_checkpoint(root)), checkpoint=checkpoint_timesteps(root)
        )
        os.kill(pid, signal.SIGKILL)

    threading.Thread(target=kill, daemon=True).start()
    run = run_grid_ray if backend == "ray" else run_grid
    (result,) = run([spec], workers=1, progress=False, max_retries=2)
    with open(os.path.join(spec.run_dir, ATTEMPTS)) as file:
        attempts = [json.loads(line) for line in file.read().splitlines()]
    with open(os.path.join(spec.run_dir, "evaluations.csv")) as file:
        rows = [line.split(",")[1] for line in file.read().splitlines()[1:]]
    restart = datetime.fromisoformat(attempts[-1]["time"]).timestamp() - killed["time"]
    print(
        f"   {backend:5s}: {result['status']} after {result['attempts']} attempts ({result['errors'][0][:60]}); "
        f"killed with a checkpoint at {killed['checkpoint']} steps, resumed at {result['start_steps']} steps/task "
        f"(checkpoint every {settings.eval_every}); steps redone >= {result['redone_steps']} and <= {settings.eval_every}; "
        f"training redone {killed['time'] - killed['checkpoint_time']:.1f} s; restart {restart:.1f} s; "
        f"evaluations at {', '.join(rows)} steps/task"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--steps", type=int, default=300, help="env steps per task of the grid's runs")
    parser.add_argument("--fault-steps", type=int, default=600, help="env steps per task of the killed run")
    parser.add_argument("--kill-after", type=float, default=1.0, help="seconds after the first checkpoint")
    args = parser.parse_args()
    os.environ.setdefault("MUJOCO_GL", "disable")
    with tempfile.TemporaryDirectory() as workdir:
        grid_overhead(workdir, args.workers, args.steps)
        print(f"2. lost work: a brc_sac run of {args.fault_steps} steps/task, killed {args.kill_after} s after a checkpoint")
        for backend in ("local", "ray"):
            lost_work(workdir, backend, args.fault_steps, args.kill_after)


if __name__ == "__main__":
    main()
