"""Are the trained parameters of a source tree bit-identical to another's? Prints a digest of the state dict after
400 seeded steps of single-task BRCSAC, single-task BRCDQN and two-game BRCDQN; run it once per checkout:

    PYTHONPATH=/path/to/checkout python benchmarks/architecture/identical.py
"""

import hashlib
import pathlib
import sys

import gymnasium as gym
import torch as th

sys.path.insert(0, str(pathlib.Path(__file__).parents[2] / "tests"))  # the tests' toy envs
from envs import TargetEnv

from sb3_brc import BRCDQN, BRCSAC, DiscreteMultiTaskVecEnv

th.set_num_threads(1)


def digest(model):
    h = hashlib.sha1()
    for _k, v in sorted(model.policy.state_dict().items()):
        h.update(v.detach().cpu().numpy().tobytes())
    return h.hexdigest()[:12]


m = BRCSAC(
    "MlpPolicy",
    TargetEnv(),
    learning_starts=100,
    batch_size=32,
    seed=0,
    policy_kwargs=dict(net_arch=dict(pi=[32], qf=[64, 64]), n_atoms=21),
)
m.learn(400)
print("BRCSAC single-task", digest(m))
m = BRCDQN(
    "MlpPolicy", gym.make("CartPole-v1"), learning_starts=100, seed=0, policy_kwargs=dict(net_arch=[32, 32], n_atoms=21)
)
m.learn(400)
print("BRCDQN single-task", digest(m))
m = BRCDQN(
    "MlpPolicy",
    DiscreteMultiTaskVecEnv(["CartPole-v1", "Acrobot-v1"], seed=0),
    learning_starts=100,
    seed=0,
    policy_kwargs=dict(net_arch=[32, 32], n_atoms=21),
)
m.learn(400)
print("BRCDQN multi-task", digest(m))
