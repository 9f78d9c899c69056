import os
import socket
import subprocess
import sys
from collections import Counter

import pytest

optuna = pytest.importorskip("optuna")
pytest.importorskip("rl_zoo3")

from sb3_brc.zoo import (  # noqa: E402
    EnjoyBRCSAC,
    convert_brc_sac_params,
    create_shared_study,
    main,
    register,
    sample_brc_sac_params,
    worker_id,
)

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
    assert trial.user_attrs["worker"] == worker_id() == f"{socket.gethostname()}:{os.getpid()}"
    # --critic-widths / --actor-widths: the sampler searches those widths
    register(critic_widths=[64, 128])
    sampler = rl_zoo3.hyperparams_opt.HYPERPARAMS_SAMPLER["brc_sac"]
    assert sampler.func is sample_brc_sac_params
    assert sampler.keywords == dict(critic_widths=[64, 128], actor_widths=(128, 256))
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    widths = {sampler(study.ask(), 1, 1, {})["policy_kwargs"]["net_arch"]["qf"][0] for _ in range(12)}
    assert widths == {64, 128}
    register()


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


def test_shared_search_storage_checks(tmp_path):
    with pytest.raises(SystemExit, match="needs --study-name"):
        main(["train", "--algo", "brc_sac", "--env", "Pendulum-v1", "-optimize", "--storage", "sqlite:///x.db"])
    with pytest.raises(SystemExit, match="neither a database URL"):
        main(["train", "--algo", "brc_sac", "-optimize", "--storage", "study.db", "--study-name", "s"])
    with pytest.raises(SystemExit, match="--critic-widths must be positive"):
        main(["train", "--algo", "brc_sac", "--critic-widths", "0", "64"])
    with pytest.raises(SystemExit, match="--actor-widths set the widths -optimize searches; add -optimize"):
        main(["train", "--algo", "brc_sac", "--env", "Pendulum-v1", "--actor-widths", "64"])  # else silently unused
    # A journal file (.log, its folder created) and a database; creating an existing study again loads it
    for storage in (str(tmp_path / "journal" / "study.log"), f"sqlite:///{tmp_path / 'study.db'}"):
        create_shared_study(storage, "s")
        create_shared_study(storage, "s")
        assert optuna.study.get_all_study_names(storage=_storage(storage)) == ["s"]


def _storage(storage):
    if storage.endswith(".log"):
        return optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(storage))
    return storage


def test_two_workers_optimise_one_study(tmp_path):
    storage = f"sqlite:///{tmp_path / 'study.db'}"  # a new database: both workers create it at the same moment
    search = ["-optimize", "--storage", storage, "--study-name", "shared", "--n-trials", "2", "--sampler", "random"]
    search += ["--pruner", "none", "--no-optim-plots", "--n-evaluations", "1", "--eval-episodes", "1", "--verbose", "0"]
    tiny = ["-n", "200", "-params", "learning_starts:190", "--critic-widths", "32", "--actor-widths", "16"]
    command = [sys.executable, "-m", "sb3_brc.zoo", "train", "--algo", "brc_sac", "--env", "Pendulum-v1", "-conf", CONF]
    env = dict(os.environ, MUJOCO_GL="disable")
    workers = [
        subprocess.Popen(
            [*command, *search, *tiny, "--seed", str(seed), "--log-folder", str(tmp_path / f"logs{seed}")],
            cwd=tmp_path,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for seed in (1, 2)
    ]
    try:
        outputs = [worker.communicate(timeout=600)[0] for worker in workers]
    finally:
        for worker in workers:
            if worker.poll() is None:
                worker.kill()
    assert [worker.returncode for worker in workers] == [0, 0], outputs
    trials = optuna.load_study(study_name="shared", storage=storage).get_trials()
    assert sorted(trial.number for trial in trials) == [0, 1, 2, 3]
    assert all(trial.state == optuna.trial.TrialState.COMPLETE for trial in trials)
    # Each worker ran its two trials in the one study
    assert Counter(trial.user_attrs["worker"] for trial in trials) == {
        f"{socket.gethostname()}:{worker.pid}": 2 for worker in workers
    }
    assert {trial.params["critic_width"] for trial in trials} == {32}
