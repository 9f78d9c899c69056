import numpy as np
import pytest
import torch as th
from conftest import TINY_POLICY
from envs import TargetEnv

from sb3_brc import BRCSAC, MultiTaskVecEnv
from sb3_brc.tools.export import export_policy, load_exported_policy


class NotATensor:
    pass


@pytest.mark.parametrize("multi_task", [False, True])
def test_export_round_trip_without_pickles(tmp_path, multi_task):
    env = (
        MultiTaskVecEnv([lambda: TargetEnv(obs_dim=3, act_dim=2), lambda: TargetEnv(obs_dim=2, act_dim=1)])
        if multi_task
        else TargetEnv()
    )
    model = BRCSAC("MlpPolicy", env, learning_starts=40, batch_size=16, policy_kwargs=TINY_POLICY, seed=0)
    model.learn(60)
    export_policy(model, str(tmp_path))
    policy = load_exported_policy(str(tmp_path))
    obs = env.reset() if multi_task else np.random.default_rng(0).normal(size=(5, 3)).astype(np.float32)
    np.testing.assert_array_equal(policy.predict(obs, deterministic=True)[0], model.predict(obs, deterministic=True)[0])
    assert policy.num_tasks == model.num_tasks


def test_export_refuses_pickled_objects(tmp_path):
    model = BRCSAC("MlpPolicy", TargetEnv(), policy_kwargs=TINY_POLICY)
    export_policy(model, str(tmp_path))
    th.save({"payload": NotATensor()}, tmp_path / "policy.pt")  # what a malicious file could carry
    with pytest.raises(Exception, match="Weights only load failed"):
        load_exported_policy(str(tmp_path))
    (tmp_path / "policy.json").write_text('{"format": "something-else"}')
    with pytest.raises(ValueError, match="not an sb3-brc policy export"):
        load_exported_policy(str(tmp_path))
