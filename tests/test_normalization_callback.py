"""BRC's return normalisation on SB3's own algorithms (ReturnNormalizationCallback): the same normaliser, fed the
same transitions, scales the rewards they train on as BRCSAC scales its own."""

from typing import ClassVar

import numpy as np
import pytest
import torch as th
from stable_baselines3 import SAC, TD3
from stable_baselines3.common.callbacks import BaseCallback

from sb3_brc import BRCSAC, MultiTaskVecEnv, ReturnNormalization
from sb3_brc.common.normalization_callback import ReturnNormalizationCallback, ScaledRewardSampling
from sb3_brc.envs.vec_env import DropTaskIds
from sb3_brc.tools.checkpoint import CheckpointCallback, load_checkpoint


def test_sac_with_the_callback_trains_on_the_rewards_brcsac_scales():
    # The same env, seed and random warm-up actions: the same transitions into both normalisers
    kwargs = dict(learning_starts=1000, seed=3)
    brc = BRCSAC("MlpPolicy", "Pendulum-v1", policy_kwargs=dict(net_arch=[16]), **kwargs)
    brc.learn(600)
    sac, callback = SAC("MlpPolicy", "Pendulum-v1", **kwargs), ReturnNormalizationCallback()
    sac.learn(600, callback=callback)
    np.testing.assert_array_equal(sac.return_normalizer.max_abs_return, brc.return_normalizer.max_abs_return)
    assert sac.return_normalizer.episodes.tolist() == brc.return_normalizer.episodes.tolist() == [3]
    # With the same temperature and target entropy, the same scale v_max / (G + lambda) as BRCSAC's
    with th.no_grad():
        brc.log_ent_coef.copy_(sac.log_ent_coef)
    brc.target_entropy = sac.target_entropy
    th.testing.assert_close(callback.reward_scale(), brc.reward_scale())
    # ... multiplied into the sampled rewards
    scaled = ScaledRewardSampling(sac.replay_buffer, callback.reward_scale)
    np.random.seed(0)
    raw = sac.replay_buffer.sample(32).rewards
    np.random.seed(0)
    th.testing.assert_close(scaled.sample(32).rewards, raw * brc.reward_scale()[0])


class RecordBufferType(BaseCallback):
    def _on_step(self) -> bool:
        return True

    def _on_rollout_end(self) -> None:
        self.seen = type(self.model.replay_buffer)


def test_training_samples_scaled_rewards_and_the_normaliser_survives_save_and_checkpoints(tmp_path):
    env = DropTaskIds(MultiTaskVecEnv(["Pendulum-v1"], seed=0))
    model, recorder = TD3("MlpPolicy", env, learning_starts=250, batch_size=16, seed=0), RecordBufferType()
    checkpoints = CheckpointCallback(str(tmp_path / "checkpoints"), save_freq=400)
    model.learn(400, callback=[ReturnNormalizationCallback(), recorder, checkpoints])
    assert recorder.seen is ScaledRewardSampling  # the updates sampled through the scaling
    assert type(model.replay_buffer).__name__ == "ReplayBuffer"  # unwrapped after learn()
    episodes = model.return_normalizer.episodes.tolist()
    assert episodes == [2]
    model.save(tmp_path / "td3")
    loaded = TD3.load(tmp_path / "td3", env=env)
    np.testing.assert_array_equal(loaded.return_normalizer.max_abs_return, model.return_normalizer.max_abs_return)
    resumed = load_checkpoint(str(tmp_path / "checkpoints"), env, TD3)
    assert resumed.return_normalizer.episodes.tolist() == episodes and type(resumed.replay_buffer).__name__ == "ReplayBuffer"
    resumed.learn(200, callback=ReturnNormalizationCallback(), reset_num_timesteps=False)
    assert resumed.return_normalizer.episodes.tolist() == [3]  # went on from the saved statistics


def test_the_callback_refuses_what_it_cannot_do():
    with pytest.raises(ValueError, match=r"entropy_term=.fixed.*only BRCSAC"):
        ReturnNormalizationCallback(ReturnNormalization(entropy_term="per_task"))
    model = BRCSAC("MlpPolicy", "Pendulum-v1", policy_kwargs=dict(net_arch=[16]), learning_starts=10)
    with pytest.raises(TypeError, match="BRCSAC normalises its returns itself"):
        model.learn(20, callback=ReturnNormalizationCallback())


class RecordedNormalization(ReturnNormalizationCallback):
    """Remembers the episodes its normaliser has seen when training ends."""

    seen: ClassVar[list[list[int]]] = []

    def _on_training_end(self) -> None:
        super()._on_training_end()
        RecordedNormalization.seen.append(self.normalizer.episodes.tolist())


def test_the_harness_runs_sac_with_the_normalisation_as_its_own_algorithm(tmp_path):
    from sb3_brc.bench import ALGOS, BenchAlgo, BenchSettings, grid, register_algo, run_one
    from sb3_brc.bench.grid import read_json

    settings = BenchSettings(steps_per_task=400, eval_every=200, eval_episodes=1, learning_starts=100, batch_size=32, width=16)
    sac, sac_norm = grid(str(tmp_path), ["sac", "sac_norm"], ["Pendulum-v1"], [0], settings)
    assert "callbacks" not in sac.config()  # runs recorded before the key still match
    assert sac_norm.config()["callbacks"] == ["sb3_brc.common.normalization_callback:ReturnNormalizationCallback"]
    # An algorithm's callbacks train with its runs (a recording variant of sac_norm)
    register_algo("sac_norm_recorded", BenchAlgo(ALGOS["sac_norm"].cls, make_env=ALGOS["sac_norm"].make_env,
                                                 callbacks=(RecordedNormalization,)))  # fmt: skip
    try:
        (recorded,) = grid(str(tmp_path), ["sac_norm_recorded"], ["Pendulum-v1"], [0], settings)
        run_one(recorded, checkpoint_every=0)
    finally:
        del ALGOS["sac_norm_recorded"]
    assert read_json(f"{recorded.run_dir}/config.json")["status"] == "complete"
    assert RecordedNormalization.seen[-1] == [2]  # its 400 steps: two Pendulum episodes (learn() runs per evaluation)
