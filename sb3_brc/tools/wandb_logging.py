"""Weights & Biases logging for ``sb3-brc train --wandb`` and ``sb3-brc bench --wandb`` (the ``wandb`` extra).

A :class:`WandbRun` receives everything SB3's logger writes during ``learn()`` and the evaluations
(:class:`WandbOutputFormat`, an SB3 output format added next to tensorboard's, so W&B gets the keys tensorboard gets:
``train/...``, ``rollout/<task>/...``, ``eval/<task>/...``), against ``global_step`` = the model's ``num_timesteps``.
The training driver (:func:`sb3_brc.tools.training.train_and_evaluate`) adds the run's config, the final per-task
table and the report's plots. wandb is imported only when a run starts; without it the error says how to install it.
"""

import argparse
import contextlib
import json
import os
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from types import ModuleType
from typing import Any

import numpy as np
import torch as th
from matplotlib.backends.backend_agg import FigureCanvasAgg
from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.logger import Figure, HParam, Image, KVWriter, Video

from sb3_brc.common.multitask import MultiTaskAlgorithm
from sb3_brc.common.utils import SB3_BRC_VERSION
from sb3_brc.tools.diagnostics import plot_task_embeddings
from sb3_brc.tools.report import plot_final_scores, plot_learning_curves

WANDB_INSTALL_HINT = "Weights & Biases logging needs the wandb package: pip install 'sb3-brc[wandb]'"
# The x-axis of every logged key: the model's num_timesteps (tensorboard's step), as its own key so that a resumed
# run can log steps again
STEP_KEY = "global_step"
# The per-task table of the last evaluation, next to the random policy
FINAL_TABLE_COLUMNS = ["task", "steps_per_task", "mean_return", "std_return", "random_return", "success_rate", "score"]


def import_wandb() -> ModuleType:
    """The ``wandb`` module, or an ``ImportError`` that says how to install it."""
    try:
        import wandb  # an optional dependency: imported only when a run logs to W&B
    except ImportError as error:
        raise ImportError(WANDB_INSTALL_HINT) from error
    return wandb


@dataclass(frozen=True)
class WandbSettings:
    """Where runs log on W&B (account, entity and online/offline mode: wandb's own settings and ``WANDB_*`` variables).

    :param project: The W&B project
    :param group: The group of the runs (``None``: the caller's default, e.g. the grid's output directory)
    """

    project: str = "sb3-brc"
    group: str | None = None


def add_wandb_arguments(parser: argparse.ArgumentParser) -> None:
    """``--wandb``, ``--wandb-project`` and ``--wandb-group`` (read back with :func:`wandb_settings_from_args`)."""
    parser.add_argument("--wandb", action="store_true", help="also log to Weights & Biases (pip install 'sb3-brc[wandb]')")
    parser.add_argument("--wandb-project", default=WandbSettings.project, help="W&B project")
    parser.add_argument("--wandb-group", default=None, help="W&B group (default: from the run config)")


def wandb_settings_from_args(args: argparse.Namespace, default_group: str | None = None) -> WandbSettings | None:
    """The :class:`WandbSettings` of ``--wandb``, ``None`` without it.

    :param args: Parsed :func:`add_wandb_arguments` flags
    :param default_group: The group when ``--wandb-group`` names none
    """
    if not args.wandb:
        return None
    return WandbSettings(project=args.wandb_project, group=args.wandb_group or default_group)


def tasks_label(tasks: Sequence[str]) -> str:
    """A short name for a task list in run names: ``a``, ``a+b+c``, or ``a+9-more`` beyond three tasks."""
    if len(tasks) > 3:
        return f"{tasks[0]}+{len(tasks) - 1}-more"
    return "+".join(tasks)


def run_name(algo: str, tasks: str, seed: int) -> str:
    """``<algo>-<suite or tasks>-seed<k>``, the W&B run name of a training run."""
    return f"{algo}-{tasks}-seed{seed}"


def _png(figure: Any) -> np.ndarray:
    """A matplotlib figure drawn into an RGBA array (without pyplot)."""
    canvas = FigureCanvasAgg(figure)
    canvas.draw()
    return np.asarray(canvas.buffer_rgba())


class WandbOutputFormat(KVWriter):
    """An SB3 logger output format writing to a W&B run: what tensorboard gets, at ``global_step`` = SB3's step.

    Numbers and strings as they are, tensors and arrays as histograms, SB3's ``Figure`` and ``Image`` as images,
    ``HParam`` into the run's config. Keys SB3 excludes from tensorboard (``time/episodes``, ``train/n_updates``...) or
    from ``"wandb"`` are left out, as are ``Video`` values (W&B would need moviepy to encode them).

    :param run: The W&B run (``wandb.init``'s result)
    """

    def __init__(self, run: Any):
        self.run = run
        self._wandb = import_wandb()

    def _value(self, key: str, value: Any) -> Any:
        if isinstance(value, th.Tensor | np.ndarray):
            array = th.as_tensor(value).detach().cpu().numpy()
            return array.item() if array.size == 1 else self._wandb.Histogram(array)
        if isinstance(value, Figure):
            return self._wandb.Image(_png(value.figure))
        if isinstance(value, Image):
            image = th.as_tensor(value.image).detach().cpu().numpy()
            if value.dataformats.upper().startswith("C"):
                image = np.moveaxis(image, 0, -1)  # CHW -> HWC
            return self._wandb.Image(image)
        if isinstance(value, HParam):
            self.run.config.update(value.hparam_dict, allow_val_change=True)
            return None
        if isinstance(value, Video):
            return None
        return value

    def write(self, key_values: dict[str, Any], key_excluded: dict[str, tuple[str, ...]], step: int = 0) -> None:
        data = {}
        for key, value in key_values.items():
            excluded = key_excluded.get(key) or ()
            if "tensorboard" in excluded or "wandb" in excluded:
                continue
            logged = self._value(key, value)
            if logged is not None:
                data[key] = logged
        if data:
            self.run.log({STEP_KEY: step, **data})

    def close(self) -> None:
        """Nothing to close: the owner of the run finishes it."""


class _AttachOutputFormat(BaseCallback):
    """Adds a :class:`WandbOutputFormat` to the model's logger when ``learn()`` starts (``learn()`` makes a new
    logger each time, so every call gets it)."""

    def __init__(self, wandb_run: "WandbRun"):
        super().__init__()
        self.wandb_run = wandb_run

    def _on_training_start(self) -> None:
        self.wandb_run.attach(self.model)

    def _on_step(self) -> bool:
        return True


class WandbRun:
    """One W&B run of a training run: SB3's logger keys, the config, images and tables.

    :param settings: Project and group
    :param name: The run name (:func:`run_name`)
    :param config: The run config
    :param job_type: ``"train"``, ``"bench"``, ``"aggregate"``...
    :param run_id: Continue this W&B run (a resumed training run) instead of starting a new one
    """

    def __init__(
        self,
        settings: WandbSettings,
        name: str,
        config: dict[str, Any],
        job_type: str = "train",
        run_id: str | None = None,
    ):
        wandb = import_wandb()
        self.run = wandb.init(
            project=settings.project,
            group=settings.group,
            name=name,
            job_type=job_type,
            config=dict(config, sb3_brc_version=SB3_BRC_VERSION),
            id=run_id,
            resume="allow" if run_id else None,
        )
        self.run.define_metric(STEP_KEY)
        self.run.define_metric("*", step_metric=STEP_KEY)
        self.output_format = WandbOutputFormat(self.run)

    @property
    def id(self) -> str:
        """The W&B run id (to continue the run after a resume)."""
        return str(self.run.id)

    def attach(self, model: BaseAlgorithm) -> None:
        """Send the model's logger output to this run too (from now until ``learn()`` makes a new logger)."""
        logger = getattr(model, "_logger", None)  # none before the first learn() of a model
        if logger is not None and self.output_format not in logger.output_formats:
            logger.output_formats.append(self.output_format)

    def callback(self) -> BaseCallback:
        """A ``learn()`` callback that sends the model's logger output to this run."""
        return _AttachOutputFormat(self)

    def update_config(self, values: dict[str, Any]) -> None:
        """Add ``values`` to the run's config."""
        self.run.config.update(values, allow_val_change=True)

    def log_images(self, images: dict[str, str]) -> None:
        """Log PNG files, W&B key -> path (missing files are skipped)."""
        wandb = import_wandb()
        found = {key: wandb.Image(path) for key, path in images.items() if os.path.exists(path)}
        if found:
            self.run.log(found)

    def log_table(self, key: str, columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
        """Log a ``wandb.Table``."""
        wandb = import_wandb()
        self.run.log({key: wandb.Table(columns=list(columns), data=[list(row) for row in rows])})

    def log_evaluations(self, model: BaseAlgorithm, rows: list[dict[str, Any]], baseline: list[dict[str, Any]]) -> None:
        """The report of a run: the last evaluation's per-task table (``final/per_task``), the learning curves and
        final returns plots of :mod:`sb3_brc.tools.report` (``report/curves``, ``report/scores``) and, for a
        multi-task BRC model, its task embeddings (``report/embeddings``).

        :param model: The trained model
        :param rows: Every evaluation's rows (:data:`sb3_brc.tools.evaluation.CSV_FIELDS`)
        :param baseline: The random policy's rows
        """
        if not rows:
            return
        random_returns = {row["task"]: row["mean_return"] for row in baseline}
        last = max(row["steps_per_task"] for row in rows)
        final = [row for row in rows if row["steps_per_task"] == last]
        table = [dict(row, random_return=random_returns.get(row["task"])) for row in final]
        self.log_table("final/per_task", FINAL_TABLE_COLUMNS, [[row[c] for c in FINAL_TABLE_COLUMNS] for row in table])
        with tempfile.TemporaryDirectory() as directory:  # W&B copies the images into its run directory
            images = dict(curves=os.path.join(directory, "curves.png"), scores=os.path.join(directory, "scores.png"))
            plot_learning_curves(rows, random_returns, images["curves"])
            plot_final_scores(final, random_returns, images["scores"])
            if isinstance(model, MultiTaskAlgorithm) and model.num_tasks > 1:
                images["embeddings"] = os.path.join(directory, "embeddings.png")
                plot_task_embeddings(model, images["embeddings"])
            self.log_images({f"report/{name}": path for name, path in images.items()})

    def finish(self, exit_code: int = 0) -> None:
        """End the run (its files are complete; offline runs can be uploaded with ``wandb sync``)."""
        self.run.finish(exit_code=exit_code)

    def __enter__(self) -> "WandbRun":
        return self

    def __exit__(self, error_type: type[BaseException] | None, *_: Any) -> None:
        self.finish(exit_code=0 if error_type is None else 1)


@contextlib.contextmanager
def open_wandb_run(
    settings: WandbSettings | None,
    name: str,
    config: dict[str, Any],
    job_type: str = "train",
    id_file: str | None = None,
    resume: bool = False,
) -> Iterator[WandbRun | None]:
    """A :class:`WandbRun` for the ``with`` block (``None`` when ``settings`` is ``None``: W&B off), finished at its
    end (with exit code 1 when the block raises).

    :param settings: Project and group, or ``None``
    :param name: The run name
    :param config: The run config
    :param job_type: The W&B job type
    :param id_file: JSON file that keeps the run id, so that ``resume`` continues the same W&B run
    :param resume: Continue the run named in ``id_file`` (when it exists)
    """
    if settings is None:
        yield None
        return
    run_id = None
    if resume and id_file is not None and os.path.exists(id_file):
        with open(id_file) as file:
            run_id = json.load(file).get("id")
    with WandbRun(settings, name, config, job_type, run_id) as wandb_run:
        if id_file is not None:
            with open(id_file, "w") as file:
                json.dump(dict(id=wandb_run.id, project=settings.project, group=settings.group, name=name), file, indent=2)
        yield wandb_run
