"""The paper's reference scores: task-name mapping, the packaged table, and their place in run reports."""

from sb3_brc.envs.paper_scores import _table, paper_score, paper_task_name
from sb3_brc.tools.evaluation import write_eval_rows
from sb3_brc.tools.report import write_report


def test_our_task_names_map_to_the_papers():
    assert paper_task_name("dm_control/dog-run-v0") == "dog-run"
    assert paper_task_name("reach-v3") == paper_task_name("reach-v3-goal-observable") == "reach-v2-goal-observable"
    assert paper_task_name("apple-rotate-v1") == "apple"
    assert paper_task_name("h1-walk-v0") == "h1-walk-v0"
    # Values from the released curves' last points (the packaged table)
    dog = paper_score("dog-run")
    assert (dog.family, dog.multi_task, dog.single_task) == ("dmc", 0.39, 0.295)
    assert paper_score("assembly-v3").multi_task == 0.2 and paper_score("assembly-v3").single_task == 0.6
    assert paper_score("h1hand-push-v0").family == "humanoidbench_hard"
    assert paper_score("Pendulum-v1") is None


def test_suite_sizes_in_the_table():
    families = [score.family for score in _table().values()]
    counts = {family: families.count(family) for family in set(families)}
    assert counts == {"dmc": 7, "metaworld": 50, "humanoidbench": 9, "humanoidbench_hard": 28, "shadowhand": 85}


def test_report_shows_paper_scores_next_to_the_run(tmp_path):
    rows = [
        dict(timesteps=2000, steps_per_task=1000, task=task, mean_return=ret, std_return=1.0, success_rate=success,
             score=score, episodes=5)
        for task, ret, success, score in [
            ("dog-run", 200.0, None, 0.2), ("reach-v3", 10.0, 1.0, 1.0), ("Pendulum-v1", -300.0, None, None),
        ]
    ]  # fmt: skip
    write_eval_rows(str(tmp_path / "eval.csv"), rows, append=False)
    baseline = [dict(task=row["task"], mean_return=row["mean_return"] - 50) for row in rows]
    text = write_report(str(tmp_path), "run", baseline)
    assert "paper MT score | paper ST score |" in text
    table = {line.split(" | ")[0].lstrip("| "): line for line in text.splitlines() if line.startswith("| ")}
    assert table["dog-run"].endswith("| 0.20 | 0.39 | 0.29 |")  # run score, paper multi-task, paper single-task
    assert table["Pendulum-v1"].endswith("| - | - | - |")  # no normalised score, not in the paper
    assert "dmc (1 tasks): this run 0.20, paper multi-task 0.39, single-task 0.29" in text
    assert "metaworld (1 tasks): this run 1.00, paper multi-task 1.00, single-task 1.00" in text
