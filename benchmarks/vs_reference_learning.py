"""Learning level with the official code: ``sb3-brc``'s single-task BRC against the official JAX implementation's own
training loop (naumix/BiggerRegularizedCategorical) on one DMC task, at equal settings, through the harness's
aggregates.

    MUJOCO_GL=disable python benchmarks/vs_reference_learning.py --checkout REF --jax-python PY \\
        --tasks walker-walk --seeds 0 1 2 3 --steps-per-task 30000 --eval-every 3000 --out runs/vs_reference_learning

``--checkout`` (a checkout of the reference repository) and ``--jax-python`` as in ``vs_reference.py`` (the JAX
Python also needs dm_control and shimmy, at the versions sb3-brc runs with: mujoco's physics changes between
releases). First
the two envs are compared: the reference's DMC env (``jaxrl.envs.make_env``) and ours, reset with the same seed and
stepped through the same random actions, must give the same observations and rewards. Then, for each seed, the
reference's loop runs in the worker (``learn``: ``train.py``'s iteration with its ``RewardNormalizer``,
``ParallelReplayBuffer``, ``agent.update``; ``ParallelEnv.evaluate`` with temperature 0 every ``--eval-every`` steps
on envs seeded ``seed + 42``), and its evaluations are written as a harness run of the algorithm ``brc_reference``
(the random baseline is the harness's, on the harness's evaluation env). Finally the harness runs ``brc_sac_st``
(``BRCSAC``, with checkpoints and ``--resume``-able as any grid) and aggregates both: IQM with CIs, P(sb3-brc >
reference), curves.

Equal settings: critic width ``--width`` (default: the ``--size`` preset's, ``tiny``: 128) at depth 2, actor of one
block of the preset's width (``tiny``: 64), batch 256, 2 updates per env step, ``--learning-starts`` random steps
(default 5000, the reference's), the same budget and evaluation schedule and episodes. The reference's runs have no
checkpoints: an interrupted one starts over (finished ones are kept).
"""

import argparse
import csv
import json
import os
import sys
import tempfile

import numpy as np
from vs_reference import Worker

from sb3_brc.bench import add_arguments, run_from_args
from sb3_brc.bench.algos import BenchAlgo, brc_sac_policy_kwargs, register_algo
from sb3_brc.bench.grid import grid, is_complete, write_run_files
from sb3_brc.bench.settings import BenchSettings, settings_from_args
from sb3_brc.envs.scores import normalized_score
from sb3_brc.envs.vec_env import MultiTaskVecEnv
from sb3_brc.tools.evaluation import CSV_FIELDS, evaluate_tasks, write_eval_rows
from sb3_brc.tools.training import write_json_atomic

REFERENCE_ALGO = "brc_reference"
OURS = "brc_sac_st"


class OfficialBRC:
    """Stands for the official implementation in the harness's grid: its runs are made by this script (the
    reference's own code in the JAX worker), never by the harness."""

    def __init__(self, *args, **kwargs):
        raise RuntimeError(f"{REFERENCE_ALGO} runs are made by benchmarks/vs_reference_learning.py, not by the harness")


def check_same_env(worker: Worker, task: str, seed: int, steps: int, timeout: float) -> float:
    """Largest difference of observations and rewards between the reference's env and ours (a ``MultiTaskVecEnv`` of
    the one task, as the harness trains on it) for ``task``, reset with ``seed`` and stepped through the same uniform
    random actions (float32 observations here, float64 there)."""
    env = MultiTaskVecEnv([task], seed=seed)
    rng = np.random.default_rng(seed)
    # float32 actions, as both policies output (our env steps the task with its action space's float32)
    actions = rng.uniform(-1, 1, size=(steps, *env.action_space.shape)).astype(np.float32).astype(np.float64)
    theirs = worker.ask(timeout, cmd="rollout", task=task, seed=seed, actions=actions.tolist())
    observations, rewards = [env.reset()["observation"][0]], []
    for action in actions[: len(theirs["rewards"])]:
        obs, reward, done, infos = env.step(action[None])
        # At an episode's end the vec env has reset: its last observation is in the info
        observations.append(infos[0]["terminal_observation"]["observation"] if done[0] else obs["observation"][0])
        rewards.append(reward[0])
    env.close()
    return max(
        float(np.abs(np.asarray(theirs["observations"]) - np.asarray(observations)).max()),
        float(np.abs(np.asarray(theirs["rewards"]) - np.asarray(rewards)).max()),
    )


def run_reference(worker: Worker, spec, settings: BenchSettings, args: argparse.Namespace) -> None:
    """One seed of the reference's training loop, written as the harness's run ``spec``."""
    (task,) = spec.tasks.task_names
    policy_kwargs = brc_sac_policy_kwargs(settings.size, settings.width)["net_arch"]
    os.makedirs(spec.run_dir, exist_ok=True)
    eval_env = spec.algo.make_env(spec.tasks.tasks, spec.tasks.task_names, spec.seed + 10_000, training=False)
    write_json_atomic(
        os.path.join(spec.run_dir, "random.json"), evaluate_tasks(None, eval_env, settings.eval_episodes, seed=spec.seed)
    )
    score_kind = eval_env.layout.score_kinds[0]
    eval_env.close()
    with tempfile.TemporaryDirectory() as scratch:
        path = os.path.join(scratch, "evaluations.csv")
        reply = worker.ask(
            args.run_timeout,
            cmd="learn",
            task=args.tasks[0],  # the reference's DMC name, domain-task
            width=policy_kwargs["qf"][0],
            actor_width=policy_kwargs["pi"][0],
            batch=256,
            updates=2,
            warmup=settings.learning_starts,
            buffer=1_000_000,
            seed=spec.seed,
            steps=settings.steps_per_task,
            eval_every=settings.eval_every,
            eval_episodes=settings.eval_episodes,
            csv=path,
            init=args.jax_init,
        )
        with open(path) as file:
            evaluations = list(csv.DictReader(file))
    rows = []
    for row in evaluations:
        steps, mean_return = int(row["steps"]), float(row["mean_return"])
        success = float(row["success_rate"]) if score_kind == "metaworld" else None
        rows.append(
            dict(
                timesteps=steps,
                steps_per_task=steps,
                task=task,
                mean_return=mean_return,
                std_return="",
                success_rate="" if success is None else success,
                score=normalized_score(score_kind, task, mean_return, success),
                episodes=settings.eval_episodes,
            )
        )
    assert set(rows[0]) == set(CSV_FIELDS)
    write_eval_rows(os.path.join(spec.run_dir, "evaluations.csv"), rows, append=False)
    config = dict(spec.config(), status="complete", wall_s=round(reply["wall"], 1), cpu_s=round(reply["cpu"], 1))
    write_run_files(spec, {"config.json": json.dumps(config).encode()})
    print(f"  {spec.key}: {len(rows)} evaluations, {reply['wall'] / 60:.1f} min", file=sys.stderr, flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_arguments(parser)  # the harness's flags (its --reference names the algorithm P(X > Y) is computed for)
    parser.add_argument("--checkout", required=True, help="checkout of naumix/BiggerRegularizedCategorical")
    parser.add_argument(
        "--jax-python", required=True, help="Python of a virtual environment with the reference's packages, dm_control, shimmy"
    )
    parser.add_argument("--jax-init", choices=["eager", "jit"], default="eager", help="see vs_reference.py")
    parser.add_argument("--setup-timeout", type=float, default=1800.0, help="seconds to wait for the env check")
    parser.add_argument(
        "--run-timeout", type=float, default=7 * 24 * 3600.0, help="seconds to wait for one reference run to finish"
    )
    parser.set_defaults(
        algos=[OURS, REFERENCE_ALGO],
        reference=OURS,
        tasks=["walker-walk"],
        seeds=[0, 1, 2, 3],
        steps_per_task=30_000,
        eval_every=3000,
        learning_starts=5000,
        out="runs/vs_reference_learning",
        results_title="sb3-brc against the official BRC code, one DMC task (harness run)",
    )
    args = parser.parse_args()
    os.environ.setdefault("MUJOCO_GL", "disable")
    if len(args.tasks) != 1 or args.batch_size is not None or args.gradient_steps is not None:
        parser.error("one DMC task (--tasks), at BRC's single-task batch 256 and 2 updates per step (no --batch-size)")
    register_algo(
        REFERENCE_ALGO,
        BenchAlgo(
            "vs_reference_learning:OfficialBRC",
            policy_kwargs=brc_sac_policy_kwargs,
            description="the official JAX BRC (naumix/BiggerRegularizedCategorical), run by vs_reference_learning.py",
        ),
        overwrite=True,
    )
    settings = settings_from_args(BenchSettings, args)
    specs = [spec for spec in grid(args.out, [REFERENCE_ALGO], args.tasks, args.seeds, settings) if not is_complete(spec)]
    worker = Worker(args.jax_python, args.checkout, args.threads)
    try:
        difference = check_same_env(worker, args.tasks[0], seed=args.seeds[0], steps=1000, timeout=args.setup_timeout)
        print(f"env check, {args.tasks[0]}: largest observation/reward difference {difference:.1e}", file=sys.stderr)
        if difference > 1e-5:  # float32 observations here, float64 there
            raise SystemExit(f"the reference's env and ours differ on {args.tasks[0]} ({difference:.1e}): fix that first")
        for spec in specs:
            run_reference(worker, spec, settings, args)
    finally:
        worker.close()
    run_from_args(args)


if __name__ == "__main__":
    main()
