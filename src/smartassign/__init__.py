"""SmartAssign: one network that removes rain and snow from photographs (CVPR 2023).

The names below are imported on first use (PEP 562), so that ``import smartassign.cli`` does not wait for torch:
the command line can then catch an interrupt (Ctrl-C) while the heavy modules load.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from smartassign.config import PRESETS, VARIANTS, LossConfig, ModelConfig, model_config
    from smartassign.model import Output, SmartAssignNet, build_model
    from smartassign.restore import Restored, Restorer
    from smartassign.restore import bundled_weights as bundled_weights

__version__ = "0.1.0"

# Public name -> the module that defines it.
_LAZY = {
    "PRESETS": "smartassign.config",
    "VARIANTS": "smartassign.config",
    "LossConfig": "smartassign.config",
    "ModelConfig": "smartassign.config",
    "model_config": "smartassign.config",
    "Output": "smartassign.model",
    "SmartAssignNet": "smartassign.model",
    "build_model": "smartassign.model",
    "Restored": "smartassign.restore",
    "Restorer": "smartassign.restore",
    "bundled_weights": "smartassign.restore",
}


def __getattr__(name: str) -> Any:
    """Import a public name from its module on first use (and keep it here)."""
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'smartassign' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_LAZY})


def load(name_or_path: str | Path = "small", device: str = "auto", precision: str = "auto", **kw: Any) -> Restorer:
    """A :class:`Restorer` for bundled weights by name (``"small"``) or for a ``.safetensors`` file.

    ``precision``: ``"auto"`` runs the network in bf16 on a GPU and on CPUs with native bf16 (AMX / AVX512-BF16:
    about twice as fast, pictures within 1e-3 of float32), float32 elsewhere; or ``"float32"`` / ``"bf16"``."""
    from smartassign.restore import Restorer, bundled_weights

    path = Path(name_or_path)
    if isinstance(name_or_path, str) and not path.suffix and path.name == name_or_path:
        path = bundled_weights(name_or_path)
    kw.setdefault("dtype", precision)
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
