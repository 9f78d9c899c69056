"""rl-zoo3 with BRC: ``python -m sb3_brc.zoo train|enjoy ...`` takes rl-zoo3's own arguments plus ``--algo brc_sac``.

rl-zoo3 has no plug-in hook for algorithms, so this launcher registers ``brc_sac`` in the zoo's algorithm
table and in its ``-optimize`` sampler and converter tables (the approach SBX documents), then runs the zoo::

    python -m sb3_brc.zoo train --algo brc_sac --env HalfCheetah-v5 -conf benchmarks/hyperparams/brc_sac.yml
    python -m sb3_brc.zoo enjoy --algo brc_sac --env HalfCheetah-v5 -f logs/ --no-render
    python -m sb3_brc.zoo train --algo brc_sac --env Pendulum-v1 -conf benchmarks/hyperparams/brc_sac.yml -optimize

The zoo builds ``n_envs`` copies of one env id, so multi-task suites run through ``sb3-brc train`` instead.

Distributed search: start the same ``-optimize`` command in several processes or on several machines with one
Optuna storage and study name; each worker runs its ``--n-trials`` trials (or the study stops at
``--max-total-trials``) in the shared study::

    python -m sb3_brc.zoo train --algo brc_sac --env Pendulum-v1 -conf benchmarks/hyperparams/brc_sac.yml -optimize \\
        --storage sqlite:///study.db --study-name brc-pendulum --n-trials 20

``--storage`` is an RDB URL (``sqlite:///study.db``, ``postgresql://user@host/db``) or a journal file path ending
in ``.log`` (Optuna's ``JournalFileBackend``). Beyond rl-zoo3, the launcher requires ``--study-name`` with a storage
(otherwise each worker would make its own study), creates the study before rl-zoo3 does, tolerating workers that
start at the same moment (on a new SQLite database rl-zoo3 alone fails with an ``IntegrityError`` there), records
the worker (``host:pid``) as each trial's ``worker`` user attribute, and takes ``--critic-widths`` /
``--actor-widths`` to set the widths searched (see ``docs/guide/hyperparameter_search.md``).
"""

import argparse
import functools
import os
import random
import socket
import sys
import time
from collections.abc import Sequence
from typing import Any, Literal

from sb3_brc.sac.sac import BRCSAC

#: The critic widths searched by default (BroNet blocks, depth fixed at 2)
CRITIC_WIDTHS = (256, 512, 1024)
#: The actor widths searched by default (one block)
ACTOR_WIDTHS = (128, 256)

# The direction of rl-zoo3's studies (it maximises the mean evaluation return)
STUDY_DIRECTION: Literal["maximize"] = "maximize"


def convert_brc_sac_params(sampled: dict[str, Any]) -> dict[str, Any]:
    """Trial parameters (as sampled by :func:`sample_brc_sac_params`) to BRCSAC keyword arguments."""
    return dict(
        gamma=1 - sampled["one_minus_gamma"],
        learning_rate=sampled["learning_rate"],
        batch_size=2 ** sampled["batch_size_pow"],
        tau=sampled["tau"],
        gradient_steps=sampled["gradient_steps"],
        policy_kwargs=dict(
            net_arch=dict(pi=[sampled["actor_width"]], qf=[sampled["critic_width"]] * 2), n_atoms=sampled["n_atoms"]
        ),
    )


def worker_id() -> str:
    """``host:pid`` of this process: which worker of a distributed search ran a trial."""
    return f"{socket.gethostname()}:{os.getpid()}"


def sample_brc_sac_params(
    trial: Any,
    n_actions: int,
    n_envs: int,
    additional_args: dict,
    critic_widths: Sequence[int] = CRITIC_WIDTHS,
    actor_widths: Sequence[int] = ACTOR_WIDTHS,
) -> dict[str, Any]:
    """Optuna search space for ``-optimize``: around the BRC defaults, widths as BroNet blocks (depth fixed at 2).
    Records :func:`worker_id` as the trial's ``worker`` user attribute.

    :param trial: The Optuna trial
    :param n_actions: Action size (rl-zoo3's sampler signature; unused)
    :param n_envs: Number of envs (unused)
    :param additional_args: rl-zoo3's extra sampler arguments (unused)
    :param critic_widths: Critic block widths to choose from
    :param actor_widths: Actor block widths to choose from
    """
    trial.set_user_attr("worker", worker_id())
    trial.suggest_float("one_minus_gamma", 0.001, 0.03, log=True)
    trial.suggest_float("learning_rate", 1e-4, 1e-3, log=True)
    trial.suggest_int("batch_size_pow", 7, 10)
    trial.suggest_float("tau", 0.001, 0.02, log=True)
    trial.suggest_int("gradient_steps", 1, 4)
    trial.suggest_categorical("actor_width", list(actor_widths))
    trial.suggest_categorical("critic_width", list(critic_widths))
    trial.suggest_categorical("n_atoms", [51, 101])
    return convert_brc_sac_params(trial.params)


class EnjoyBRCSAC(BRCSAC):
    """BRCSAC whose ``load`` allocates a one-transition replay buffer (rl-zoo3's enjoy only does that for
    the algorithms in its hard-coded off-policy list)."""

    @classmethod
    def load(cls, path: Any, env: Any = None, **kwargs: Any) -> BRCSAC:  # type: ignore[override]
        kwargs.setdefault("buffer_size", 1)
        return super().load(path, env, **kwargs)


def register(
    enjoy: bool = False, critic_widths: Sequence[int] | None = None, actor_widths: Sequence[int] | None = None
) -> None:
    """Make ``brc_sac`` known to rl-zoo3 (algorithm table, -optimize sampler and converter).

    :param enjoy: Register :class:`EnjoyBRCSAC` (loads without a full replay buffer)
    :param critic_widths: Critic widths for ``-optimize`` to search (default :data:`CRITIC_WIDTHS`)
    :param actor_widths: Actor widths for ``-optimize`` to search (default :data:`ACTOR_WIDTHS`)
    """
    try:
        import rl_zoo3
        import rl_zoo3.hyperparams_opt
    except ImportError as error:
        raise ImportError("The zoo launcher needs rl-zoo3: pip install 'sb3-brc[zoo]'") from error
    rl_zoo3.ALGOS["brc_sac"] = EnjoyBRCSAC if enjoy else BRCSAC  # the dict train, enjoy and exp_manager share
    sampler = sample_brc_sac_params
    if critic_widths is not None or actor_widths is not None:
        sampler = functools.partial(
            sample_brc_sac_params, critic_widths=critic_widths or CRITIC_WIDTHS, actor_widths=actor_widths or ACTOR_WIDTHS
        )
    rl_zoo3.hyperparams_opt.HYPERPARAMS_SAMPLER["brc_sac"] = sampler
    rl_zoo3.hyperparams_opt.HYPERPARAMS_CONVERTER["brc_sac"] = convert_brc_sac_params


def optuna_storage(storage: str) -> Any:
    """What rl-zoo3 makes of ``--storage``: a journal file (a path ending in ``.log``, parent folders created) or
    an RDB URL (``sqlite:///study.db``, ``postgresql://...``); anything else is an error."""
    import optuna
    from optuna.storages.journal import JournalFileBackend

    if storage.endswith(".log"):
        os.makedirs(os.path.dirname(os.path.abspath(storage)), exist_ok=True)
        return optuna.storages.JournalStorage(JournalFileBackend(storage))
    if "://" not in storage:
        raise ValueError(
            f"--storage {storage!r} is neither a database URL (sqlite:///study.db, postgresql://user@host/db) nor a "
            "journal file path ending in .log"
        )
    return storage


def create_shared_study(storage: str, study_name: str, attempts: int = 5) -> None:
    """Create the study ``study_name`` in ``storage`` unless it exists, as several workers may at the same moment.

    A new database gets its tables on first use, and workers starting together race to create them (rl-zoo3's own
    ``create_study`` then fails on SQLite with an ``IntegrityError``); a failed attempt is retried after a short
    random pause, by when the tables (or the study) exist.

    :param storage: ``--storage`` (see :func:`optuna_storage`)
    :param study_name: ``--study-name``
    :param attempts: Attempts before the error is raised
    """
    import optuna
    import sqlalchemy.exc

    for attempt in range(attempts):
        try:
            optuna.create_study(
                storage=optuna_storage(storage), study_name=study_name, direction=STUDY_DIRECTION, load_if_exists=True
            )
            return
        except (sqlalchemy.exc.SQLAlchemyError, optuna.exceptions.StorageInternalError):
            if attempt == attempts - 1:
                raise
            time.sleep(0.2 + random.random())


def _launcher_flags(argv: list[str]) -> tuple[argparse.Namespace, list[str]]:
    """The launcher's own flags (removed from ``argv``) and a look at rl-zoo3's ``-optimize`` / ``--storage`` /
    ``--study-name`` (left in ``argv`` for rl-zoo3)."""
    own = argparse.ArgumentParser(prog="python -m sb3_brc.zoo train", allow_abbrev=False, add_help=False)
    own.add_argument(
        "--critic-widths",
        type=int,
        nargs="+",
        metavar="WIDTH",
        help="critic widths -optimize searches (default: 256 512 1024)",
    )
    own.add_argument(
        "--actor-widths", type=int, nargs="+", metavar="WIDTH", help="actor widths -optimize searches (default: 128 256)"
    )
    flags, rest = own.parse_known_args(argv)
    for name in ("critic_widths", "actor_widths"):
        if getattr(flags, name) is not None and min(getattr(flags, name)) < 1:
            raise SystemExit(f"sb3_brc.zoo: error: --{name.replace('_', '-')} must be positive, got {getattr(flags, name)}")
    zoo = argparse.ArgumentParser(allow_abbrev=False, add_help=False)
    zoo.add_argument("-optimize", "--optimize-hyperparameters", action="store_true")
    zoo.add_argument("--storage")
    zoo.add_argument("--study-name")
    seen, _ = zoo.parse_known_args(rest)
    for name, value in vars(seen).items():
        setattr(flags, name, value)
    given = [f"--{name.replace('_', '-')}" for name in ("critic_widths", "actor_widths") if getattr(flags, name) is not None]
    if given and not flags.optimize_hyperparameters:
        raise SystemExit(
            f"sb3_brc.zoo: error: {' and '.join(given)} set the widths -optimize searches; add -optimize, or set the "
            "width of one run in the hyperparameter file's net_arch"
        )
    return flags, rest


def _prepare_search(flags: argparse.Namespace) -> None:
    """Check the storage of a shared ``-optimize`` and create its study once (see :func:`create_shared_study`)."""
    if not (flags.optimize_hyperparameters and flags.storage):
        return
    if not flags.study_name:
        raise SystemExit(
            "sb3_brc.zoo: error: -optimize with --storage needs --study-name NAME, the same for every worker "
            "(without it each worker creates a study of its own)"
        )
    try:
        create_shared_study(flags.storage, flags.study_name)
    except ValueError as error:
        raise SystemExit(f"sb3_brc.zoo: error: {error}") from error


def main(argv: list[str] | None = None) -> None:
    """Entry point of ``python -m sb3_brc.zoo train|enjoy``: register ``brc_sac``, then run rl-zoo3."""
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] not in ("train", "enjoy"):
        raise SystemExit("usage: python -m sb3_brc.zoo {train,enjoy} [rl-zoo3 arguments]")
    command, rest = argv[0], argv[1:]
    if command == "train":
        flags, rest = _launcher_flags(rest)
        _prepare_search(flags)
        register(critic_widths=flags.critic_widths, actor_widths=flags.actor_widths)
    else:
        register(enjoy=True)
    sys.argv = [f"sb3_brc.zoo {command}", *rest]
    if command == "train":
        from rl_zoo3.train import train

        train()
    else:
        from rl_zoo3.enjoy import enjoy

        enjoy()


if __name__ == "__main__":
    main()
