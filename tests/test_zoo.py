import os
import subprocess
import sys

import pytest

optuna = pytest.importorskip("optuna")
pytest.importorskip("rl_zoo3")

from sb3_brc.zoo import EnjoyBRCSAC, convert_brc_sac_params, register, sample_brc_sac_params  # noqa: E402

CONF = os.path.join(os.path.dirname(__file__), "..", "benchmarks", "hyperparams", "brc_sac.yml")
TINY = "policy_kwargs:dict(net_arch=dict(pi=[32], qf=[32, 32]), n_atoms=11)"


def zoo(*args, cwd):
    env = dict(os.environ, MUJOCO_GL="disable")
    return subprocess.run(
        [sys.executable, "-m", "sb3_brc.zoo", *args], cwd=cwd, env=env, check=True, capture_output=True, text=True
    )


def test_registration_and_search_space():
    import rl_zoo3
    import rl_zoo3.hyperparams_opt

    register()
    assert rl_zoo3.ALGOS["brc_sac"].__name__ == "BRCSAC"
    assert rl_zoo3.hyperparams_opt.HYPERPARAMS_SAMPLER["brc_sac"] is sample_brc_sac_params
    trial = optuna.trial.FixedTrial(
        dict(
            one_minus_gamma=0.01,
            learning_rate=3e-4,
            batch_size_pow=8,
            tau=0.005,
            gradient_steps=2,
            actor_width=256,
            critic_width=512,
            n_atoms=101,
        )
    )
    params = sample_brc_sac_params(trial, n_actions=1, n_envs=1, additional_args={})
    assert params == convert_brc_sac_params(trial.params)
    assert params["batch_size"] == 256 and params["gamma"] == pytest.approx(0.99)
    assert params["policy_kwargs"] == dict(net_arch=dict(pi=[256], qf=[512, 512]), n_atoms=101)


def test_zoo_train_then_enjoy_loads_without_a_full_buffer(tmp_path):
    zoo(
        "train",
        "--algo",
        "brc_sac",
        "--env",
        "Pendulum-v1",
        "-n",
        "300",
        "-conf",
        CONF,
        "--log-folder",
        str(tmp_path),
        "-params",
        "learning_starts:100",
        TINY,
        cwd=tmp_path,
    )
    model_path = tmp_path / "brc_sac" / "Pendulum-v1_1" / "Pendulum-v1.zip"
    assert model_path.exists()
    assert EnjoyBRCSAC.load(model_path).replay_buffer.buffer_size == 1
    out = zoo(
        "enjoy", "--algo", "brc_sac", "--env", "Pendulum-v1", "-f", str(tmp_path), "--no-render", "-n", "210", cwd=tmp_path
    )
    assert "Mean reward" in out.stdout


def test_zoo_rejects_unknown_command():
    from sb3_brc.zoo import main

    with pytest.raises(SystemExit, match="usage"):
        main(["plot"])
