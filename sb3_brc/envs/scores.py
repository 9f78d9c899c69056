"""Normalised task scores as BRC reports them: DMC return / 1000, Meta-World and ShadowHand success rate, Atari
human-normalised score, HumanoidBench success-normalised score."""

import re

#: (random, human) episode returns: the standard table (Mnih et al. 2015 / Badia et al. 2020), as used for the
#: human-normalised score (R - random) / (human - random). The Atari-100k games plus a few common ones.
#: :meta hide-value:
ATARI_SCORES: dict[str, tuple[float, float]] = {
    "Alien": (227.8, 7127.7),
    "Amidar": (5.8, 1719.5),
    "Assault": (222.4, 742.0),
    "Asterix": (210.0, 8503.3),
    "BankHeist": (14.2, 753.1),
    "BattleZone": (2360.0, 37187.5),
    "BeamRider": (363.9, 16926.5),
    "Boxing": (0.1, 12.1),
    "Breakout": (1.7, 30.5),
    "ChopperCommand": (811.0, 7387.8),
    "CrazyClimber": (10780.5, 35829.4),
    "DemonAttack": (152.1, 1971.0),
    "Enduro": (0.0, 860.5),
    "Freeway": (0.0, 29.6),
    "Frostbite": (65.2, 4334.7),
    "Gopher": (257.6, 2412.5),
    "Hero": (1027.0, 30826.4),
    "Jamesbond": (29.0, 302.8),
    "Kangaroo": (52.0, 3035.0),
    "Krull": (1598.0, 2665.5),
    "KungFuMaster": (258.5, 22736.3),
    "MsPacman": (307.3, 6951.6),
    "Pong": (-20.7, 14.6),
    "PrivateEye": (24.9, 69571.3),
    "Qbert": (163.9, 13455.0),
    "RoadRunner": (11.5, 7845.0),
    "Seaquest": (68.4, 42054.7),
    "SpaceInvaders": (148.0, 1668.7),
    "UpNDown": (533.4, 11693.2),
}


def atari_game(game: str) -> str:
    """Canonical game name, the one :data:`ATARI_SCORES` lists it under (``"pong"``, ``"ALE/Pong-v5"`` and ``"Pong"``
    all give ``"Pong"``); a game not in the table keeps its name without the ``ALE/`` prefix and the version."""
    name = re.sub(r"-v\d+$", "", game.removeprefix("ALE/"))
    by_lower = {known.lower(): known for known in ATARI_SCORES}
    return by_lower.get(name.lower(), name)


def human_normalized_score(game: str, episode_return: float) -> float:
    """``(R - random) / (human - random)`` of a game in :data:`ATARI_SCORES` (1.0 = human level)."""
    if game not in ATARI_SCORES:
        raise ValueError(f"No random/human scores for {game!r}; known games: {sorted(ATARI_SCORES)}")
    random, human = ATARI_SCORES[game]
    return (episode_return - random) / (human - random)


#: (random, success) episode returns of HumanoidBench tasks, the table of the reference's
#: `results/score_normalization.py`: score (R - random) / (success - random), 1.0 = the task's success threshold
#: :meta hide-value:
HUMANOIDBENCH_SCORES: dict[str, tuple[float, float]] = {
    "h1-walk-v0": (2.377, 700.0),
    "h1-stand-v0": (10.545, 800.0),
    "h1-run-v0": (2.02, 700.0),
    "h1-stair-v0": (3.112, 700.0),
    "h1-crawl-v0": (272.658, 700.0),
    "h1-pole-v0": (20.09, 700.0),
    "h1-slide-v0": (3.191, 700.0),
    "h1-hurdle-v0": (2.214, 700.0),
    "h1-maze-v0": (106.441, 1200.0),
    "h1hand-balance_hard-v0": (10.032, 800.0),
    "h1hand-balance_simple-v0": (10.17, 800.0),
    "h1hand-basketball-v0": (8.979, 1200.0),
    "h1hand-bookshelf_hard-v0": (14.848, 2000.0),
    "h1hand-bookshelf_simple-v0": (16.777, 2000.0),
    "h1hand-cabinet-v0": (37.733, 2500.0),
    "h1hand-crawl-v0": (278.868, 800.0),
    "h1hand-cube-v0": (4.787, 370.0),
    "h1hand-door-v0": (2.771, 600.0),
    "h1hand-hurdle-v0": (2.371, 700.0),
    "h1hand-insert_normal-v0": (1.673, 350.0),
    "h1hand-insert_small-v0": (1.653, 350.0),
    "h1hand-maze-v0": (106.233, 1200.0),
    "h1hand-pole-v0": (19.721, 700.0),
    "h1hand-powerlift-v0": (17.638, 800.0),
    "h1hand-push-v0": (-526.8, 700.0),
    "h1hand-reach-v0": (-50.024, 12000.0),
    "h1hand-room-v0": (3.018, 400.0),
    "h1hand-run-v0": (1.927, 700.0),
    "h1hand-sit_hard-v0": (2.477, 750.0),
    "h1hand-sit_simple-v0": (10.768, 750.0),
    "h1hand-slide-v0": (3.142, 700.0),
    "h1hand-spoon-v0": (4.661, 650.0),
    "h1hand-stair-v0": (3.161, 700.0),
    "h1hand-stand-v0": (11.973, 800.0),
    "h1hand-truck-v0": (562.419, 3000.0),
    "h1hand-walk-v0": (2.505, 700.0),
    "h1hand-window-v0": (2.713, 650.0),
}


def humanoidbench_normalized_score(task: str, episode_return: float) -> float:
    """``(R - random) / (success - random)`` of a task in :data:`HUMANOIDBENCH_SCORES` (1.0 = success threshold)."""
    if task not in HUMANOIDBENCH_SCORES:
        raise ValueError(f"No random/success returns for {task!r}; known tasks: {sorted(HUMANOIDBENCH_SCORES)}")
    random, success = HUMANOIDBENCH_SCORES[task]
    return (episode_return - random) / (success - random)


#: What :func:`normalized_score` gives, for reports
SCORES_DESCRIPTION = (
    "DMC return / 1000, Meta-World and ShadowHand success rate, Atari human-normalised, HumanoidBench "
    "(return - random) / (success - random)"
)


def normalized_score(kind: str, name: str, mean_return: float, success_rate: float | None) -> float | None:
    """The score of a task of ``kind`` (``None`` where no scale is defined, e.g. Gymnasium MuJoCo tasks).

    :param kind: ``"dmc"``, ``"metaworld"``, ``"shadowhand"``, ``"atari"``, ``"humanoidbench"``, ``"gym"`` or ``"custom"``
    :param name: Task name (the game's name for Atari, the id for HumanoidBench)
    :param mean_return: Mean episode return
    :param success_rate: Success rate, ``None`` if the task reports none
    """
    if kind == "dmc":
        return mean_return / 1000.0
    if kind in ("metaworld", "shadowhand"):
        return success_rate
    if kind == "atari" and name in ATARI_SCORES:
        return human_normalized_score(name, mean_return)
    if kind == "humanoidbench" and name in HUMANOIDBENCH_SCORES:
        return humanoidbench_normalized_score(name, mean_return)
    return None
