import math

import numpy as np
import pytest
import torch as th
from conftest import TINY_DQN, TINY_POLICY
from envs import TargetEnv

from sb3_brc import BRCDQN, BRCSAC, DiscreteMultiTaskVecEnv, MultiTaskVecEnv
from sb3_brc.tools.diagnostics import DiagnosticsCallback, gradient_conflict_rate, plot_task_embeddings, task_diagnostics


def test_conflict_rate_on_hand_built_gradients():
    # directions at 0, 60, 120 and 200 degrees in the plane: the cosine of each pair is known
    angles = [0, 60, 120, 200]
    grads = [th.tensor([math.cos(math.radians(a)), math.sin(math.radians(a))]) * (k + 1) for k, a in enumerate(angles)]
    rate, cosines = gradient_conflict_rate(grads)
    expected = np.cos(np.radians(np.subtract.outer(angles, angles)))
    np.testing.assert_allclose(cosines, expected, atol=1e-12)
    # pairs: (0,60)+ (0,120)- (0,200)- (60,120)+ (60,200)- (120,200)+  -> 3 negative of 6
    assert rate == pytest.approx(3 / 6)
    assert gradient_conflict_rate([th.ones(3), th.ones(3)])[0] == 0.0
    assert gradient_conflict_rate([th.ones(3), -th.ones(3)])[0] == 1.0
    with pytest.raises(ValueError, match="at least 2 tasks"):
        gradient_conflict_rate([th.ones(3)])


def multi_task_model():
    env = MultiTaskVecEnv(
        [
            lambda: TargetEnv(obs_dim=3, act_dim=2),
            lambda: TargetEnv(obs_dim=2, act_dim=1),
            lambda: TargetEnv(obs_dim=4, act_dim=2),
        ],
        task_names=["a", "b", "c"],
        seed=0,
    )
    return BRCSAC("MlpPolicy", env, learning_starts=90, batch_size=32, policy_kwargs=TINY_POLICY, seed=0)


def test_task_diagnostics_leave_the_model_untouched_and_log(tmp_path):
    model = multi_task_model()
    callback = DiagnosticsCallback(every_n_updates=10, samples_per_task=32)
    model.learn(180, callback=callback)
    assert callback.history and callback.history[0]["tasks"] == ["a", "b", "c"]
    before = [p.detach().clone() for p in model.policy.parameters()]
    result = task_diagnostics(model, samples_per_task=32)
    assert all(th.equal(p, q) for p, q in zip(before, model.policy.parameters(), strict=True))
    assert all(p.grad is None or th.isfinite(p.grad).all() for p in model.policy.parameters())
    assert len(result["critic_loss"]) == 3 and all(np.isfinite(result["grad_norm"]))
    assert 0.0 <= result["conflict_rate"] <= 1.0 and result["cosines"].shape == (3, 3)
    coords = plot_task_embeddings(model, str(tmp_path / "emb.png"))
    assert coords.shape == (3, 2) and (tmp_path / "emb.png").stat().st_size > 0


def test_a_run_with_diagnostics_trains_exactly_as_one_without():
    # The diagnostics draw their own replay samples and actions: the run's random streams must not see them
    plain = multi_task_model()  # (built and trained in turn: building a model seeds the global generators)
    plain.learn(180)
    watched = multi_task_model()
    watched.learn(180, callback=DiagnosticsCallback(every_n_updates=10, samples_per_task=32))
    for expected, actual in zip(plain.policy.parameters(), watched.policy.parameters(), strict=True):
        assert th.equal(expected, actual)


def test_diagnostics_serve_brcdqn():
    env = DiscreteMultiTaskVecEnv(["CartPole-v1", "Acrobot-v1"], seed=0)
    model = BRCDQN("MlpPolicy", env, learning_starts=100, policy_kwargs=TINY_DQN, seed=0)
    callback = DiagnosticsCallback(every_n_updates=50, samples_per_task=32)
    model.learn(300, callback=callback)
    result = callback.history[-1]
    assert result["tasks"] == ["CartPole-v1", "Acrobot-v1"]
    assert all(np.isfinite(result["critic_loss"])) and all(value > 0 for value in result["grad_norm"])
    assert all(np.isnan(result["entropy"]))  # epsilon-greedy: no entropy estimate
    assert 0.0 <= result["conflict_rate"] <= 1.0


def test_diagnostics_schedule_survives_a_resume():
    # Every 25 updates of the model's count, which a resumed model restores: a new callback keeps the schedule
    model = multi_task_model()
    seen = []

    class Recording(DiagnosticsCallback):
        def _on_step(self):
            runs = len(self.history)
            result = super()._on_step()
            if len(self.history) > runs:
                seen.append(self.model._n_updates)
            return result

    model.learn(150, callback=Recording(every_n_updates=25, samples_per_task=8))  # 40 updates (2 per step after 90)
    model.learn(90, callback=Recording(every_n_updates=25, samples_per_task=8), reset_num_timesteps=False)
    assert seen == [26, 50, 76]  # the first count past each multiple of 25 (2 updates per train() call)
    with pytest.raises(ValueError, match="every_n_updates and samples_per_task must be >= 1"):
        DiagnosticsCallback(every_n_updates=0)
