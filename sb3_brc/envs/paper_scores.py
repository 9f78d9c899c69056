"""The BRC paper's final per-task scores, for comparison in reports.

``paper_final_scores.csv`` holds, per task, the last evaluation point of the paper's released learning curves
(``results/`` of ``naumix/BiggerRegularizedCategorical``), averaged over seeds, for the multi-task agent (``mt_``)
and single-task agents (``st_``): the raw return or success rate and the score as the paper normalises it (DMC
return / 1000, Meta-World and ShadowHand success rate, HumanoidBench ``(R - random) / (success - random)``).
"""

import csv
import pathlib
from dataclasses import dataclass
from functools import cache


@dataclass(frozen=True)
class PaperScore:
    """One task's final scores in the paper.

    :param family: ``"dmc"``, ``"metaworld"``, ``"humanoidbench"``, ``"humanoidbench_hard"`` or ``"shadowhand"``
    :param task: The paper's task name
    :param multi_task: Score of the multi-task agent
    :param single_task: Score of single-task agents (``None`` where the paper has no single-task run)
    """

    family: str
    task: str
    multi_task: float
    single_task: float | None


@cache
def _table() -> dict[str, PaperScore]:
    path = pathlib.Path(__file__).with_name("paper_final_scores.csv")
    with open(path, newline="") as file:
        rows = list(csv.DictReader(file))
    return {
        row["task"]: PaperScore(
            row["suite"],
            row["task"],
            float(row["mt_final_score"]),
            float(row["st_final_score"]) if row["st_final_score"] else None,
        )
        for row in rows
    }


def paper_task_name(name: str) -> str:
    """The paper's name of one of our tasks: Meta-World v3 names map to the paper's v2 goal-observable ones (v2 is gone
    from Meta-World 3), DMC ids to their short names, BRC ShadowHand ids to their object names."""
    name = name.removeprefix("dm_control/")
    if name.endswith("-v3") or name.endswith("-v3-goal-observable"):
        return name.split("-v3")[0] + "-v2-goal-observable"
    for suffix in ("-rotate-v1", "-v0"):
        if name.endswith(suffix) and name.removesuffix(suffix) in _table():
            return name.removesuffix(suffix)
    return name


def paper_score(name: str) -> PaperScore | None:
    """The paper's final scores of a task (by our task name), ``None`` for a task the paper does not report."""
    return _table().get(paper_task_name(name))
