"""Bad input gets a clear error: the right exception type, naming the problem and the fix."""

import argparse
import importlib
import json
import os
import zipfile

import gymnasium as gym
import numpy as np
import pytest
import torch as th
from conftest import TINY_DQN, TINY_POLICY
from envs import TargetEnv
from stable_baselines3 import SAC
from stable_baselines3.common.vec_env import VecNormalize

from sb3_brc import (
    BRCDQN,
    BRCSAC,
    DiscreteMultiTaskVecEnv,
    MultiTaskVecEnv,
    ReturnNormalization,
    ReturnNormalizer,
    TaskEmbedding,
    as_task_of,
    cli,
    make_suite,
)
from sb3_brc.bench import BenchSettings, run_benchmark
from sb3_brc.common.torch_layers import BroNet
from sb3_brc.tools.checkpoint import CheckpointCallback, load_checkpoint, save_checkpoint
from sb3_brc.tools.evaluation import MultiTaskEvalCallback, evaluate_tasks
from sb3_brc.tools.export import export_policy, load_exported_policy


def tiny(env=None, **kwargs):
    kwargs = dict(learning_starts=30, batch_size=16, policy_kwargs=TINY_POLICY, seed=0) | kwargs
    return BRCSAC("MlpPolicy", env if env is not None else TargetEnv(), **kwargs)


def two_tasks(names=("a", "b")):
    return MultiTaskVecEnv(
        [lambda: TargetEnv(obs_dim=3, act_dim=2), lambda: TargetEnv(obs_dim=5, act_dim=1)], task_names=list(names)
    )


def unbounded_env():
    env = TargetEnv()
    env.action_space = gym.spaces.Box(-np.inf, np.inf, (2,), np.float32)
    return env


def tuple_obs_env():
    env = TargetEnv()
    env.observation_space = gym.spaces.Tuple([gym.spaces.Box(-1, 1, (2,))])
    return env


def predict_with_bad_task_id():
    env = two_tasks()
    obs = env.reset()
    obs["task_id"][0] = 7
    tiny(env).predict(obs)


def predict_with_float_task_ids(kind):
    """predict() on observations whose task ids are 0.7 and 1.2 (the decoder would truncate them to 0 and 1)."""
    env = two_tasks() if kind != "brcdqn" else DiscreteMultiTaskVecEnv(["CartPole-v1", "Acrobot-v1"])
    obs = env.reset()
    obs["task_id"] = np.array([[0.7], [1.2]])
    if kind == "brcsac":
        tiny(env).predict(obs)
    elif kind == "brcdqn":
        BRCDQN("MlpPolicy", env, learning_starts=0, policy_kwargs=TINY_DQN).predict(obs)
    else:
        export_policy(tiny(env), str(kind))
        load_exported_policy(str(kind)).predict(obs)


class ResizingEnv(TargetEnv):
    """:class:`TargetEnv` whose observation changes size (``by`` entries) from its 5th step on."""

    def __init__(self, by: int):
        super().__init__(obs_dim=3, act_dim=1)
        self.by = by

    def step(self, action):
        obs, *rest = super().step(action)
        return (np.resize(obs, len(obs) + self.by) if self.t >= 5 else obs), *rest


def step_resizing_task(by: int):
    """A multi-task env (the other task is larger, so a grown observation would still fit the padding) stepped past
    the step where one task's observation changes size."""
    env = MultiTaskVecEnv([lambda: ResizingEnv(by), lambda: TargetEnv(obs_dim=6, act_dim=1)], task_names=["resizing", "big"])
    env.reset()
    for _ in range(6):
        env.step(env.sample_actions())


def resume_with_damaged(tmp_path, file_name: str):
    """load_checkpoint on a checkpoint whose ``file_name`` was cut in half."""
    model = tiny()
    model.learn(40)
    path = save_checkpoint(model, str(tmp_path))
    damaged = os.path.join(path, file_name)
    with open(damaged, "rb") as file:
        data = file.read()
    with open(damaged, "wb") as file:
        file.write(data[: len(data) // 2])
    load_checkpoint(str(tmp_path), TargetEnv())


class OddRewardEnv(TargetEnv):
    """:class:`TargetEnv` whose reward is ``reward`` instead of a number."""

    def __init__(self, reward):
        super().__init__()
        self.reward = reward

    def step(self, action):
        obs, _, terminated, truncated, info = super().step(action)
        return obs, self.reward, terminated, truncated, info


def step_odd_reward(reward):
    env = MultiTaskVecEnv([lambda: OddRewardEnv(reward), TargetEnv], task_names=["odd", "fine"])
    env.reset()
    env.step(env.sample_actions())


def fixed_action_env():
    env = TargetEnv()
    env.action_space = gym.spaces.Box(np.array([-1.0, 0.5]), np.array([1.0, 0.5]), dtype=np.float32)
    return env


def saved(tmp_path, model=None):
    (model or tiny()).save(tmp_path / "good.zip")
    return tmp_path / "good.zip"


def truncated_zip(tmp_path):
    data = saved(tmp_path).read_bytes()
    (tmp_path / "bad.zip").write_bytes(data[: len(data) // 2])
    BRCSAC.load(tmp_path / "bad.zip")


def text_file_as_zip(tmp_path):
    (tmp_path / "notes.zip").write_text("not a model")
    BRCSAC.load(tmp_path / "notes")


def sac_zip(tmp_path):
    SAC("MlpPolicy", TargetEnv(), policy_kwargs=dict(net_arch=[8])).save(tmp_path / "sac.zip")
    BRCSAC.load(tmp_path / "sac.zip")


def save_from_sb3_brc_0_1(tmp_path):
    # A save as sb3-brc 0.1 wrote it: no version recorded, the policy class in the old ``sb3_brc.brc`` module
    source = zipfile.ZipFile(saved(tmp_path))
    data = json.loads(source.read("data"))
    del data["sb3_brc_version"]
    data["policy_class"]["__module__"] = "sb3_brc.brc.policies"
    with zipfile.ZipFile(tmp_path / "old.zip", "w") as old:
        for name in source.namelist():
            old.writestr(name, json.dumps(data) if name == "data" else source.read(name))
    BRCSAC.load(tmp_path / "old.zip")


def nan_from_env(bad):
    tiny(TargetEnv(bad_step=40, bad=bad)).learn(60)


def eval_a_bench_run(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps(dict(algo="sac", task_set="Pendulum-v1", status="running")))
    cli.evaluate(argparse.Namespace(run=str(tmp_path), seed=0, episodes=1, device="cpu"))


def missing_metaworld(monkeypatch):
    real = importlib.import_module

    def no_metaworld(name, *args):
        if name == "metaworld":
            raise ImportError("No module named 'metaworld'")
        return real(name, *args)

    monkeypatch.setattr(importlib, "import_module", no_metaworld)
    make_suite("mt10")


def predict_on_a_plain_observation(kind, tmp_path):
    if kind == "brcdqn":
        model = BRCDQN("MlpPolicy", DiscreteMultiTaskVecEnv(["CartPole-v1", "Acrobot-v1"]), policy_kwargs=TINY_DQN)
        observation = np.zeros(4, np.float32)
    else:
        model = tiny(two_tasks())
        observation = np.zeros(3, np.float32)
        if kind == "exported":
            export_policy(model, str(tmp_path))
            model = load_exported_policy(str(tmp_path))
    model.predict(observation)


# id: (action, exception type, the problem, the fix)
CASES = {
    "discrete-actions": (
        lambda tp, mp: BRCSAC("MlpPolicy", "CartPole-v1"),
        TypeError,
        "continuous Box action space",
        "DQN-style|wrap the env",
    ),
    "unbounded-actions": (
        lambda tp, mp: BRCSAC("MlpPolicy", unbounded_env()),
        ValueError,
        "bounded Box action space",
        "ClipAction",
    ),
    "tuple-observations": (
        lambda tp, mp: BRCSAC("MlpPolicy", tuple_obs_env()),
        TypeError,
        "observation space",
        "Box \\(MlpPolicy\\) or Dict",
    ),
    "n_atoms-1": (lambda tp, mp: tiny(policy_kwargs=dict(n_atoms=1)), ValueError, "n_atoms must be", "integer >= 2"),
    "n_atoms-float": (lambda tp, mp: tiny(policy_kwargs=dict(n_atoms=10.5)), ValueError, "n_atoms", "integer >= 2"),
    "v_min>=v_max": (
        lambda tp, mp: tiny(policy_kwargs=dict(v_min=5.0, v_max=5.0)),
        ValueError,
        "v_min=5.0, v_max=5.0",
        "v_min < v_max",
    ),
    "gSDE": (lambda tp, mp: tiny(use_sde=True), ValueError, "gSDE", "samples? its policy|sampling"),
    "shared-extractor": (
        lambda tp, mp: tiny(policy_kwargs=dict(share_features_extractor=True, **TINY_POLICY)),
        ValueError,
        "does not share",
        "share_features_extractor=False",
    ),
    "uneven-blocks": (lambda tp, mp: BroNet(4, [64, 32]), ValueError, "\\[64, 32\\]", "equal widths"),
    "embedding-norm": (lambda tp, mp: TaskEmbedding(3, 8, norm="max"), ValueError, "'max'", "'l1' or 'l2'"),
    "tau": (lambda tp, mp: tiny(tau=1.5), ValueError, "tau", "\\[0, 1\\]"),
    "gamma": (lambda tp, mp: tiny(gamma=1.0), ValueError, "gamma", "\\[0, 1\\)"),
    "batch_size": (lambda tp, mp: tiny(batch_size=0), ValueError, "batch_size", "positive integer"),
    "learning_rate": (lambda tp, mp: tiny(learning_rate=-1.0), ValueError, "learning_rate", "> 0"),
    "train_freq-0": (lambda tp, mp: tiny(train_freq=0), ValueError, "train_freq", "positive number of steps or episodes"),
    "train_freq-episodes-0": (
        lambda tp, mp: tiny(train_freq=(0, "episode")),
        ValueError,
        "train_freq",
        "positive number of steps or episodes",
    ),
    "dqn-train_freq-0": (
        lambda tp, mp: BRCDQN("MlpPolicy", "CartPole-v1", train_freq=0),
        ValueError,
        "Invalid BRCDQN hyperparameters: train_freq",
        "positive number",
    ),
    "n_steps-0": (lambda tp, mp: tiny(n_steps=0), ValueError, "n_steps", "integer >= 1"),
    "negative-ent_coef": (lambda tp, mp: tiny(ent_coef=-0.1), ValueError, "ent_coef must be >= 0", "'auto'"),
    "target_update_interval": (
        lambda tp, mp: tiny(target_update_interval=0),
        ValueError,
        "target_update_interval",
        "integer >= 1",
    ),
    "entropy-momentum": (
        lambda tp, mp: ReturnNormalization(entropy_term="per_task", entropy_momentum=1.5),
        ValueError,
        "entropy_momentum",
        "in \\(0, 1\\]",
    ),
    "augment-vectors": (
        lambda tp, mp: BRCDQN("MlpPolicy", "CartPole-v1", augment=True),
        ValueError,
        "augment=True shifts image observations",
        "augment=None",
    ),
    "eval-freq": (
        lambda tp, mp: MultiTaskEvalCallback(two_tasks(), eval_freq=0),
        ValueError,
        "eval_freq and n_eval_episodes",
        ">= 1, got 0",
    ),
    "dqn-hyperparameters": (
        lambda tp, mp: BRCDQN("MlpPolicy", "CartPole-v1", tau=2.0),
        ValueError,
        "Invalid BRCDQN hyperparameters: tau",
        "in \\[0, 1\\]",
    ),
    "export-brcdqn": (
        lambda tp, mp: export_policy(BRCDQN("MlpPolicy", "CartPole-v1"), str(tp)),
        TypeError,
        "export_policy exports BRCSAC policies, got a BRCDQN",
        "share its .zip",
    ),
    "bench-reference": (
        lambda tp, mp: run_benchmark(str(tp), ["sac"], ["Pendulum-v1"], [0], BenchSettings(), reference="sacc"),
        ValueError,
        "--reference 'sacc' is not one of",
        "algorithms \\['sac'\\]",
    ),
    "eval-not-a-train-run": (
        lambda tp, mp: eval_a_bench_run(tp),
        ValueError,
        "is not a finished `sb3-brc train` run",
        "checkpoints",
    ),
    "checkpoint-freq": (
        lambda tp, mp: CheckpointCallback(str(tp), save_freq=0),
        ValueError,
        "save_freq counts env steps per task",
        ">= 1, got 0",
    ),
    "checkpoint-keep": (
        lambda tp, mp: save_checkpoint(tiny(), str(tp), keep=0),
        ValueError,
        "keep counts the checkpoints",
        ">= 1, got 0",
    ),
    "nan-reward": (lambda tp, mp: nan_from_env("reward"), ValueError, "Non-finite reward", "Fix the environment"),
    "inf-observation": (
        lambda tp, mp: nan_from_env("obs"),
        ValueError,
        "Non-finite (terminal )?observation",
        "Fix the environment",
    ),
    "unknown-task": (
        lambda tp, mp: MultiTaskVecEnv(["HalfCheeta-v5"]),
        ValueError,
        "Unknown task 'HalfCheeta-v5'",
        "Did you mean 'HalfCheetah-v5'.*sb3-brc suites",
    ),
    "unknown-suite": (lambda tp, mp: make_suite("mt11"), ValueError, "Unknown suite or task 'mt11'", "Suites:"),
    "duplicate-tasks": (lambda tp, mp: MultiTaskVecEnv(["Pendulum-v1", "Pendulum-v1"]), ValueError, "unique", "task_names="),
    "discrete-task": (
        lambda tp, mp: MultiTaskVecEnv(["CartPole-v1", "Pendulum-v1"]),
        TypeError,
        "CartPole-v1",
        "needs Box actions",
    ),
    "task-id-out-of-range": (
        lambda tp, mp: two_tasks().layout.name_of(2),
        ValueError,
        "Task id 2 is out of range",
        "tasks 0..1",
    ),
    "predict-bad-task-id": (
        lambda tp, mp: predict_with_bad_task_id(),
        ValueError,
        "Task ids \\[7\\] are outside \\[0, 2\\)",
        "multi-task env the model was trained on",
    ),
    "num_tasks-mismatch": (
        lambda tp, mp: tiny(two_tasks(), policy_kwargs=dict(num_tasks=3, **TINY_POLICY)),
        ValueError,
        "num_tasks=3",
        "env has 2 tasks",
    ),
    "normaliser-task-id": (
        lambda tp, mp: ReturnNormalizer(2).update(np.zeros(1), [False], [False], [5]),
        ValueError,
        "Task id 5",
        "outside \\[0, 2\\)",
    ),
    "truncated-zip": (lambda tp, mp: truncated_zip(tp), ValueError, "truncated or corrupted", "earlier checkpoint"),
    "not-a-zip": (lambda tp, mp: text_file_as_zip(tp), ValueError, "not a readable zip", "intact save"),
    "sac-zip": (lambda tp, mp: sac_zip(tp), ValueError, "saved by another algorithm", "that algorithm's load"),
    "vec-normalize-task-ids": (
        lambda tp, mp: tiny(VecNormalize(two_tasks())),
        ValueError,
        "normalise the task ids",
        "norm_obs_keys=\\['observation'\\]",
    ),
    "save-from-0.1": (
        lambda tp, mp: save_from_sb3_brc_0_1(tp),
        ValueError,
        "written by sb3-brc 0.1 or older",
        "Load it with that version .* or retrain",
    ),
    "other-observation-size": (
        lambda tp, mp: BRCSAC.load(saved(tp), env=TargetEnv(obs_dim=4)),
        ValueError,
        "Observation spaces do not match",
        "same observation and action spaces",
    ),
    "other-task-set": (
        lambda tp, mp: BRCSAC.load(saved(tp, tiny(two_tasks())), env=two_tasks(("a", "c"))),
        ValueError,
        "differ from the model",
        "same tasks in the same order",
    ),
    "missing-metaworld": (
        lambda tp, mp: missing_metaworld(mp),
        ImportError,
        "metaworld",
        "pip install 'sb3-brc\\[metaworld\\]'",
    ),
    **{
        f"float-task-ids-{kind}": (
            lambda tp, mp, kind=kind: predict_with_float_task_ids(kind if kind != "exported" else tp / "exported"),
            ValueError,
            "Task ids must be whole numbers, got \\[0.7, 1.2\\]",
            "index in the model's tasks",
        )
        for kind in ("brcsac", "brcdqn", "exported")
    },
    **{
        f"observation-{how}": (
            lambda tp, mp, by=by: step_resizing_task(by),
            ValueError,
            f"Task 'resizing' returned an observation of {3 + by} entries, but its observation space declares 3",
            "fix the env's observation or its observation_space",
        )
        for how, by in (("shrinks", -1), ("grows-within-padding", 2))
    },
    "evaluate-tasks-in-another-order": (
        lambda tp, mp: evaluate_tasks(tiny(two_tasks()), two_tasks(("b", "a")), 1),
        ValueError,
        "The env's tasks \\['b', 'a'\\].*differ from the model's \\['a', 'b'\\]",
        "same tasks in the same order",
    ),
    "eval-callback-tasks-in-another-order": (
        lambda tp, mp: tiny(two_tasks()).learn(4, callback=MultiTaskEvalCallback(two_tasks(("b", "a")), eval_freq=1)),
        ValueError,
        "The env's tasks \\['b', 'a'\\].*differ from the model's \\['a', 'b'\\]",
        "same tasks in the same order",
    ),
    "brcsac-file-in-brcdqn-load": (
        lambda tp, mp: BRCDQN.load(saved(tp)),
        ValueError,
        "another sb3-brc algorithm \\(its policy comes from sb3_brc.sac.policies, not sb3_brc.dqn\\)",
        "Load it with the algorithm that saved it",
    ),
    **{
        f"truncated-{name}": (
            lambda tp, mp, name=name: resume_with_damaged(tp, name),
            ValueError,
            f"{name} is truncated or corrupted",
            "resume from an earlier one",
        )
        for name in ("rng.pkl", "replay_buffer.pkl")
    },
    **{
        f"reward-{kind}": (
            lambda tp, mp, reward=reward: step_odd_reward(reward),
            TypeError,
            "Task 'odd' returned the reward",
            "a reward is a single number",
        )
        for kind, reward in (("array", np.array([1.0, 2.0])), ("none", None), ("string", "1.0"))
    },
    "action-low-equals-high": (
        lambda tp, mp: BRCSAC("MlpPolicy", fixed_action_env()),
        ValueError,
        "low < high in every dimension",
        "Fix the env's action_space",
    ),
    "task-action-low-equals-high": (
        lambda tp, mp: MultiTaskVecEnv([fixed_action_env, TargetEnv], task_names=["fixed", "fine"]),
        ValueError,
        "Task 'fixed' has action bounds with high <= low",
        "Fix the env's action_space",
    ),
    **{
        f"plain-observation-{kind}": (
            lambda tp, mp, kind=kind: predict_on_a_plain_observation(kind, tp),
            ValueError,
            "trained on a multi-task env: it takes observations",
            "sb3_brc.as_task_of\\(env, model, 'task name'\\)",
        )
        for kind in ("brcsac", "brcdqn", "exported")
    },
    "task-of-model-unknown-task": (
        lambda tp, mp: as_task_of(TargetEnv(obs_dim=3, act_dim=2), tiny(two_tasks()), "c"),
        ValueError,
        "Unknown task 'c'",
        "the model's tasks: \\['a', 'b'\\]",
    ),
    "task-of-model-other-env": (
        lambda tp, mp: as_task_of(TargetEnv(obs_dim=4, act_dim=2), tiny(two_tasks()), "a"),
        ValueError,
        "not the model's task 'a': its observation size is 4 and its action size 2, the task's were 3 and 2",
        "Pass the env the model trained on",
    ),
    "task-of-single-task-model": (
        lambda tp, mp: as_task_of(TargetEnv(), tiny(), 0),
        ValueError,
        "not trained on a multi-task env",
        "use the env as it is",
    ),
    "no-checkpoint": (
        lambda tp, mp: load_checkpoint(str(tp), TargetEnv()),
        FileNotFoundError,
        "No complete checkpoint",
        "nothing to resume",
    ),
}


@pytest.mark.parametrize("case", list(CASES))
def test_bad_input_gets_a_clear_error(case, tmp_path, monkeypatch):
    action, error_type, problem, fix = CASES[case]
    with pytest.raises(error_type, match=problem) as info:
        action(tmp_path, monkeypatch)
    assert pytest.importorskip("re").search(fix, str(info.value)), f"no fix named in: {info.value}"


@pytest.mark.parametrize("algo", ["brcsac", "brcdqn"])
def test_optimizer_kwargs_add_to_the_algorithms_defaults(algo):
    # A user's eps must not drop BRC's weight decay (AdamW's own default is 100x larger) nor the fused kernel
    if algo == "brcsac":
        model = tiny(policy_kwargs=dict(TINY_POLICY, optimizer_kwargs=dict(eps=1e-5)))
        optimizers, defaults = [model.actor.optimizer, model.critic.optimizer], dict(weight_decay=1e-4, fused=True)
    else:
        model = BRCDQN("MlpPolicy", "CartPole-v1", policy_kwargs=dict(TINY_DQN, optimizer_kwargs=dict(eps=1e-5)))
        optimizers, defaults = [model.policy.optimizer], dict(fused=True)
    for optimizer in optimizers:
        group = optimizer.param_groups[0]
        assert group["eps"] == 1e-5 and all(group[key] == value for key, value in defaults.items())
    # another optimiser class takes the user's arguments alone (BRC's defaults are its own optimiser's)
    sgd = tiny(policy_kwargs=dict(TINY_POLICY, optimizer_class=th.optim.SGD, optimizer_kwargs=dict(momentum=0.9)))
    assert sgd.critic.optimizer.param_groups[0]["weight_decay"] == 0 and not sgd.critic.optimizer.param_groups[0]["fused"]


class EndlessEnv(TargetEnv):
    """:class:`TargetEnv` whose episodes never end (no time limit)."""

    def step(self, action):
        obs, reward, terminated, _, info = super().step(action)
        return obs, reward, terminated, False, info


def test_evaluation_of_a_task_whose_episodes_never_end_returns_with_a_warning():
    env = MultiTaskVecEnv([TargetEnv, EndlessEnv], task_names=["ends", "endless"])
    with pytest.warns(UserWarning, match=r"\['endless'\] did not end within 50 steps.*TimeLimit"):
        ends, endless = evaluate_tasks(tiny(env), env, 3, max_episode_steps=50)
    assert ends["episodes"] == 3 and endless["episodes"] == 1  # its one episode, stopped at 50 steps
    assert endless["mean_return"] < 0  # the 50 steps' rewards (-|x - 0.5| each)


@pytest.mark.parametrize("pointer", [None, b"\xff\xfe garbled", b"step-999"])
def test_a_missing_or_garbled_latest_pointer_falls_back_to_the_newest_complete_checkpoint(tmp_path, pointer):
    model = tiny()
    model.learn(40)
    save_checkpoint(model, str(tmp_path))
    latest = tmp_path / "latest"
    if pointer is None:
        latest.unlink()
    else:
        latest.write_bytes(pointer)
    with pytest.warns(UserWarning, match="using the newest complete checkpoint, step-40"):
        resumed = load_checkpoint(str(tmp_path), TargetEnv())
    assert resumed.num_timesteps == 40


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--out", "{tmp}/a-file/run"], "Not a directory"),
        (["--out", "{tmp}/run", "--device", "tpu"], "argument --device: unknown torch device 'tpu'"),
        (["--out", "{tmp}/damaged", "--resume"], "damaged/config.json is damaged (not valid JSON"),
        (["--out", "{tmp}/never-ran", "--resume"], "never-ran/config.json not found"),
    ],
    ids=["out-under-a-file", "unknown-device", "resume-damaged-config", "resume-without-config"],
)
def test_cli_bad_output_and_device_give_one_line_errors(tmp_path, capsys, argv, message):
    (tmp_path / "a-file").write_text("")
    (tmp_path / "damaged").mkdir()
    (tmp_path / "damaged" / "config.json").write_text('{"suite": "pend')  # cut off mid-write by an older version
    argv = [arg.replace("{tmp}", str(tmp_path)) for arg in argv]
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["train", "--tasks", "Pendulum-v1", "--steps-per-task", "10", *argv])
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and message in err and "Traceback" not in err
