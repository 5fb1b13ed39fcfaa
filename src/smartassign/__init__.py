"""SmartAssign: one network that removes rain and snow from photographs (CVPR 2023)."""

from pathlib import Path
from typing import Any

from smartassign.config import PRESETS, VARIANTS, LossConfig, ModelConfig, model_config
from smartassign.model import Output, SmartAssignNet, build_model
from smartassign.restore import Restored, Restorer, bundled_weights

__version__ = "0.1.0"


def load(name_or_path: str | Path = "small", device: str = "auto", **kw: Any) -> Restorer:
    """A :class:`Restorer` for bundled weights by name (``"small"``) or for a ``.safetensors`` file."""
    path = Path(name_or_path)
    if isinstance(name_or_path, str) and not path.suffix and path.name == name_or_path:
        path = bundled_weights(name_or_path)
    return Restorer.from_weights(path, device, **kw)


__all__ = [
    "LossConfig",
    "ModelConfig",
    "Output",
    "PRESETS",
    "Restored",
    "Restorer",
    "SmartAssignNet",
    "VARIANTS",
    "__version__",
    "build_model",
    "load",
    "model_config",
]
