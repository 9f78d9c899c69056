"""The runs of a grid: what ``--tasks`` names, one :class:`RunSpec` per algorithm x tasks x seed, and the run
directories ``OUT/<algo>/<task-or-suite>/seed<k>/`` that make an interrupted grid resumable."""

import inspect
import json
import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

from sb3_brc.bench.algos import ALGOS, BenchAlgo
from sb3_brc.bench.settings import UPDATE_OPTIONS, BenchSettings
from sb3_brc.common.utils import SB3_BRC_VERSION, atomic_file
from sb3_brc.envs.suites import ATARI_GAMES_PREFIX, SUITES, find_suite, make_suite, task_factory
from sb3_brc.envs.tasks import GOAL_OBSERVABLE
from sb3_brc.envs.vec_env import TaskSpec
from sb3_brc.tools.wandb_logging import WandbSettings

#: A run's checkpoint directory (removed once the run is complete)
CHECKPOINTS = "checkpoints"
#: A run's log of attempts: one JSON line per start (pid, host, env steps per task it started at, time)
ATTEMPTS = "attempts.jsonl"
#: A run's W&B run id (with ``--wandb``), so that a resumed attempt continues the same W&B run
WANDB_ID = "wandb_run.json"
#: What a run leaves in its directory for the aggregation (small text files; checkpoints are not among them)
RESULT_FILES = ("evaluations.csv", "random.json", ATTEMPTS, "config.json")
#: What ``config.json`` records besides the run's settings: its status and the wall and process CPU seconds it took
RUN_TIMES = ("status", "wall_s", "cpu_s")
#: Keys of :meth:`RunSpec.config` recorded since a later 0.2.0 development version: a saved config without them
#: (an older run directory) is compared on the other keys, so that its runs are still reused
LATER_CONFIG_KEYS = ("policy", "algo_kwargs")


@dataclass(frozen=True)
class RunTasks:
    """The tasks one run trains on: a single task, or all tasks of a suite.

    :param label: Name of the run's task directory (the task's or the suite's name)
    :param tasks: Task specs
    :param task_names: Their names
    :param suite: Build the env with :func:`sb3_brc.envs.suites.make_suite` (suites that only exist as one vector
        env: Meta-World, Atari)
    """

    label: str
    tasks: tuple[TaskSpec, ...]
    task_names: tuple[str, ...]
    suite: str | None = None

    @property
    def is_suite(self) -> bool:
        """Whether these are several tasks (or a named suite) rather than one task."""
        return len(self.tasks) > 1 or self.suite is not None

    def split(self) -> list["RunTasks"]:
        """One single-task entry per task (the runs of a single-task algorithm on a suite): each the same env as
        in the suite (an Atari game alone is the one-game suite ``atari:<game>``)."""
        suite = None if self.suite is None else find_suite(self.suite)
        if suite is not None and suite.atari:
            return [RunTasks(name, (name,), (name,), suite=f"{ATARI_GAMES_PREFIX}{name}") for name in self.task_names]
        if suite is not None and suite.metaworld is not None and not suite.goal_observable:
            raise ValueError(
                f"Suite {self.suite!r} exists only as Meta-World's vector env of all its tasks: a single-task algorithm "
                f"cannot train its tasks one by one (its MT1 tasks have other goals). Use the goal-observable suite "
                f"'{self.suite}-paper' or multi-task algorithms."
            )
        return [RunTasks(name, (spec,), (name,)) for spec, name in zip(self.tasks, self.task_names, strict=True)]


#: Separates a suite's name from the tasks of it a ``--tasks`` entry keeps: ``mt10-paper:reach-v3,door-open-v3``
SUITE_SUBSET = ":"


def resolve_tasks(name: str) -> RunTasks:
    """Resolve a ``--tasks`` entry: a :data:`sb3_brc.envs.suites.SUITES` name, ``atari:<game>,...``, a Gymnasium id, a
    DMC short name, a Meta-World task name, a comma-joined set of such single tasks (``walker-walk,cheetah-run``) or
    some tasks of a suite (``mt10-paper:reach-v3,door-open-v3``: the suite's own envs and task names). A set is one
    run of a multi-task algorithm and one run per task of the others, as a suite is."""
    suite_name, _, subset = name.partition(SUITE_SUBSET)
    if subset and suite_name in SUITES:
        return _suite_subset(suite_name, subset)
    if "," in name and find_suite(name) is None:
        parts = [resolve_tasks(part.strip()) for part in name.split(",") if part.strip()]
        sets = [part.label for part in parts if part.is_suite]
        if sets:
            raise ValueError(f"{name!r}: a task set holds single tasks; {sets} are suites (name their tasks)")
        names = tuple(part.label for part in parts)
        if len(set(names)) != len(names):
            raise ValueError(f"{name!r} names a task twice")
        return RunTasks(name, tuple(part.tasks[0] for part in parts), names)
    suite = find_suite(name)
    if suite is None:
        resolved = task_factory(name)[1] or name
        return RunTasks(resolved, (name,), (resolved,))
    if suite.shadowhand_objects:
        objects = tuple(map(str, suite.tasks))  # make_shadowhand_suite names each task after its object
        return RunTasks(name, objects, objects, suite=name)
    if suite.atari or suite.metaworld is not None:
        env = make_suite(name)  # the task names are those of the built suite
        names = tuple(env.task_names)
        env.close()
        # The specs of its tasks alone (goal-observable Meta-World tasks: the suite's own envs)
        specs = tuple(task + GOAL_OBSERVABLE for task in names) if suite.goal_observable else names
        return RunTasks(name, specs, names, suite=name)
    names = tuple(suite.task_names or [task_factory(task)[1] or str(task) for task in suite.tasks])
    return RunTasks(name, tuple(suite.tasks), names)


def _suite_subset(suite_name: str, subset: str) -> RunTasks:
    """``SUITE:task,task``: those tasks of a suite, each the env it is in the suite (what :meth:`RunTasks.split`
    gives a single-task algorithm), so that per-task runs of a subset are the suite's per-task runs."""
    suite = resolve_tasks(suite_name)
    chosen = [task.strip() for task in subset.split(",") if task.strip()]
    unknown = [task for task in chosen if task not in suite.task_names]
    if not chosen or unknown or len(set(chosen)) != len(chosen):
        problem = f"unknown task(s) {unknown}" if unknown else "no task, or a task twice"
        raise ValueError(f"{suite_name}{SUITE_SUBSET}{subset!r}: {problem}; {suite_name}'s tasks: {list(suite.task_names)}")
    parts = {part.task_names[0]: part for part in suite.split()}
    label = f"{suite_name}{SUITE_SUBSET}{','.join(chosen)}"
    if len(chosen) == 1:
        return parts[chosen[0]]
    if SUITES[suite_name].atari:
        return RunTasks(label, tuple(chosen), tuple(chosen), suite=f"{ATARI_GAMES_PREFIX}{','.join(chosen)}")
    return RunTasks(label, tuple(parts[task].tasks[0] for task in chosen), tuple(chosen))


@dataclass(frozen=True)
class RunSpec:
    """One run of the grid: an algorithm on a task (or, multi-task, a suite) with one seed. ``wandb``: also log it to
    W&B; ``step_timeout``: seconds an env step may take (subprocess envs); ``compile_update`` / ``cuda_graph``: compile
    the update / capture it in CUDA graphs, for an algorithm that has the option (BRCSAC); ``storage``: the URI of the
    store that keeps the grid (:mod:`~sb3_brc.bench.storage`; ``out`` is then a local copy). None is part of
    :meth:`config`: changing them does not rerun finished runs."""

    algo_name: str
    algo: BenchAlgo
    tasks: RunTasks
    seed: int
    settings: BenchSettings
    out: str
    wandb: WandbSettings | None = None
    step_timeout: float | None = None
    compile_update: bool | None = None
    cuda_graph: bool | None = None
    storage: str | None = None

    @property
    def key(self) -> str:
        """``<algo>/<tasks>/seed<k>``: the run's name in the progress display and the run statuses."""
        return f"{self.algo_name}/{self.tasks.label}/seed{self.seed}"

    @property
    def run_path(self) -> tuple[str, str, str]:
        """Where the run lies in its grid: ``(<algo>, <tasks>, seed<k>)``."""
        label = self.tasks.label.replace("/", "_").replace(":", "_")  # ALE/..., atari:Boxing,Freeway
        return self.algo_name, label, f"seed{self.seed}"

    @property
    def run_dir(self) -> str:
        """The run's output directory, ``OUT/<algo>/<tasks>/seed<k>``."""
        return os.path.join(self.out, *self.run_path)

    def algo_kwargs(self) -> dict[str, Any]:
        """The constructor keyword arguments the run's algorithm gets from its registry entry and the ``--size`` /
        ``--width`` flags (the harness adds its budget settings, seed and device to these)."""
        kwargs = dict(self.algo.kwargs)
        size_kwargs = self.algo.policy_kwargs(self.settings.size, self.settings.width)
        kwargs["policy_kwargs"] = {**kwargs.get("policy_kwargs", {}), **size_kwargs}
        return kwargs

    def has_option(self, name: str) -> bool:
        """Whether the run's algorithm takes the constructor argument ``name``."""
        return name in inspect.signature(self.algo.algo_class()).parameters

    def update_kwargs(self) -> dict[str, Any]:
        """``compile_update`` and ``cuda_graph`` for an algorithm that has them: the grid's flag where it is set (True,
        or False for ``--no-compile-update``), else the registry entry's, else the algorithm's default (for building
        the model and for restoring it, so a resumed run follows the grid's current choice)."""
        parameters = inspect.signature(self.algo.algo_class()).parameters
        return {
            name: getattr(self, name)
            if getattr(self, name) is not None
            else self.algo.kwargs.get(name, parameters[name].default)
            for name in UPDATE_OPTIONS
            if name in parameters
        }

    def config(self) -> dict[str, Any]:
        """What a finished run must match to be skipped (editing a registered algorithm's arguments reruns its runs).
        It holds the sb3-brc version, so that runs of code that computes something else (each such change bumps the
        version) are never mixed with this code's; runs recorded before the version was part of it are rerun."""
        # Callbacks only where an algorithm has them, so that the runs of the others recorded without the key match
        callbacks = dict(callbacks=json_form(self.algo.callbacks)) if self.algo.callbacks else {}
        return dict(
            sb3_brc_version=SB3_BRC_VERSION,
            algo=self.algo_name,
            algo_class=self.algo.class_path(),
            policy=self.algo.policy,
            algo_kwargs=json_form(self.algo_kwargs()),
            **callbacks,
            task_set=self.tasks.label,  # the key earlier run directories have, so that they are still reused
            task_names=list(self.tasks.task_names),
            seed=self.seed,
            **asdict(self.settings),
        )


def grid(
    out: str,
    algos: Sequence[str],
    tasks: Sequence[str],
    seeds: Sequence[int],
    settings: BenchSettings,
    wandb: WandbSettings | None = None,
    storage: str | None = None,
) -> list[RunSpec]:
    """The runs of a grid: multi-task algorithms take a suite as one run, the others one run per task (``wandb``: each
    run also logs to W&B; ``storage``: the URI of the store that keeps the grid, ``out`` then being a local copy)."""
    settings.check()
    unknown = [name for name in algos if name not in ALGOS]
    if unknown:
        raise ValueError(f"Unknown algorithm(s) {unknown}; registered: {sorted(ALGOS)}")
    resolved = [resolve_tasks(name) for name in tasks]
    runs = []
    for name in algos:
        algo = ALGOS[name]
        for entry in resolved:
            parts = [entry] if algo.multi_task or not entry.is_suite else entry.split()
            runs += [
                RunSpec(name, algo, part, seed, settings, out, wandb, storage=storage) for part in parts for seed in seeds
            ]
    # The aggregate scores (algorithm, seed, task) cells: two runs filling one cell would mix their scores
    first_run: dict[tuple[str, int, str], RunSpec] = {}
    for run in runs:
        for task in run.tasks.task_names:
            other = first_run.setdefault((run.algo_name, run.seed, task), run)
            if other is not run:
                raise ValueError(
                    f"{run.algo_name} would train {task!r} with seed {run.seed} in two runs ({other.tasks.label} and "
                    f"{run.tasks.label}), whose scores the aggregate cannot tell apart. Run them as separate grids "
                    "(another --out), or compare single- and multi-task training with a single-task variant such as "
                    "brc_sac_st."
                )
    return runs


def read_json(path: str) -> Any:
    """A JSON file's content, or ``None`` when it is missing or unreadable (a run that never wrote it)."""
    try:
        with open(path) as file:
            return json.load(file)
    except (OSError, json.JSONDecodeError):
        return None


def json_form(value: Any) -> Any:
    """``value`` as JSON can hold it, to compare with a saved ``config.json``: classes and functions as
    ``"module:qualname"``, tuples as lists, other objects by their ``repr``."""
    if isinstance(value, dict):
        return {str(key): json_form(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_form(item) for item in value]
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, type) or inspect.isroutine(value):
        return f"{value.__module__}:{value.__qualname__}"
    return repr(value)


def saved_status(spec: RunSpec) -> str | None:
    """The ``status`` in the run directory's ``config.json`` (``"running"``: started, not finished; ``"complete"``),
    or ``None`` when there is none or it was written with other settings."""
    saved = read_json(os.path.join(spec.run_dir, "config.json"))
    if saved is None:
        return None
    expected = {key: value for key, value in spec.config().items() if key in saved or key not in LATER_CONFIG_KEYS}
    if {key: value for key, value in saved.items() if key not in RUN_TIMES} != expected:
        return None
    return saved.get("status")


def is_complete(spec: RunSpec) -> bool:
    """A finished run with the same settings (its evaluations are reused)."""
    return saved_status(spec) == "complete"


def run_files(spec: RunSpec) -> dict[str, bytes]:
    """The content of a run's result files (:data:`RESULT_FILES`) that exist, by name."""
    files = {}
    for name in RESULT_FILES:
        path = os.path.join(spec.run_dir, name)
        if os.path.exists(path):
            with open(path, "rb") as file:
                files[name] = file.read()
    return files


def write_run_files(spec: RunSpec, files: dict[str, bytes]) -> None:
    """Write a run's result files (from :func:`run_files` on another machine) into its directory here;
    ``config.json`` last, so that the run only counts as complete once the others are in place."""
    os.makedirs(spec.run_dir, exist_ok=True)
    for name in sorted(files, key=lambda name: name == "config.json"):
        with atomic_file(os.path.join(spec.run_dir, name)) as file:
            file.write(files[name])
