"""Tiny deterministic test environments."""

import os
import time

import gymnasium as gym
import numpy as np
from gymnasium import spaces


class TargetEnv(gym.Env):
    """Move a point towards 0.5 in its first ``act_dim`` coordinates: reward ``-|x - 0.5|`` there, 20-step
    episodes (truncated); the other coordinates are distractors.

    ``bad_step`` makes the env emit a NaN (``bad="reward"``) or inf (``bad="obs"``) at that step.
    """

    def __init__(self, obs_dim: int = 3, act_dim: int = 2, bad_step: int | None = None, bad: str = "reward"):
        self.observation_space = spaces.Box(-np.inf, np.inf, (obs_dim,), np.float32)
        self.action_space = spaces.Box(-1, 1, (act_dim,), np.float32)
        self.bad_step, self.bad = bad_step, bad
        self.steps = self.t = 0

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.t = 0
        self.x = self.np_random.uniform(-1, 1, self.observation_space.shape).astype(np.float32)
        return self.x.copy(), {}

    def step(self, action):
        self.t += 1
        self.steps += 1
        self.x[: len(action)] = np.clip(self.x[: len(action)] + 0.5 * np.asarray(action), -2, 2)
        reward = -float(np.abs(self.x[: len(action)] - 0.5).sum())
        obs = self.x.copy()
        if self.steps == self.bad_step:
            if self.bad == "reward":
                reward = float("nan")
            else:
                obs[0] = np.inf
        return obs, reward, False, self.t >= 20, {}


class FramesEnv(gym.Env):
    """Random uint8 frame stacks (from the env's seeded generator), 3 actions, reward 1 for action 1, 10-step
    episodes."""

    def __init__(self, shape: tuple[int, ...] = (2, 36, 36)):
        self.observation_space = spaces.Box(0, 255, shape, np.uint8)
        self.action_space = spaces.Discrete(3)

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.t = 0
        return self.frame(), {}

    def frame(self) -> np.ndarray:
        return self.np_random.integers(0, 256, self.observation_space.shape, dtype=np.uint8)

    def step(self, action):
        self.t += 1
        return self.frame(), float(action == 1), self.t >= 10, False, {}


class RecordActionEnv(gym.Env):
    """Records the action it receives; asymmetric action bounds; terminates after ``terminate_at`` steps."""

    def __init__(self, terminate_at: int = 5):
        self.observation_space = spaces.Dict(
            {"a": spaces.Box(-1, 1, (2,), np.float64), "b": spaces.Box(-1, 1, (), np.float64)}
        )
        self.action_space = spaces.Box(np.array([0.0, -5.0]), np.array([10.0, 5.0]), dtype=np.float64)
        self.terminate_at = terminate_at
        self.actions: list[np.ndarray] = []

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.t = 0
        return {"a": np.array([0.1, 0.2]), "b": np.array(0.3)}, {}

    def step(self, action):
        self.actions.append(np.array(action))
        self.t += 1
        obs = {"a": np.array([self.t, -self.t], dtype=np.float64), "b": np.array(float(self.t))}
        return obs, 1.0, self.t >= self.terminate_at, False, {"success": float(self.t == 2)}


class FaultEnv(TargetEnv):
    """:class:`TargetEnv` that calls :meth:`_fault` with ``"reset"`` or ``"step"`` before each reset and step."""

    def _fault(self, where: str) -> None:
        raise NotImplementedError

    def reset(self, *, seed=None, options=None):
        self._fault("reset")
        return super().reset(seed=seed, options=options)

    def step(self, action):
        self._fault("step")
        return super().step(action)


class HangEnv(FaultEnv):
    """:class:`TargetEnv` whose ``step()`` (``hang_in="step"``) or ``reset()`` (``hang_in="reset"``) never returns
    once it has taken ``hang_after`` steps: a stuck simulator."""

    def __init__(self, hang_after: int, hang_in: str = "step", **kwargs):
        super().__init__(**kwargs)
        self.hang_after, self.hang_in = hang_after, hang_in

    def _fault(self, where: str) -> None:
        while where == self.hang_in and self.steps >= self.hang_after:
            time.sleep(1)


class FailEnv(FaultEnv):
    """:class:`TargetEnv` that fails once it has taken ``fail_after`` steps: its ``step()`` or ``reset()``
    (``fail_in``) raises, or its process exits (``fail_in="exit"``, from ``step()``)."""

    def __init__(self, fail_after: int, fail_in: str = "step", **kwargs):
        super().__init__(**kwargs)
        self.fail_after, self.fail_in = fail_after, fail_in

    def _fault(self, where: str) -> None:
        if self.steps >= self.fail_after and where == ("step" if self.fail_in == "exit" else self.fail_in):
            if self.fail_in == "exit":
                os._exit(7)
            raise RuntimeError(f"simulator exploded in {where}")
