"""The budget and sizes of a benchmark grid, and the command-line flags generated from them.

Each field of :class:`BenchSettings` is one ``--flag-name`` (type, default and help from the field), so a new
setting is one field; ``sb3-brc train`` takes its flags of the same meaning from the same fields.
"""

import argparse
import dataclasses
import types
import typing
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

import torch as th

from sb3_brc.common.policies import SIZE_PRESETS
from sb3_brc.envs.subproc import check_step_timeout

if TYPE_CHECKING:
    from _typeshed import DataclassInstance

#: A settings dataclass (e.g. :class:`BenchSettings`).
Settings = TypeVar("Settings", bound="DataclassInstance")


def device_name(name: str) -> str:
    """A ``--device`` value: ``"auto"`` or a name torch knows (``cpu``, ``cuda``, ``cuda:1``, ``mps``, ...), else the
    flag's one-line error."""
    if name != "auto":
        try:
            th.device(name)
        except RuntimeError:
            raise argparse.ArgumentTypeError(f"unknown torch device {name!r} (auto, cpu, cuda, cuda:1, mps, ...)") from None
    return name


def setting(default: Any, help: str, **flag_kwargs: Any) -> Any:
    """A settings field: its default, its ``--help`` text and further ``add_argument`` keywords (``choices``)."""
    return dataclasses.field(default=default, metadata=dict(help=help, **flag_kwargs))


#: The lowest value of each count setting (``None``, where a setting allows it, leaves the algorithm's default;
#: ``gradient_steps=-1`` is SB3's "as many as env steps")
LOWEST: dict[str, int] = dict(
    steps_per_task=1, eval_every=1, eval_episodes=1, learning_starts=0, batch_size=1, gradient_steps=-1, width=1, threads=1
)


def count_problems(
    values: dict[str, int | None], flags: dict[str, str] | None = None, lowest: dict[str, int] | None = None
) -> list[str]:
    """``"--flag must be >= low, got value"`` for each setting of ``values`` below its lowest value.

    :param values: Setting name -> value (``None``: unset)
    :param flags: A setting's flag where it is not ``--setting-name`` (``sb3-brc train``'s ``--eval-freq``)
    :param lowest: Lowest values of settings :data:`LOWEST` does not list (a command's own flags)
    """
    flags, lowest = flags or {}, {**LOWEST, **(lowest or {})}
    return [
        f"{flags.get(name, '--' + name.replace('_', '-'))} must be >= {lowest[name]}, got {value}"
        for name, value in values.items()
        if value is not None and value < lowest[name]
    ]


@dataclass(frozen=True)
class BenchSettings:
    """Budget and sizes shared by every run of a grid (saved in each run's ``config.json``)."""

    steps_per_task: int = setting(5000, "env steps per task")
    eval_every: int = setting(1000, "env steps per task between evaluations")
    eval_episodes: int = setting(5, "deterministic evaluation episodes per task")
    learning_starts: int = setting(1000, "random steps per task")
    batch_size: int | None = setting(None, "all algorithms (default: each one's own)")
    gradient_steps: int | None = setting(None, "all algorithms (default: each one's own: BRCSAC 2, BRCDQN/SAC/TQC/CrossQ 1)")
    size: str = setting("tiny", "BRC size preset", choices=list(SIZE_PRESETS))
    width: int | None = setting(None, "critic width for all algorithms (overrides --size)")
    device: str = setting("auto", "torch device", type=device_name)
    threads: int = setting(1, "torch threads per run process")

    def check(self) -> None:
        """Reject counts no run can use, and budgets that cannot produce the evaluation schedule."""
        problems = count_problems({name: getattr(self, name) for name in LOWEST})
        if problems:
            raise ValueError("; ".join(problems))
        if self.steps_per_task % self.eval_every != 0:
            raise ValueError(f"steps_per_task ({self.steps_per_task}) must be a multiple of eval_every ({self.eval_every})")
        if self.size not in SIZE_PRESETS:
            raise ValueError(f"Unknown size {self.size!r}; presets: {list(SIZE_PRESETS)}")


#: Where the runs of a grid can execute (``--backend``)
BACKENDS = ("local", "ray")
#: Settings of how BRCSAC runs its update (the same maths): flags of ``sb3-brc bench`` and ``sb3-brc train``
UPDATE_OPTIONS = ("compile_update", "cuda_graph")


@dataclass(frozen=True)
class RunnerSettings:
    """Where and how the runs of a grid execute: backend, parallelism, resources, retries, checkpoints.

    Not part of a run's ``config.json``: a run completed by one backend is complete for the other, and a run
    interrupted on one resumes on the other (likewise with or without ``compile_update`` and ``cuda_graph``: the same
    update).
    """

    backend: str = setting("local", "local: a process pool on this machine; ray: Ray tasks (pip install sb3-brc[ray])",
                           choices=list(BACKENDS))  # fmt: skip
    workers: int = setting(1, "parallel runs (local backend; ray without --address: the local Ray instance's size)")
    address: str | None = setting(None, "Ray cluster to join ('auto': the one `ray start` runs here; default: start one)")
    cpus_per_run: float = setting(1.0, "CPUs Ray reserves per run")
    gpus_per_run: float = setting(0.0, "GPUs Ray reserves per run (fractions share a GPU)")
    max_retries: int = setting(2, "times a failed run (error or dead worker) is started again; it resumes from its checkpoint")
    checkpoint_every: int | None = setting(None, "env steps per task between a run's checkpoints (default: at each "
                                           "evaluation; 0: none, an interrupted run starts over)")  # fmt: skip
    step_timeout: float | None = setting(None, "seconds a task's step or reset may take (each task in its own process); "
                                         "a slower one fails the run, naming the task, and the retry resumes from its "
                                         "checkpoint", metavar="SECONDS")  # fmt: skip
    compile_update: bool | None = setting(None, "BRCSAC, BRCDQN: compile each update into one graph (the same maths), "
                                          "or --no-compile-update to run it eagerly; unset, BRCSAC compiles CPU runs "
                                          "long enough to pay its compile time back, BRCDQN runs eagerly")  # fmt: skip
    cuda_graph: bool | None = setting(None, "BRCSAC on a CUDA GPU: capture each update in one CUDA graph (the same "
                                      "maths; 2-4x fp32 updates/s at widths 512-2048 on an H200, 5-8x with TF32)")  # fmt: skip

    def check(self) -> None:
        """Reject settings no backend can run."""
        if self.backend not in BACKENDS:
            raise ValueError(f"Unknown backend {self.backend!r}; choose one of {list(BACKENDS)}")
        if self.workers < 1:
            raise ValueError(f"workers must be >= 1, got {self.workers}")
        if self.cpus_per_run <= 0 or self.gpus_per_run < 0:
            raise ValueError(f"cpus_per_run must be > 0 and gpus_per_run >= 0, got {self.cpus_per_run}, {self.gpus_per_run}")
        if self.max_retries < 0:
            raise ValueError(f"max_retries must be >= 0, got {self.max_retries}")
        if self.checkpoint_every is not None and self.checkpoint_every < 0:
            raise ValueError(f"checkpoint_every must be >= 0 (0: no checkpoints), got {self.checkpoint_every}")
        if self.step_timeout is not None:
            check_step_timeout(self.step_timeout)
        if self.backend == "local" and (self.address is not None or self.gpus_per_run > 0 or self.cpus_per_run != 1.0):
            raise ValueError("--address, --cpus-per-run and --gpus-per-run are Ray options: add --backend ray")


#: Named run settings: flags of ``sb3-brc train`` and ``sb3-brc bench`` that ``--preset`` sets unless given explicitly.
#: "cpu" keeps each command's cheap defaults (a tiny network, CPU minutes); "paper" is the reference training setup
#: (``train.py`` of naumix/BiggerRegularizedCategorical): a 4096-wide critic with 2 blocks and a 256-wide actor (size
#: "256M"), 5000 random steps per task, 1M env steps per task, evaluation every 50k steps per task over 10
#: deterministic episodes; batch 256 single-task / 1024 multi-task, 2 updates per env step and 1M replay per task
#: are the algorithm's own defaults already.
PRESETS: dict[str, dict[str, Any]] = {
    "cpu": {},
    "paper": dict(size="256M", learning_starts=5_000, steps_per_task=1_000_000, eval_every=50_000, eval_episodes=10),
}


def add_preset_flag(parser: argparse.ArgumentParser) -> None:
    """``--preset``: one of :data:`PRESETS` (apply it with :func:`parse_with_preset`)."""
    parser.add_argument(
        "--preset",
        choices=list(PRESETS),
        default="cpu",
        help="named settings (paper: the reference's training setup, for GPUs); flags given explicitly win",
    )


def parse_with_preset(
    parser: argparse.ArgumentParser, argv: Sequence[str] | None, preset_parsers: dict[str | None, argparse.ArgumentParser]
) -> argparse.Namespace:
    """Parse ``argv`` with the chosen preset's values as defaults of the parser that has the ``--preset`` flag.

    :param parser: The top-level parser
    :param argv: The arguments (``None``: ``sys.argv``)
    :param preset_parsers: The (sub)parsers with a ``--preset`` flag, by ``args.command`` (``None`` for ``parser``)
    """
    first, _ = parser.parse_known_args(argv)
    target = preset_parsers.get(getattr(first, "command", None))
    if target is not None:
        target.set_defaults(**PRESETS[first.preset])
    return parser.parse_args(argv)


def _flag_type(annotation: Any) -> type:
    # ``int | None`` parses as int (None is the default, never typed on the command line)
    if isinstance(annotation, types.UnionType):
        (annotation,) = (arg for arg in typing.get_args(annotation) if arg is not type(None))
    return annotation


def add_setting_flags(
    parser: argparse.ArgumentParser,
    settings_class: type,
    names: Sequence[str] | None = None,
    overrides: dict[str, dict[str, Any]] | None = None,
) -> None:
    """Add a ``--field-name`` flag per field of a settings dataclass (built with :func:`setting`).

    :param parser: Where to add the flags
    :param settings_class: The dataclass
    :param names: The fields to add, in this order (default: all, in field order)
    :param overrides: Per field, ``add_argument`` keywords replacing the generated ones; ``"flag"`` gives another
        flag name (the parsed value keeps the field's name, so presets and settings find it)
    """
    fields = {item.name: item for item in dataclasses.fields(settings_class)}
    hints = typing.get_type_hints(settings_class)
    for name in names or list(fields):
        item = fields[name]
        kind = _flag_type(hints[name])
        # A bool field is a switch (bool("False") would be True); one whose default is None has an off switch too
        # (--name / --no-name; unset, the one who reads it decides)
        kwargs: dict[str, Any] = dict(type=kind, default=item.default)
        if kind is bool:
            kwargs = dict(action="store_true") if item.default is not None else dict(action=argparse.BooleanOptionalAction)
        kwargs.update(item.metadata)
        kwargs.update((overrides or {}).get(name, {}))
        flag = kwargs.pop("flag", "--" + name.replace("_", "-"))
        parser.add_argument(flag, dest=name, **kwargs)  # the field's name, also under another flag name


def settings_from_args(settings_class: type[Settings], args: argparse.Namespace) -> Settings:
    """The settings dataclass from parsed :func:`add_setting_flags` flags."""
    return settings_class(**{item.name: getattr(args, item.name) for item in dataclasses.fields(settings_class)})
