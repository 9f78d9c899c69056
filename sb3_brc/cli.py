"""Command line: ``sb3-brc train | eval | suites | bench`` (also ``python -m sb3_brc``)."""

import argparse
import functools
import inspect
import os
import shlex
import shutil
import sys
import time
from typing import Any

import torch as th
from gymnasium import spaces

from sb3_brc.bench import add_arguments as add_bench_arguments
from sb3_brc.bench import run_from_args as run_bench
from sb3_brc.bench.settings import (
    LOWEST,
    PRESETS,
    UPDATE_OPTIONS,
    BenchSettings,
    RunnerSettings,
    add_preset_flag,
    add_setting_flags,
    count_problems,
    device_name,
    parse_with_preset,
)
from sb3_brc.common.multitask import MultiTaskAlgorithm
from sb3_brc.common.policies import SIZE_PRESETS
from sb3_brc.dqn.dqn import BRCDQN
from sb3_brc.envs.subproc import EnvStepTimeout, EnvWorkerError, check_step_timeout
from sb3_brc.envs.suites import describe_suites, make_suite, task_factory
from sb3_brc.envs.vec_env import BaseMultiTaskVecEnv, DiscreteMultiTaskVecEnv, MultiTaskVecEnv
from sb3_brc.sac.sac import BRCSAC
from sb3_brc.tools.checkpoint import CheckpointCallback, latest_checkpoint, load_checkpoint
from sb3_brc.tools.diagnostics import plot_task_embeddings
from sb3_brc.tools.evaluation import evaluate_tasks
from sb3_brc.tools.report import write_report
from sb3_brc.tools.training import (
    brc_dqn_policy_kwargs,
    brc_sac_policy_kwargs,
    per_task_budget,
    read_json_file,
    train_and_evaluate,
    training_estimate,
    write_json_atomic,
)
from sb3_brc.tools.wandb_logging import add_wandb_arguments, open_wandb_run, run_name, tasks_label, wandb_settings_from_args

# Exit status of `sb3-brc train` when a task failed: its step or reset exceeded --step-timeout, or it raised (or its
# process died) in a worker process (bad input: 2)
EXIT_ENV_FAULT = 3
# Exit status after Ctrl-C, the shell's convention for SIGINT (128 + 2)
EXIT_INTERRUPTED = 130


def build_env(
    config: dict[str, Any], seed: int, training: bool = True, step_timeout: float | None = None
) -> BaseMultiTaskVecEnv:
    """The env a run config names: a suite, or an explicit task list (discrete tasks: a
    ``DiscreteMultiTaskVecEnv``). ``training=False`` builds evaluation envs (Atari: whole games).
    ``step_timeout``: each task in its own process, a step or reset slower than that many seconds raises
    :class:`~sb3_brc.envs.subproc.EnvStepTimeout`."""
    if config.get("suite"):
        return make_suite(config["suite"], seed=seed, training=training, step_timeout=step_timeout)
    first_task = task_factory(config["tasks"][0])[0]()
    discrete = isinstance(first_task.action_space, spaces.Discrete)
    first_task.close()
    return (DiscreteMultiTaskVecEnv if discrete else MultiTaskVecEnv)(config["tasks"], seed=seed, step_timeout=step_timeout)


def _seconds(text: str) -> float:
    """A positive number of seconds (argparse type)."""
    try:
        return check_step_timeout(float(text))
    except ValueError as error:
        raise argparse.ArgumentTypeError(f"expected a positive number of seconds, got {text!r}") from error


# Algorithm names in run names (those of the benchmark harness)
ALGO_NAMES: dict[type[BRCSAC] | type[BRCDQN], str] = {BRCSAC: "brc_sac", BRCDQN: "brc_dqn"}


def algorithm_for(env: BaseMultiTaskVecEnv) -> type[BRCSAC] | type[BRCDQN]:
    """BRCDQN for discrete actions (Atari, CartPole, ...), BRCSAC for continuous control."""
    return BRCDQN if isinstance(env.action_space, spaces.Discrete) else BRCSAC


def _print_table(results: list[dict[str, Any]], baseline: list[dict[str, Any]] | None = None) -> None:
    random_returns = {row["task"]: row["mean_return"] for row in baseline or []}
    print(f"{'task':30s} {'return':>10s} {'random':>10s} {'success':>8s} {'score':>7s}")
    for row in results:
        success = "-" if row["success_rate"] is None else f"{row['success_rate']:.2f}"
        score = "-" if row["score"] is None else f"{row['score']:.2f}"
        rand = f"{random_returns[row['task']]:10.1f}" if row["task"] in random_returns else f"{'-':>10s}"
        print(f"{row['task']:30s} {row['mean_return']:10.1f} {rand} {success:>8s} {score:>7s}")


def new_model(args: argparse.Namespace, env: BaseMultiTaskVecEnv) -> MultiTaskAlgorithm:
    """The run's model: the algorithm's own per-task defaults where no flag sets them."""
    algorithm = algorithm_for(env)
    policy_kwargs = brc_dqn_policy_kwargs if algorithm is BRCDQN else brc_sac_policy_kwargs
    learning_starts = args.learning_starts
    if learning_starts is None:
        learning_starts = algorithm.learning_starts_per_task
    # Set flags only (unset: the algorithm's default); switching one on that the algorithm lacks is refused
    options: dict[str, Any] = {name: getattr(args, name) for name in UPDATE_OPTIONS if getattr(args, name) is not None}
    parameters = inspect.signature(algorithm).parameters
    switched_on = [name for name, on in options.items() if on and name not in parameters]
    if switched_on:
        flag = "--" + switched_on[0].replace("_", "-")
        raise ValueError(f"{flag} is a BRCSAC option; {algorithm.__name__} (discrete tasks) has none")
    options = {name: value for name, value in options.items() if name in parameters}
    return algorithm(
        "MlpPolicy",
        env,
        batch_size=args.batch_size,
        **per_task_budget(env.num_tasks, args.steps_per_task, learning_starts, algorithm.buffer_size_per_task),
        policy_kwargs=dict(policy_kwargs(args.size, None), n_atoms=args.n_atoms),
        tensorboard_log=os.path.join(args.out, "tb"),
        seed=args.seed,
        device=args.device,
        verbose=args.verbose,
        **options,
    )


def resumed_model(args: argparse.Namespace, env: BaseMultiTaskVecEnv) -> MultiTaskAlgorithm:
    """The run's model restored from its last checkpoint."""
    model = load_checkpoint(os.path.join(args.out, "checkpoints"), env, device=args.device)
    print(f"Resuming from {model.num_timesteps // env.num_tasks} of {args.steps_per_task} env steps per task")
    return model


def train(args: argparse.Namespace) -> None:
    """``sb3-brc train``: train on a suite or task list, evaluate, checkpoint and write the run directory."""
    th.set_num_threads(args.threads)
    eval_freq = args.eval_every or max(1, args.steps_per_task // 10)
    config = dict(
        suite=args.suite,
        tasks=args.tasks,
        steps_per_task=args.steps_per_task,
        seed=args.seed,
        preset=args.preset,
        size=args.size,
        n_atoms=args.n_atoms,
        batch_size=args.batch_size,
        learning_starts_per_task=args.learning_starts,
        eval_episodes=args.eval_episodes,
        eval_freq=eval_freq,  # the evaluation schedule (and the default checkpoint schedule)
        **{name: getattr(args, name) for name in UPDATE_OPTIONS},
    )
    config_path = os.path.join(args.out, "config.json")
    checkpoints = os.path.join(args.out, "checkpoints")
    if args.resume:
        saved = read_json_file(config_path, "--resume compares the run's settings with it; rerun without --resume (with "
                               "--overwrite) to start again")  # fmt: skip
        # A setting an older version did not record is not compared
        changed = sorted(k for k in config if saved.get(k, config[k]) != config[k])
        if changed:
            raise ValueError(f"--resume needs the same arguments as the original run; these differ: {changed}")
    elif os.path.exists(checkpoints) and not args.overwrite:
        raise ValueError(f"{args.out} already holds a run: add --resume to continue it, --overwrite to replace it.")
    os.makedirs(args.out, exist_ok=True)
    write_json_atomic(config_path, config)
    # The step timeout is not part of the config: it does not change what is trained, and a retry may change it
    env = build_env(config, args.seed, step_timeout=args.step_timeout)
    # Separate eval envs, seed + 42 as in the reference
    eval_env = build_env(config, args.seed + 42, training=False, step_timeout=args.step_timeout)
    if not args.resume:
        print(f"Training {algorithm_for(env).__name__} on {env.num_tasks} task(s): {', '.join(env.task_names)}")
        print(
            f"  preset {args.preset!r}: {args.steps_per_task} env steps per task, "
            f"size {args.size!r} {SIZE_PRESETS[args.size]}, out: {args.out}"
        )
        shutil.rmtree(checkpoints, ignore_errors=True)
    start = time.time()
    algo, label = ALGO_NAMES[algorithm_for(env)], args.suite or tasks_label(env.task_names)
    wandb_settings = wandb_settings_from_args(args, default_group=f"{algo}-{label}")  # None without --wandb
    wandb_id = os.path.join(args.out, "wandb_run.json")  # a resumed run continues its W&B run
    with open_wandb_run(wandb_settings, run_name(algo, label, args.seed), config, "train", wandb_id, args.resume) as wandb:
        result = train_and_evaluate(
            env,
            eval_env,
            functools.partial(_estimated_model, args, env),
            steps_per_task=args.steps_per_task,
            eval_every=eval_freq,
            eval_episodes=args.eval_episodes,
            eval_csv=os.path.join(args.out, "eval.csv"),
            baseline_json=os.path.join(args.out, "random_baseline.json"),
            seed=args.seed,
            resume=args.resume,
            callbacks=[CheckpointCallback(checkpoints, args.checkpoint_freq or eval_freq, not args.no_replay_checkpoint)],
            progress_bar=not args.no_progress,
            wandb_run=wandb,
        )
    minutes = (time.time() - start) / 60
    model = result.model
    model.save(os.path.join(args.out, "model.zip"))
    extra = (
        f"Preset `{args.preset}` (size `{args.size}`, {args.steps_per_task} env steps per task, evaluation every "
        f"{eval_freq} steps over {args.eval_episodes} episodes). "
        f"Trained {args.steps_per_task} env steps per task ({minutes:.1f} min in this session); model: `model.zip`; "
        "tensorboard logs: `tb/`; checkpoints: `checkpoints/`; config: `config.json`."
    )
    extra += "\n\n" + _run_limits(args.steps_per_task, args.eval_episodes)
    if isinstance(model, MultiTaskAlgorithm) and model.num_tasks > 1:
        plot_task_embeddings(model, os.path.join(args.out, "embeddings.png"))
        extra += "\n\n![task embeddings (PCA)](embeddings.png)"
    text = write_report(args.out, f"BRC on {args.suite or ', '.join(env.task_names)}", result.random_baseline, extra=extra)
    env.close()
    eval_env.close()
    print()
    _print_table(result.final, result.random_baseline)
    print()
    print(text.splitlines()[2])
    print(f"Report: {os.path.join(args.out, 'report.md')} (plots: curves.png, scores.png)")


#: The paper's training budget (its preset's env steps per task)
PAPER_STEPS_PER_TASK: int = PRESETS["paper"]["steps_per_task"]


def _run_limits(steps_per_task: int, eval_episodes: int) -> str:
    """What one training run cannot show, for its report."""
    limits = [
        "one seed: a difference smaller than the spread between seeds is noise (`sb3-brc bench --seeds 0 1 2` gives "
        "confidence intervals)",
        f"{eval_episodes} evaluation episode(s) per point: the ± column is their spread, not a confidence interval",
        "no comparison with single-task training or other algorithms (`sb3-brc bench --algos brc_sac brc_sac_st sac`)",
    ]
    if steps_per_task < PAPER_STEPS_PER_TASK:
        limits.append(
            f"{steps_per_task} env steps per task, not the paper's {PAPER_STEPS_PER_TASK:,}: final returns are not "
            "comparable with the paper's scores (`--preset paper` on a GPU)"
        )
    return "What this run cannot show: " + "; ".join(limits) + "."


def evaluate(args: argparse.Namespace) -> None:
    """``sb3-brc eval``: evaluate a trained run per task and print the table."""
    run_dir = args.run if os.path.isdir(args.run) else os.path.dirname(args.run)
    model_path = os.path.join(args.run, "model.zip") if os.path.isdir(args.run) else args.run
    config_path = os.path.join(run_dir, "config.json")
    config = read_json_file(config_path, "pass a run directory written by `sb3-brc train`")
    if not (config.get("suite") or config.get("tasks")) or not os.path.exists(model_path):
        raise ValueError(
            f"{args.run} is not a finished `sb3-brc train` run (its config.json names no suite or tasks, or model.zip is "
            "missing); a benchmark run's model is in its checkpoints"
        )
    env = build_env(config, args.seed, training=False)
    model = algorithm_for(env).load(model_path, env=env, device=args.device, buffer_size=1)
    _print_table(evaluate_tasks(model, env, args.episodes))


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line parsed, the chosen ``--preset``'s settings applied where no flag gives them."""
    parser = argparse.ArgumentParser(prog="sb3-brc", description="BRC multi-task RL on Stable-Baselines3")
    sub = parser.add_subparsers(dest="command", required=True)

    p_train = sub.add_parser(
        "train",
        help="train on a suite or task list (BRCSAC; BRCDQN for discrete tasks such as Atari), evaluate, write a report",
    )
    which = p_train.add_mutually_exclusive_group(required=True)
    which.add_argument("--suite", help="suite name (see `sb3-brc suites`)")
    which.add_argument("--tasks", nargs="+", help="task ids or names, one env per task")
    p_train.add_argument("--out", required=True, help="output directory")
    p_train.add_argument("--seed", type=int, default=0)
    p_train.add_argument("--n-atoms", type=int, default=101)
    add_setting_flags(p_train, RunnerSettings, list(UPDATE_OPTIONS))
    # The flags that mean what the harness's settings mean, with the defaults of a single run
    add_setting_flags(
        p_train,
        BenchSettings,
        ["steps_per_task", "size", "batch_size", "learning_starts", "eval_every", "eval_episodes", "threads", "device"],
        overrides=dict(
            steps_per_task=dict(default=None, help="env steps per task (required unless --preset sets it)"),
            size=dict(help="network size preset"),
            batch_size=dict(help="default: BRCSAC 256 single-task, 1024 multi-task; BRCDQN 32 per task"),
            learning_starts=dict(flag="--learning-starts-per-task", default=None, help="default: BRCSAC 5000, BRCDQN 1600"),
            eval_every=dict(flag="--eval-freq", default=None),
            eval_episodes=dict(default=10),
            threads=dict(default=max(1, min(4, os.cpu_count() or 1)), help="torch threads"),
        ),
    )
    add_preset_flag(p_train)
    p_train.add_argument("--verbose", type=int, default=0)
    p_train.add_argument("--no-progress", action="store_true", help="no progress bar")
    p_train.add_argument("--checkpoint-freq", type=int, default=None, help="env steps per task (default: eval freq)")
    p_train.add_argument("--no-replay-checkpoint", action="store_true", help="checkpoints without the replay buffer")
    p_train.add_argument("--resume", action="store_true", help="continue the run in --out from its last checkpoint")
    p_train.add_argument("--overwrite", action="store_true", help="replace a previous run in --out")
    p_train.add_argument(
        "--step-timeout",
        type=_seconds,
        default=None,
        metavar="SECONDS",
        help="each task in its own process; a step or reset that takes longer ends the run (exit status 3) with an "
        "error naming the task and the step, the last checkpoint intact for --resume",
    )
    add_wandb_arguments(p_train)
    p_train.set_defaults(func=train)

    p_eval = sub.add_parser("eval", help="evaluate a trained run per task")
    p_eval.add_argument("run", help="run directory (or its model.zip)")
    p_eval.add_argument("--episodes", type=int, default=10)
    p_eval.add_argument("--seed", type=int, default=1000)
    p_eval.add_argument("--device", default="auto", type=device_name)
    p_eval.set_defaults(func=evaluate)

    p_suites = sub.add_parser("suites", help="list suites and tasks")
    p_suites.set_defaults(func=lambda _: print(describe_suites()))

    p_bench = sub.add_parser(
        "bench", help="benchmark grid: algorithms x tasks x seeds in parallel, aggregated with rliable (sb3_brc.bench)"
    )
    add_bench_arguments(p_bench)
    add_preset_flag(p_bench)
    bench_command = "sb3-brc " + shlex.join(sys.argv[1:] if argv is None else argv)  # recorded in the results
    p_bench.set_defaults(func=lambda parsed: run_bench(parsed, command=bench_command))

    args = parse_with_preset(parser, argv, {"train": p_train, "bench": p_bench})
    if args.command == "train":
        if args.steps_per_task is None:
            p_train.error("--steps-per-task is required (or a --preset that sets it, e.g. paper)")
        _check_train_counts(p_train, args)
    return args


def _estimated_model(args: argparse.Namespace, env: BaseMultiTaskVecEnv) -> MultiTaskAlgorithm:
    """The run's model (new or resumed), after printing what its updates will cost here (a few timed)."""
    model = (resumed_model if args.resume else new_model)(args, env)
    print(f"  {training_estimate(model, args.steps_per_task * env.num_tasks)}", flush=True)
    return model


def _check_train_counts(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Counts ``sb3-brc train`` cannot run with (a zero budget, a negative frequency) end with a parser error."""
    own = dict(checkpoint_freq=1, n_atoms=2)
    counts = {name: getattr(args, name) for name in [*LOWEST, *own] if hasattr(args, name)}
    bad = count_problems(counts, dict(eval_every="--eval-freq", learning_starts="--learning-starts-per-task"), own)
    if bad:
        parser.error("; ".join(bad))


def main(argv: list[str] | None = None) -> None:
    """Entry point of ``sb3-brc``; bad input ends with a one-line error and exit status 2."""
    args = parse_args(argv)
    os.environ.setdefault("MUJOCO_GL", "disable")  # physics only: no display needed
    try:
        args.func(args)
    except (ValueError, ImportError, TypeError, OSError) as error:  # bad input (or an unusable --out): one line
        print(f"sb3-brc: error: {error}", file=sys.stderr)
        sys.exit(2)
    except (EnvStepTimeout, EnvWorkerError) as error:  # a hung or failed env: a fault to retry, not bad input
        print(f"sb3-brc: error: {error}", file=sys.stderr)
        _print_resume_hint(args.out, "before the fault")
        sys.exit(EXIT_ENV_FAULT)
    except KeyboardInterrupt:  # Ctrl-C: checkpoints stay in place (bench has said which runs to resume)
        print("sb3-brc: interrupted", file=sys.stderr)
        if args.command == "train":
            _print_resume_hint(args.out, "before Ctrl-C")
        sys.exit(EXIT_INTERRUPTED)


def _print_resume_hint(out: str, when: str) -> None:
    """Where a stopped ``sb3-brc train`` run can resume from."""
    checkpoint = latest_checkpoint(os.path.join(out, "checkpoints"))
    if checkpoint is None:
        print(f"sb3-brc: no checkpoint was written {when}: rerun the command to start again", file=sys.stderr)
    else:
        print(f"sb3-brc: the last checkpoint ({checkpoint}) is intact: add --resume to continue from it", file=sys.stderr)
