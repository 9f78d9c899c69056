"""Task suites: named task lists (Meta-World MT10/MT50, DeepMind Control, Gymnasium MuJoCo, ShadowHand, Atari, a
CPU-sized benchmark suite) and their envs."""

import difflib
import functools
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import cast

import gymnasium as gym

from sb3_brc.envs.atari import ATARI_5, ATARI_100K, atari_factory, atari_game
from sb3_brc.envs.humanoidbench import H1_TASKS, H1HAND_TASKS
from sb3_brc.envs.scores import ATARI_SCORES
from sb3_brc.envs.shadowhand import (
    SHADOWHAND_TASKS,
    SHADOWHAND_TEST_OBJECTS,
    SHADOWHAND_TRAIN_OBJECTS,
    check_objects,
    object_task,
)
from sb3_brc.envs.tasks import GOAL_OBSERVABLE, TaskSpec, require, task_factory
from sb3_brc.envs.vec_env import BaseMultiTaskVecEnv, DiscreteMultiTaskVecEnv, MultiTaskVecEnv

DMC_DOGS = ["dog-stand", "dog-walk", "dog-trot", "dog-run"]
DMC_HUMANOIDS = ["humanoid-stand", "humanoid-walk", "humanoid-run"]


def _dmc(names: list[str]) -> list[str]:
    return [f"dm_control/{name}-v0" for name in names]


def _pendulum(g: float) -> gym.Env:
    return gym.make("Pendulum-v1", g=g)


@dataclass(frozen=True)
class Suite:
    """A named list of tasks. ``metaworld`` suites are built as one Meta-World vector env (exact task sets), or
    with ``goal_observable`` as the BRC paper builds them.

    :param description: One line for ``sb3-brc suites``
    :param tasks: Task specs: names :func:`task_factory` resolves, or picklable callables returning an env
    :param metaworld: Meta-World benchmark name (``"MT10"``, ``"MT50"``) built as one vector env
    :param goal_observable: Build the ``metaworld`` benchmark's tasks one by one as goal-observable envs with
        200-step episodes (the BRC paper's protocol, :func:`~sb3_brc.envs.tasks.make_goal_observable_metaworld`)
    :param atari: The tasks are Atari game names (built by :func:`make_atari_suite`)
    :param shadowhand_objects: The tasks are the BRC paper's ShadowHand objects (built by :func:`make_shadowhand_suite`)
    :param task_names: Names of the tasks (required when a task is a callable; default: resolved from the specs)
    """

    description: str
    tasks: Sequence[TaskSpec] = field(default_factory=list)
    metaworld: str | None = None
    goal_observable: bool = False
    atari: bool = False
    shadowhand_objects: bool = False
    task_names: list[str] | None = None

    def __post_init__(self) -> None:
        if self.task_names is None and any(callable(task) for task in self.tasks):
            raise ValueError("A suite with callable tasks needs task_names")
        if self.task_names is not None and len(self.task_names) != len(self.tasks):
            raise ValueError(f"{len(self.task_names)} task names for {len(self.tasks)} tasks")
        if self.goal_observable and self.metaworld is None:
            raise ValueError("goal_observable builds a Meta-World benchmark's tasks: name it with metaworld")


#: The suites by name (``sb3-brc suites`` lists them); :func:`make_suite` builds one.
#: :meta hide-value:
SUITES: dict[str, Suite] = {
    "mt10": Suite("Meta-World MT10: 10 manipulation tasks, 500-step episodes, success rate", metaworld="MT10"),
    "mt50": Suite("Meta-World MT50: 50 manipulation tasks, 500-step episodes, success rate", metaworld="MT50"),
    "mt10-paper": Suite(
        "MT10 as in the BRC paper: goal-observable envs (v3, v2 is gone), 200-step episodes, success rate",
        metaworld="MT10",
        goal_observable=True,
    ),
    "mt50-paper": Suite(
        "MT50 as in the BRC paper: goal-observable envs (v3, v2 is gone), 200-step episodes, success rate",
        metaworld="MT50",
        goal_observable=True,
    ),
    "dmc-dogs": Suite("DMC dog stand/walk/trot/run (223-dim obs, 38-dim actions)", _dmc(DMC_DOGS)),
    "dmc-humanoids": Suite("DMC humanoid stand/walk/run (67-dim obs, 21-dim actions)", _dmc(DMC_HUMANOIDS)),
    "dmc-hard": Suite("DMC dogs + humanoids, the paper's 7 hard DMC tasks", _dmc(DMC_DOGS + DMC_HUMANOIDS)),
    "dmc-easy": Suite(
        "Cheap DMC set: cartpole-swingup, reacher-easy, cheetah-run, walker-walk",
        _dmc(["cartpole-swingup", "reacher-easy", "cheetah-run", "walker-walk"]),
    ),
    "hb-h1": Suite(
        "HumanoidBench H1 without hands, the paper's 9 tasks (51-dim obs, 19-dim actions, 1000 steps; humanoid_bench)",
        H1_TASKS,
    ),
    "hb-h1hand": Suite(
        "HumanoidBench H1 with hands, the paper's 28 released tasks (61-dim actions, 500/1000 steps; humanoid_bench)",
        H1HAND_TASKS,
    ),
    "mujoco-locomotion": Suite(
        "Gymnasium MuJoCo locomotion: HalfCheetah, Hopper, Walker2d, Ant (v5)",
        ["HalfCheetah-v5", "Hopper-v5", "Walker2d-v5", "Ant-v5"],
    ),
    "mujoco-easy": Suite(
        "Gymnasium MuJoCo balancing and reaching: InvertedPendulum, InvertedDoublePendulum, Reacher (v5)",
        ["InvertedPendulum-v5", "InvertedDoublePendulum-v5", "Reacher-v5"],
    ),
    # Every task of the demo learns within its budget (6000 env steps per task, a third of the updates each); the DMC
    # tasks tried (1000-step episodes: 6 per task in that budget) did not, see benchmarks/RESULTS.md
    "demo": Suite(
        "Mixed demo (CPU minutes): InvertedPendulum-v5, Reacher-v5, InvertedDoublePendulum-v5 (obs 4/10/9, actions 1/2/1)",
        ["InvertedPendulum-v5", "Reacher-v5", "InvertedDoublePendulum-v5"],
    ),
    "shadowhand": Suite(
        "gymnasium-robotics' ShadowHand rotations (block z/parallel/xyz, egg, pen): 100 steps, success rate",
        SHADOWHAND_TASKS,
    ),
    "shadowhand-85": Suite(
        "The BRC paper's 85 ShadowHand training objects (z-rotation, 100 steps, success rate; needs dex_envs)",
        SHADOWHAND_TRAIN_OBJECTS,
        shadowhand_objects=True,
    ),
    "shadowhand-test-29": Suite(
        "The BRC paper's 29 held-out ShadowHand objects (transfer; needs dex_envs)",
        SHADOWHAND_TEST_OBJECTS,
        shadowhand_objects=True,
    ),
    "atari-5": Suite("Atari, 5 games (BRCDQN): Pong, Breakout, Boxing, Freeway, MsPacman", ATARI_5, atari=True),
    "atari-2": Suite("Atari, 2 games for quick checks (BRCDQN): Pong, Breakout", ["Pong", "Breakout"], atari=True),
    "atari-100k": Suite("Atari-100k's 26 games (BRCDQN), human-normalised scores", ATARI_100K, atari=True),
    # functools.partial (not lambdas): the tasks travel to spawned benchmark processes
    "pendulum-gravity": Suite(
        "Pendulum-v1 with gravity g = 6, 9, 12: one embodiment, three dynamics (CPU-sized multi-task benchmark)",
        [functools.partial(_pendulum, float(g)) for g in (6, 9, 12)],
        task_names=[f"pendulum-g{g}" for g in (6, 9, 12)],
    ),
}


#: Prefix of a suite of any Atari games: ``"atari:Boxing,Freeway"`` (see :func:`find_suite`)
ATARI_GAMES_PREFIX = "atari:"


def find_suite(name: str) -> Suite | None:
    """The suite a name stands for: a key of :data:`SUITES`, or ``"atari:<game>,<game>,..."`` for a suite of
    those Atari games (one game: a single-game suite, preprocessed as the named Atari suites are), else ``None``.
    Raises ``ValueError`` naming an unknown game."""
    if not name.startswith(ATARI_GAMES_PREFIX):
        return SUITES.get(name)
    games = [atari_game(game.strip()) for game in name.removeprefix(ATARI_GAMES_PREFIX).split(",") if game.strip()]
    unknown = [game for game in games if game not in ATARI_SCORES]
    if not games or unknown:
        close = [match for game in unknown for match in difflib.get_close_matches(game, list(ATARI_SCORES), n=2)]
        hint = f" Did you mean {', '.join(close)}?" if close else ""
        raise ValueError(
            f"{name!r}: unknown Atari game(s) {unknown}.{hint} Games (those with random and human scores): "
            f"{', '.join(sorted(ATARI_SCORES))}"
        )
    if len(set(games)) != len(games):
        raise ValueError(f"{name!r} names a game twice")
    return Suite(f"Atari: {', '.join(games)}", games, atari=True)


def _metaworld_benchmark_tasks(benchmark: str) -> list[str]:
    # The benchmark's task classes in Meta-World's order (its vector env builds them in this order too)
    return list(getattr(require("metaworld").env_dict, f"{benchmark}_V3"))


#: Per (benchmark, seed): the sub-envs of Meta-World vector envs built in this process and not handed out yet
#: (``None`` where one was)
_METAWORLD_SUB_ENVS: dict[tuple[str, int | None], list[list[gym.Env | None]]] = {}


def _metaworld_vector_task(benchmark: str, index: int, seed: int | None) -> gym.Env:
    # Meta-World builds MT10/MT50 only as a vector env (exact task sets and goals); SB3 needs its own VecEnv with
    # same-step resets around the sub-envs. One vector env serves the task factories of one suite: each sub-env is
    # handed out once, so two suites built alike (training and evaluation envs) never share an env; a factory
    # called again builds another vector env (with a seed, the same tasks and goals)
    unused = _METAWORLD_SUB_ENVS.setdefault((benchmark, seed), [])
    sub_envs = next((envs for envs in unused if envs[index] is not None), None)
    if sub_envs is None:
        require("metaworld")
        vector_env = gym.make_vec(f"Meta-World/{benchmark}", vector_strategy="sync", seed=seed, use_one_hot=False)
        sub_envs = list(cast(gym.vector.SyncVectorEnv, vector_env).envs)
        unused.append(sub_envs)
    env, sub_envs[index] = sub_envs[index], None
    if all(other is None for other in sub_envs):
        unused.remove(sub_envs)
    assert env is not None  # chosen above for being there
    return env


def make_atari_suite(
    games: list[str],
    training: bool = True,
    seed: int | None = None,
    max_frames: int = 108_000,
    sticky_actions: float = 0.0,
    **vec_env_kwargs,
) -> DiscreteMultiTaskVecEnv:
    """A :class:`DiscreteMultiTaskVecEnv` of preprocessed Atari games (``sb3_brc.envs.atari.make_atari``).

    :param games: Game names (``"Pong"``, ``"MsPacman"``, ...)
    :param training: Loss of a life ends the episode (training envs); ``False`` plays whole games (evaluation)
    :param seed: Seed of the envs
    :param max_frames: Emulator frames per game before truncation (108k: ALE's 30 minutes)
    :param sticky_actions: ALE's repeat-action probability (0 by default, as in DrQ(eps))
    :param vec_env_kwargs: Passed to :class:`DiscreteMultiTaskVecEnv`
    """
    names = [atari_game(game) for game in games]
    return DiscreteMultiTaskVecEnv(
        [atari_factory(game, training, max_frames=max_frames, sticky_actions=sticky_actions) for game in names],
        task_names=names,
        task_kinds=["atari"] * len(names),
        seed=seed,
        **vec_env_kwargs,
    )


def make_shadowhand_suite(objects: list[str], seed: int | None = None, **vec_env_kwargs) -> MultiTaskVecEnv:
    """A :class:`MultiTaskVecEnv` of the BRC paper's ShadowHand objects (``dex_envs`` of its reference code), each
    task named after its object. Raises one ``ImportError`` naming every object that is not available.

    :param objects: Object names (``"apple"``, ...; :data:`~sb3_brc.envs.shadowhand.SHADOWHAND_TRAIN_OBJECTS`)
    :param seed: Seed of the envs
    :param vec_env_kwargs: Passed to :class:`MultiTaskVecEnv`
    """
    check_objects(objects)
    return MultiTaskVecEnv([object_task(name) for name in objects], task_names=list(objects), seed=seed, **vec_env_kwargs)


def make_suite(name: str, seed: int | None = None, training: bool = True, **vec_env_kwargs) -> BaseMultiTaskVecEnv:
    """Build a :class:`MultiTaskVecEnv` for a suite (``mt10``, ``dmc-hard``, ...) or a single task name; Atari
    suites (``atari-5``, ...) give a :class:`DiscreteMultiTaskVecEnv` (for ``BRCDQN``).

    :param name: A key of :data:`SUITES`, ``"atari:<game>,<game>"`` (any Atari games, :func:`find_suite`), or any
        single task :func:`task_factory` accepts
    :param seed: Seed of the envs
    :param training: Atari suites only: ``True`` ends episodes at a lost life (training), ``False`` plays whole
        games (evaluation envs)
    :param vec_env_kwargs: Passed to the vector env (``vec_env_cls``, ...)
    """
    suite = find_suite(name)
    if suite is None:
        try:
            task_factory(name)
        except ValueError as error:
            close = difflib.get_close_matches(name, list(SUITES), n=3, cutoff=0.4)
            hint = f" Close suites: {close}." if close else ""
            raise ValueError(f"Unknown suite or task {name!r}.{hint} Suites: {sorted(SUITES)}.") from error
        return MultiTaskVecEnv([name], seed=seed, **vec_env_kwargs)
    if suite.atari:
        return make_atari_suite(list(map(str, suite.tasks)), training=training, seed=seed, **vec_env_kwargs)
    if suite.shadowhand_objects:
        return make_shadowhand_suite(list(map(str, suite.tasks)), seed=seed, **vec_env_kwargs)
    if suite.metaworld is not None and suite.goal_observable:
        # Every task gets the suite's seed as its constructor seed, as in the reference's ParallelEnv (make_env(name,
        # seed) for each task): it fixes each task's goal, so a seed reproduces the envs
        names = _metaworld_benchmark_tasks(suite.metaworld)
        tasks = [name + GOAL_OBSERVABLE for name in names]
        return MultiTaskVecEnv(tasks, task_names=names, seed=seed, **vec_env_kwargs)
    if suite.metaworld is not None:
        names = _metaworld_benchmark_tasks(suite.metaworld)
        vector_tasks = [functools.partial(_metaworld_vector_task, suite.metaworld, i, seed) for i in range(len(names))]
        return MultiTaskVecEnv(
            vector_tasks, task_names=names, task_kinds=["metaworld"] * len(names), seed=seed, **vec_env_kwargs
        )
    return MultiTaskVecEnv(suite.tasks, task_names=suite.task_names, seed=seed, **vec_env_kwargs)


def describe_suites() -> str:
    """Printable list of suites and their tasks."""
    lines = []
    for name, suite in SUITES.items():
        lines.append(f"{name:18s} {suite.description}")
        if suite.tasks:
            lines.append(" " * 19 + ", ".join(suite.task_names or map(str, suite.tasks)))
    lines.append("")
    lines.append("Single tasks: any Gymnasium id (HalfCheetah-v5, dm_control/walker-walk-v0), a DMC short name")
    lines.append("(walker-walk), a Meta-World task name (reach-v3; reach-v3-goal-observable: the BRC paper's")
    lines.append("goal-observable, 200-step version), or a ShadowHand id (HandManipulateEggRotate-v1; apple-rotate-v1 with")
    lines.append("dex_envs); MultiTaskVecEnv takes any list of them. Any Atari games as one suite (BRCDQN, preprocessed")
    lines.append("as the atari-* suites): atari:Boxing,Freeway (one game: atari:Boxing).")
    return "\n".join(lines)
