from sb3_brc.brc.brc import BRCSAC
from sb3_brc.brc.policies import BRCPolicy, MlpPolicy, MultiInputPolicy

__all__ = ["BRCSAC", "BRCPolicy", "MlpPolicy", "MultiInputPolicy"]
