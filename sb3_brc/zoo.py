"""rl-zoo3 with BRC: ``python -m sb3_brc.zoo train|enjoy ...`` takes rl-zoo3's own arguments plus ``--algo brc_sac``.

rl-zoo3 has no plug-in hook for algorithms, so this launcher registers ``brc_sac`` in the zoo's algorithm
table and in its ``-optimize`` sampler and converter tables (the approach SBX documents), then runs the zoo::

    python -m sb3_brc.zoo train --algo brc_sac --env HalfCheetah-v5 -conf benchmarks/hyperparams/brc_sac.yml
    python -m sb3_brc.zoo enjoy --algo brc_sac --env HalfCheetah-v5 -f logs/ --no-render
    python -m sb3_brc.zoo train --algo brc_sac --env Pendulum-v1 -conf benchmarks/hyperparams/brc_sac.yml -optimize

The zoo builds ``n_envs`` copies of one env id, so multi-task suites run through ``sb3-brc train`` instead.
"""

import sys
from typing import Any

from sb3_brc.sac.sac import BRCSAC


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


def sample_brc_sac_params(trial: Any, n_actions: int, n_envs: int, additional_args: dict) -> dict[str, Any]:
    """Optuna search space for ``-optimize``: around the BRC defaults, widths as BroNet blocks (depth fixed at 2)."""
    trial.suggest_float("one_minus_gamma", 0.001, 0.03, log=True)
    trial.suggest_float("learning_rate", 1e-4, 1e-3, log=True)
    trial.suggest_int("batch_size_pow", 7, 10)
    trial.suggest_float("tau", 0.001, 0.02, log=True)
    trial.suggest_int("gradient_steps", 1, 4)
    trial.suggest_categorical("actor_width", [128, 256])
    trial.suggest_categorical("critic_width", [256, 512, 1024])
    trial.suggest_categorical("n_atoms", [51, 101])
    return convert_brc_sac_params(trial.params)


class EnjoyBRCSAC(BRCSAC):
    """BRCSAC whose ``load`` allocates a one-transition replay buffer (rl-zoo3's enjoy only does that for
    the algorithms in its hard-coded off-policy list)."""

    @classmethod
    def load(cls, path: Any, env: Any = None, **kwargs: Any) -> BRCSAC:  # type: ignore[override]
        kwargs.setdefault("buffer_size", 1)
        return super().load(path, env, **kwargs)


def register(enjoy: bool = False) -> None:
    """Make ``brc_sac`` known to rl-zoo3 (algorithm table, -optimize sampler and converter)."""
    try:
        import rl_zoo3
        import rl_zoo3.hyperparams_opt
    except ImportError as error:
        raise ImportError("The zoo launcher needs rl-zoo3: pip install 'sb3-brc[zoo]'") from error
    rl_zoo3.ALGOS["brc_sac"] = EnjoyBRCSAC if enjoy else BRCSAC  # the dict train, enjoy and exp_manager share
    rl_zoo3.hyperparams_opt.HYPERPARAMS_SAMPLER["brc_sac"] = sample_brc_sac_params
    rl_zoo3.hyperparams_opt.HYPERPARAMS_CONVERTER["brc_sac"] = convert_brc_sac_params


def main(argv: list[str] | None = None) -> None:
    """Entry point of ``python -m sb3_brc.zoo train|enjoy``: register ``brc_sac``, then run rl-zoo3."""
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] not in ("train", "enjoy"):
        raise SystemExit("usage: python -m sb3_brc.zoo {train,enjoy} [rl-zoo3 arguments]")
    command, rest = argv[0], argv[1:]
    register(enjoy=command == "enjoy")
    sys.argv = [f"sb3_brc.zoo {command}", *rest]
    if command == "train":
        from rl_zoo3.train import train

        train()
    else:
        from rl_zoo3.enjoy import enjoy

        enjoy()


if __name__ == "__main__":
    main()
