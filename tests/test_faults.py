"""A hanging env is a fault: subprocess envs with a step timeout end the run with an error naming the task and the
step, the stuck worker ended and the last checkpoint intact."""

import functools
import os
import pickle
import signal

import numpy as np
import pytest
from conftest import TINY_POLICY
from envs import FailEnv, HangEnv, TargetEnv
from stable_baselines3.common.vec_env import DummyVecEnv, SubprocVecEnv

from sb3_brc import BRCSAC, MultiTaskVecEnv, cli
from sb3_brc.envs.subproc import EnvStepTimeout, EnvWorkerError, TimeoutSubprocVecEnv
from sb3_brc.tools.checkpoint import CheckpointCallback, latest_checkpoint, load_checkpoint

TIMEOUT = 2.0  # seconds; far above a TargetEnv step, so only the hung task can exceed it
# Workers forked from the test process start at once; the default (forkserver) re-imports everything per worker,
# which takes seconds, and works the same once started (test_multitask.py::test_subproc_vec_env)
FORK = dict(start_method="fork")


def stuck_at(step: int, **kwargs) -> functools.partial:
    """A picklable factory of a task whose ``step``-th step never returns."""
    return functools.partial(HangEnv, hang_after=step - 1, **kwargs)


def test_a_hanging_step_ends_learn_naming_the_task_and_step_with_the_checkpoint_intact(tmp_path):
    tasks, names = [TargetEnv, stuck_at(26)], ["fine", "stuck"]
    env = MultiTaskVecEnv(tasks, task_names=names, step_timeout=TIMEOUT, vec_env_kwargs=FORK, seed=0)
    assert isinstance(env.venv, TimeoutSubprocVecEnv)
    model = BRCSAC("MlpPolicy", env, learning_starts=10, batch_size=8, buffer_size=200, policy_kwargs=TINY_POLICY, seed=0)
    root = str(tmp_path / "checkpoints")
    with pytest.raises(EnvStepTimeout, match=r"Task 'stuck' did not return from step 26 within 2 s") as error:
        model.learn(100, callback=CheckpointCallback(root, save_freq=10))
    assert (error.value.task, error.value.tasks, error.value.step, error.value.operation) == ("stuck", ("stuck",), 26, "step")
    # The stuck worker was terminated, the other one closed normally; the env is closed
    fine, stuck = env.venv.processes
    assert not fine.is_alive() and fine.exitcode == 0
    assert not stuck.is_alive() and stuck.exitcode == -signal.SIGTERM
    assert env.venv.closed
    env.close()  # closing again is a no-op
    # Checkpoints at 10 and 20 steps per task; nothing was written after the hang, and the last one resumes
    assert os.path.basename(latest_checkpoint(root)) == "step-40"
    resumed = load_checkpoint(root, MultiTaskVecEnv([TargetEnv, TargetEnv], task_names=["fine", "stuck"], seed=0))
    assert resumed.num_timesteps == 40
    resumed.learn(4, reset_num_timesteps=False)
    assert resumed.num_timesteps == 44


def test_a_hanging_reset_is_a_fault_too_and_close_is_bounded():
    fns = [TargetEnv, functools.partial(HangEnv, hang_after=0, hang_in="reset")]
    venv = TimeoutSubprocVecEnv(fns, step_timeout=TIMEOUT, env_names=["a", "b"], **FORK)
    with pytest.raises(EnvStepTimeout, match=r"Task 'b' did not return from reset \(after 0 steps\)") as error:
        venv.reset()
    assert error.value.operation == "reset" and not any(process.is_alive() for process in venv.processes)
    # A worker still busy when the env is closed is ended instead of waited for
    venv = TimeoutSubprocVecEnv([TargetEnv, stuck_at(2)], step_timeout=TIMEOUT, **FORK)
    venv.reset()
    venv.step(np.zeros((2, 2), np.float32))
    venv.step_async(np.zeros((2, 2), np.float32))
    venv.close()
    assert venv.closed and [process.exitcode for process in venv.processes] == [0, -signal.SIGTERM]


def test_step_timeout_errors():
    with pytest.raises(ValueError, match="step_timeout needs subprocess envs"):
        MultiTaskVecEnv([TargetEnv], vec_env_cls=DummyVecEnv, step_timeout=5)
    for bad in (0, -1.0, float("inf"), float("nan")):
        with pytest.raises(ValueError, match="positive, finite number of seconds"):
            MultiTaskVecEnv([TargetEnv], vec_env_cls=SubprocVecEnv, step_timeout=bad)
    with pytest.raises(TypeError, match="number of seconds"):
        MultiTaskVecEnv([TargetEnv], step_timeout="5")
    with pytest.raises(ValueError, match="2 envs but 1 env names"):
        TimeoutSubprocVecEnv([TargetEnv, TargetEnv], step_timeout=1, env_names=["a"])
    # The error crosses process boundaries (process pools, Ray) with its fields
    copy = pickle.loads(pickle.dumps(EnvStepTimeout(["a", "b"], 7, 1.5)))
    assert (copy.tasks, copy.step, copy.timeout, copy.operation, str(copy)) == (
        ("a", "b"),
        7,
        1.5,
        "step",
        str(EnvStepTimeout(["a", "b"], 7, 1.5)),
    )
    with pytest.raises(SystemExit):
        cli.parse_args(["train", "--tasks", "Pendulum-v1", "--out", "x", "--steps-per-task", "10", "--step-timeout", "0"])


def test_train_step_timeout_exits_3_naming_the_task_with_the_checkpoint_intact(tmp_path, monkeypatch, capsys):
    built = []

    def build_env(config, seed, training=True, step_timeout=None):
        built.append((training, step_timeout))
        if not training:
            return MultiTaskVecEnv([TargetEnv, TargetEnv], task_names=["fine", "stuck"], seed=seed)
        tasks, names = [TargetEnv, stuck_at(26)], ["fine", "stuck"]
        return MultiTaskVecEnv(tasks, task_names=names, step_timeout=step_timeout, vec_env_kwargs=FORK, seed=seed)

    monkeypatch.setattr(cli, "build_env", build_env)
    out = tmp_path / "run"
    argv = ["train", "--tasks", "TargetEnv", "--out", str(out), "--steps-per-task", "50", "--learning-starts-per-task", "5"]
    argv += ["--batch-size", "8", "--size", "tiny", "--eval-freq", "10", "--eval-episodes", "1", "--threads", "1"]
    argv += ["--no-progress", "--step-timeout", "2"]
    with pytest.raises(SystemExit) as exit_:
        cli.main(argv)
    assert exit_.value.code == cli.EXIT_ENV_FAULT == 3
    assert built == [(True, 2.0), (False, 2.0)]  # both envs get the timeout
    err = capsys.readouterr().err
    assert "Task 'stuck' did not return from step 26" in err and "add --resume" in err
    assert os.path.basename(latest_checkpoint(str(out / "checkpoints"))) == "step-40"


def test_ctrl_c_ends_train_with_status_130_and_the_resume_hint(tmp_path, monkeypatch, capsys):
    def interrupted_train(args):  # Ctrl-C after the run wrote checkpoints
        model = BRCSAC("MlpPolicy", MultiTaskVecEnv([TargetEnv], seed=0), learning_starts=10, batch_size=8,
                       policy_kwargs=TINY_POLICY, seed=0)  # fmt: skip
        model.learn(20, callback=CheckpointCallback(os.path.join(args.out, "checkpoints"), save_freq=10))
        raise KeyboardInterrupt

    monkeypatch.setattr(cli, "train", interrupted_train)
    with pytest.raises(SystemExit) as exit_:
        cli.main(["train", "--tasks", "TargetEnv", "--out", str(tmp_path / "run"), "--steps-per-task", "20"])
    assert exit_.value.code == cli.EXIT_INTERRUPTED == 130
    err = capsys.readouterr().err
    assert "sb3-brc: interrupted" in err and "step-20) is intact: add --resume to continue from it" in err


@pytest.mark.parametrize(
    ("fail_in", "says"),
    [("step", "RuntimeError: simulator exploded in step"), ("reset", "RuntimeError: simulator exploded in reset"),
     ("exit", "its process ended \\(exit code 7\\)")],
)  # fmt: skip
@pytest.mark.parametrize("step_timeout", [None, 30.0])
def test_a_task_failing_in_its_worker_process_is_named_with_its_traceback(fail_in, says, step_timeout):
    # SB3's worker dies on the exception and leaves the parent a bare EOFError; the error names the task instead
    broken = functools.partial(FailEnv, fail_after=25, fail_in=fail_in)
    kwargs = dict(vec_env_kwargs=FORK, step_timeout=step_timeout)
    if step_timeout is None:
        kwargs["vec_env_cls"] = SubprocVecEnv
    venv = MultiTaskVecEnv([TargetEnv, broken], task_names=["fine", "broken"], seed=0, **kwargs)
    venv.reset()
    with pytest.raises(EnvWorkerError, match=rf"Task 'broken' failed in its worker process:\n(.|\n)*{says}") as info:
        for _ in range(60):  # 20-step episodes: a reset after the 25th step comes at the 40th
            venv.step(np.zeros((2, 2), np.float32))
    assert info.value.task == "broken"
    assert pickle.loads(pickle.dumps(info.value)).details == info.value.details  # crosses process pools
    venv.close()


def test_train_exits_3_naming_a_task_that_raised_in_its_worker(tmp_path, monkeypatch, capsys):
    def build_env(config, seed, training=True, step_timeout=None):
        tasks = [TargetEnv, functools.partial(FailEnv, fail_after=26) if training else TargetEnv]
        return MultiTaskVecEnv(tasks, task_names=["fine", "broken"], vec_env_cls=SubprocVecEnv, vec_env_kwargs=FORK, seed=seed)

    monkeypatch.setattr(cli, "build_env", build_env)
    out = tmp_path / "run"
    argv = ["train", "--tasks", "TargetEnv", "--out", str(out), "--steps-per-task", "50", "--learning-starts-per-task", "5"]
    argv += ["--batch-size", "8", "--size", "tiny", "--eval-freq", "10", "--eval-episodes", "1", "--threads", "1"]
    with pytest.raises(SystemExit) as exit_:
        cli.main([*argv, "--no-progress"])
    assert exit_.value.code == cli.EXIT_ENV_FAULT
    err = capsys.readouterr().err
    assert "Task 'broken' failed in its worker process" in err and "simulator exploded in step" in err
    assert "step-40) is intact: add --resume" in err  # the checkpoint before the failing 26th step
