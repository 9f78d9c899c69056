from sb3_brc.dqn.dqn import BRCDQN
from sb3_brc.dqn.policies import BRCDQNPolicy, CnnPolicy, MlpPolicy, MultiInputPolicy

__all__ = ["BRCDQN", "BRCDQNPolicy", "CnnPolicy", "MlpPolicy", "MultiInputPolicy"]
