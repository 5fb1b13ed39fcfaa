"""SmartAssign: one network that removes rain and snow from photographs (CVPR 2023)."""

from smartassign.config import LossConfig, ModelConfig, PRESETS, VARIANTS, model_config
from smartassign.model import Output, SmartAssignNet, build_model

__version__ = "0.1.0"

__all__ = [
    "LossConfig",
    "ModelConfig",
    "Output",
    "PRESETS",
    "SmartAssignNet",
    "VARIANTS",
    "__version__",
    "build_model",
    "model_config",
]
