"""Weights on disk: safetensors tensors plus a JSON sidecar holding the model config.

``NAME.safetensors`` holds only tensors (never pickle); ``NAME.json`` beside it
holds ``{"model": asdict(ModelConfig), ...metadata}``. Both are written
atomically (temp file in the same folder, fsync, rename), so a crash never
leaves a half-written file under the final name.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from smartassign.config import ModelConfig, config_to_dict, model_config_from_dict
from smartassign.errors import ConfigError, WeightsError
from smartassign.model import SmartAssignNet


def atomic_write(path: Path, write: Callable[[Path], None]) -> None:
    """Call ``write(tmp)`` on a temp file beside ``path``, fsync it, then rename it onto ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        write(tmp)
        with open(tmp, "rb+") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def atomic_write_text(path: Path, text: str) -> None:
    """Write text atomically."""
    atomic_write(path, lambda tmp: tmp.write_text(text))


def sidecar(path: Path) -> Path:
    """The JSON sidecar of a ``.safetensors`` file."""
    return Path(path).with_suffix(".json")


def save_weights(model: SmartAssignNet, path: Path, meta: dict[str, Any] | None = None) -> None:
    """Save ``model``'s weights to ``path`` (.safetensors) and its config to the sidecar."""
    path = Path(path)
    state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    atomic_write(path, lambda tmp: save_file(state, str(tmp)))
    info = {"model": config_to_dict(model.cfg), **(meta or {})}
    atomic_write_text(sidecar(path), json.dumps(info, indent=2) + "\n")


def read_sidecar(path: Path) -> dict[str, Any]:
    """The sidecar JSON of a weights file, checked to hold a model config."""
    side = sidecar(path)
    try:
        info = json.loads(side.read_text())
    except FileNotFoundError:
        raise WeightsError(f"{side}: config sidecar missing; it must sit beside {Path(path).name}") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise WeightsError(f"{side}: damaged config sidecar ({exc})") from None
    if not isinstance(info, dict) or not isinstance(info.get("model"), dict):
        raise WeightsError(f"{side}: no 'model' config in sidecar")
    return info


def load_state(path: Path) -> dict[str, torch.Tensor]:
    """Tensors of a safetensors file, with a one-line error for missing or damaged files."""
    path = Path(path)
    if not path.is_file():
        raise WeightsError(f"{path}: weights file not found")
    try:
        return load_file(str(path))
    except (SafetensorError, OSError, ValueError) as exc:
        raise WeightsError(f"{path}: not a valid safetensors file ({exc})") from None


def load_weights(path: Path, cfg: ModelConfig | None = None, device: str | torch.device = "cpu") -> SmartAssignNet:
    """Build the network described by the sidecar (or ``cfg``) and load ``path`` into it strictly."""
    path = Path(path)
    if cfg is None:
        try:
            cfg = model_config_from_dict(read_sidecar(path)["model"])
        except ConfigError as exc:
            raise WeightsError(f"{sidecar(path)}: {exc}") from None
    model = SmartAssignNet(cfg)
    state = load_state(path)
    missing, unexpected = set(model.state_dict()) - set(state), set(state) - set(model.state_dict())
    if missing or unexpected:
        raise WeightsError(
            f"{path}: weights do not match the config ({len(missing)} missing, {len(unexpected)} unexpected tensors, "
            f"e.g. {sorted(missing or unexpected)[0]})"
        )
    for name, tensor in model.state_dict().items():
        if state[name].shape != tensor.shape:
            raise WeightsError(f"{path}: tensor {name} has shape {tuple(state[name].shape)}, config needs {tuple(tensor.shape)}")
    model.load_state_dict(state)
    return model.to(device).eval()
