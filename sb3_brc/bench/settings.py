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
from typing import Any, TypeVar

from sb3_brc.sac.policies import SIZE_PRESETS

Settings = TypeVar("Settings")


def setting(default: Any, help: str, **flag_kwargs: Any) -> Any:
    """A settings field: its default, its ``--help`` text and further ``add_argument`` keywords (``choices``)."""
    return dataclasses.field(default=default, metadata=dict(help=help, **flag_kwargs))


@dataclass(frozen=True)
class BenchSettings:
    """Budget and sizes shared by every run of a grid (saved in each run's ``config.json``)."""

    steps_per_task: int = setting(5000, "env steps per task")
    eval_every: int = setting(1000, "env steps per task between evaluations")
    eval_episodes: int = setting(5, "deterministic evaluation episodes per task")
    learning_starts: int = setting(1000, "random steps per task")
    batch_size: int | None = setting(None, "all algorithms (default: each one's own)")
    gradient_steps: int | None = setting(None, "all algorithms (default: each one's own: BRC 2, SAC/TQC/CrossQ 1)")
    size: str = setting("tiny", "BRC size preset", choices=list(SIZE_PRESETS))
    width: int | None = setting(None, "critic width for all algorithms (overrides --size)")
    device: str = setting("auto", "torch device")
    threads: int = setting(1, "torch threads per run process")

    def check(self) -> None:
        """Reject budgets that cannot produce the evaluation schedule."""
        if self.steps_per_task < 1 or self.eval_every < 1 or self.eval_episodes < 1:
            raise ValueError("steps_per_task, eval_every and eval_episodes must be >= 1")
        if self.steps_per_task % self.eval_every != 0:
            raise ValueError(f"steps_per_task ({self.steps_per_task}) must be a multiple of eval_every ({self.eval_every})")
        if self.size not in SIZE_PRESETS:
            raise ValueError(f"Unknown size {self.size!r}; presets: {list(SIZE_PRESETS)}")


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
        flag name (its ``dest`` follows the name)
    """
    fields = {item.name: item for item in dataclasses.fields(settings_class)}
    hints = typing.get_type_hints(settings_class)
    for name in names or list(fields):
        item = fields[name]
        kwargs = dict(type=_flag_type(hints[name]), default=item.default, **item.metadata)
        kwargs.update((overrides or {}).get(name, {}))
        flag = kwargs.pop("flag", "--" + name.replace("_", "-"))
        parser.add_argument(flag, **kwargs)


def settings_from_args(settings_class: type[Settings], args: argparse.Namespace) -> Settings:
    """The settings dataclass from parsed :func:`add_setting_flags` flags."""
    return settings_class(**{item.name: getattr(args, item.name) for item in dataclasses.fields(settings_class)})
