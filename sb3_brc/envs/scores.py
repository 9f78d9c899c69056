"""Normalised task scores as BRC reports them: DMC return / 1000, Meta-World and ShadowHand success rate, Atari
human-normalised score."""

# (random, human) episode returns: the standard table (Mnih et al. 2015 / Badia et al. 2020), as used for the
# human-normalised score (R - random) / (human - random). The Atari-100k games plus a few common ones.
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


def human_normalized_score(game: str, episode_return: float) -> float:
    """``(R - random) / (human - random)`` of a game in :data:`ATARI_SCORES` (1.0 = human level)."""
    if game not in ATARI_SCORES:
        raise ValueError(f"No random/human scores for {game!r}; known games: {sorted(ATARI_SCORES)}")
    random, human = ATARI_SCORES[game]
    return (episode_return - random) / (human - random)


def normalized_score(kind: str, name: str, mean_return: float, success_rate: float | None) -> float | None:
    """The score of a task of ``kind`` (``None`` where no scale is defined, e.g. Gymnasium MuJoCo tasks).

    :param kind: ``"dmc"``, ``"metaworld"``, ``"shadowhand"``, ``"atari"``, ``"gym"`` or ``"custom"``
    :param name: Task name (the game's name for Atari)
    :param mean_return: Mean episode return
    :param success_rate: Success rate, ``None`` if the task reports none
    """
    if kind == "dmc":
        return mean_return / 1000.0
    if kind in ("metaworld", "shadowhand"):
        return success_rate
    if kind == "atari" and name in ATARI_SCORES:
        return human_normalized_score(name, mean_return)
    return None
