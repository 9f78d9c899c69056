from sb3_brc.sac.policies import BRCPolicy, CnnPolicy, MlpPolicy, MultiInputPolicy
from sb3_brc.sac.sac import BRCSAC

__all__ = ["BRCSAC", "BRCPolicy", "CnnPolicy", "MlpPolicy", "MultiInputPolicy"]
