"""Weights and training checkpoints on disk: safetensors tensors plus JSON, never pickle.

``NAME.safetensors`` holds only tensors; ``NAME.json`` beside it holds
``{"model": asdict(ModelConfig), ...metadata}``. Every file is written
atomically (temp file in the same folder, fsync, rename), so a crash never
leaves a half-written file under the final name.

A training checkpoint ``RUN/checkpoints/step_00001000`` adds the training
state in ``.state.safetensors`` (optimizer tensors, torch RNG states) and
``.state.json`` (optimizer hyper-parameters, scheduler, Python and NumPy RNG
states, data position, counters). The weights sidecar is written last: a
checkpoint whose sidecar exists is complete, whatever moment a kill -9 hit.
"""

from __future__ import annotations

import json
import os
import random
import re
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from smartassign.config import ModelConfig, config_to_dict, model_config_from_dict
from smartassign.errors import ConfigError, WeightsError
from smartassign.model import SmartAssignNet

CHECKPOINTS = "checkpoints"
BEST = "best.safetensors"
_STEP_FILE = re.compile(r"step_(\d+)\.json$")


def atomic_write(path: Path, write: Callable[[Path], None]) -> None:
    """Call ``write(tmp)`` on a temp file beside ``path``, fsync it, then rename it onto ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        # mkstemp creates 0600; a finished file should get the permissions of any new file (umask applies).
        os.chmod(tmp, 0o666 & ~_umask())
        write(tmp)
        with open(tmp, "rb+") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _umask() -> int:
    """The process umask (read by setting and restoring it: POSIX has no getter)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


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
    except (OSError, json.JSONDecodeError, UnicodeDecodeError) as exc:
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
    if not path.is_file():
        raise WeightsError(f"{path}: weights file not found")
    if cfg is None:
        try:
            cfg = model_config_from_dict(read_sidecar(path)["model"])
            model = SmartAssignNet(cfg)
        except ConfigError as exc:
            raise WeightsError(f"{sidecar(path)}: {exc}") from None
        # Ill-typed values (width "16" or 16.0, depths null) pass the key check and fail deep in the config
        # checks or in torch: a damaged sidecar, not a bug.
        except (TypeError, ValueError, RuntimeError) as exc:
            raise WeightsError(f"{sidecar(path)}: invalid model config ({exc})") from None
    else:
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
            raise WeightsError(
                f"{path}: tensor {name} has shape {tuple(state[name].shape)}, config needs {tuple(tensor.shape)}"
            )
    # A network with NaN or infinite weights turns every image into garbage without any error.
    bad = sorted(name for name, tensor in state.items() if tensor.is_floating_point() and not tensor.isfinite().all())
    if bad:
        raise WeightsError(f"{path}: {len(bad)} tensors hold NaN or infinity (e.g. {bad[0]}); the file is damaged")
    model.load_state_dict(state)
    return model.to(device).eval()


def load_matching(model: torch.nn.Module, path: Path) -> list[str]:
    """Copy every tensor of ``path`` whose name and shape match into ``model``; return the names left as initialised.

    This is how K1/K2 start from a trained V6: the encoder and GKFMs carry over, heads whose input width
    changed with the routing start fresh.
    """
    state = load_state(path)
    own = model.state_dict()
    matching = {k: v for k, v in state.items() if k in own and own[k].shape == v.shape}
    if not matching:
        raise WeightsError(f"{path}: no tensor matches this model; is it a SmartAssign checkpoint?")
    model.load_state_dict(matching, strict=False)
    return sorted(set(own) - set(matching))


def checkpoint_path(run_dir: Path, step: int) -> Path:
    """Weights file of the training checkpoint at ``step`` in ``run_dir``."""
    return Path(run_dir) / CHECKPOINTS / f"step_{step:08d}.safetensors"


def _state_files(weights: Path) -> tuple[Path, Path]:
    return weights.with_suffix(".state.safetensors"), weights.with_suffix(".state.json")


def list_checkpoints(run_dir: Path) -> list[tuple[int, Path]]:
    """Complete training checkpoints in ``run_dir`` as ``(step, weights path)``, oldest first."""
    found = []
    for side in (Path(run_dir) / CHECKPOINTS).glob("step_*.json"):
        match = _STEP_FILE.search(side.name)
        weights = side.with_suffix(".safetensors")
        if match and weights.is_file() and all(p.is_file() for p in _state_files(weights)):
            found.append((int(match.group(1)), weights))
    return sorted(found)


def latest_checkpoint(run_dir: Path) -> Path | None:
    """Weights path of the newest complete training checkpoint, or None."""
    found = list_checkpoints(run_dir)
    return found[-1][1] if found else None


def rng_state() -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """The Python, NumPy and torch (CPU and CUDA) random states as (tensors, JSON-able values)."""
    tensors = {"rng/torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        for i, state in enumerate(torch.cuda.get_rng_state_all()):
            tensors[f"rng/cuda/{i}"] = state
    version, internal, gauss = random.getstate()
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    values = {
        "python": [version, list(internal), gauss],
        "numpy": [kind, keys.tolist(), int(pos), int(has_gauss), float(cached)],
    }
    return tensors, values


def set_rng_state(tensors: dict[str, torch.Tensor], values: dict[str, Any]) -> None:
    """Restore what :func:`rng_state` returned (CUDA states only where there are as many devices)."""
    torch.set_rng_state(tensors["rng/torch"])
    cuda = [tensors[k] for k in sorted(t for t in tensors if t.startswith("rng/cuda/"))]
    if cuda and torch.cuda.is_available() and len(cuda) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(cuda)
    version, internal, gauss = values["python"]
    random.setstate((version, tuple(internal), gauss))
    kind, keys, pos, has_gauss, cached = values["numpy"]
    np.random.set_state((kind, np.array(keys, dtype=np.uint32), pos, has_gauss, cached))


def _split_optimizer(state: dict[str, Any]) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """``optimizer.state_dict()`` -> tensors keyed ``optim/<param>/<name>`` and the JSON-able rest."""
    tensors: dict[str, torch.Tensor] = {}
    rest: dict[str, dict[str, Any]] = {}
    for pid, entries in state["state"].items():
        for name, value in entries.items():
            if isinstance(value, torch.Tensor):
                tensors[f"optim/{pid}/{name}"] = value.detach().contiguous().cpu()
            else:
                rest.setdefault(str(pid), {})[name] = value
    return tensors, {"param_groups": state["param_groups"], "state": rest}


def _join_optimizer(tensors: dict[str, torch.Tensor], values: dict[str, Any], like: dict[str, Any]) -> dict[str, Any]:
    """Inverse of :func:`_split_optimizer`; ``like`` (the live optimizer's state dict) restores tuples."""
    state: dict[int, dict[str, Any]] = {int(pid): dict(entries) for pid, entries in values["state"].items()}
    for key, tensor in tensors.items():
        if key.startswith("optim/"):
            _, pid, name = key.split("/", 2)
            state.setdefault(int(pid), {})[name] = tensor
    groups = []
    for saved, live in zip(values["param_groups"], like["param_groups"], strict=True):
        groups.append({k: tuple(v) if isinstance(live.get(k), tuple) else v for k, v in saved.items()})
    return {"state": state, "param_groups": groups}


def save_checkpoint(
    run_dir: Path,
    step: int,
    model: SmartAssignNet,
    optimizer: torch.optim.Optimizer,
    scheduler: Any,
    progress: dict[str, Any],
    meta: dict[str, Any],
    keep_last: int,
    ema: torch.nn.Module | None = None,
) -> Path:
    """Write the training checkpoint at ``step`` (state first, weights sidecar last), prune to ``keep_last``.

    ``progress`` is JSON-able loop state (epoch, position in the epoch, counters); ``meta`` goes into the
    weights sidecar (experiment, metrics). Returns the weights path.
    """
    weights = checkpoint_path(run_dir, step)
    state_tensors, state_path = _state_files(weights)
    optim_tensors, optim_values = _split_optimizer(optimizer.state_dict())
    rng_tensors, rng_values = rng_state()
    tensors = {**optim_tensors, **rng_tensors}
    if ema is not None:  # the averaged weights and their update count continue exactly on resume
        tensors.update({f"ema.{k}": v.detach().contiguous().cpu() for k, v in ema.state_dict().items()})
    values = {
        "format": "smartassign-train-state/1",
        "step": step,
        "optimizer": optim_values,
        "scheduler": scheduler.state_dict(),
        "rng": rng_values,
        "progress": progress,
    }
    atomic_write(state_tensors, lambda tmp: save_file(tensors, str(tmp)))
    atomic_write_text(state_path, json.dumps(values) + "\n")
    save_weights(model, weights, {"step": step, **meta})
    for _, old in list_checkpoints(run_dir)[:-keep_last]:
        remove_checkpoint(old)
    return weights


def remove_checkpoint(weights: Path) -> None:
    """Delete one training checkpoint, sidecar first so that it is never seen half-deleted."""
    for path in (sidecar(weights), weights, *_state_files(weights)):
        path.unlink(missing_ok=True)


def load_checkpoint(
    weights: Path,
    model: SmartAssignNet,
    optimizer: torch.optim.Optimizer,
    scheduler: Any,
    ema: torch.nn.Module | None = None,
) -> dict[str, Any]:
    """Load a training checkpoint into ``model``, ``optimizer``, ``scheduler`` and the RNGs; return its progress."""
    weights = Path(weights)
    state = load_state(weights)
    try:
        model.load_state_dict(state)
    except RuntimeError as exc:
        raise WeightsError(f"{weights}: does not fit this model ({str(exc).splitlines()[0]})") from None
    state_tensors, state_path = _state_files(weights)
    try:
        values = json.loads(state_path.read_text())
    except (OSError, json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise WeightsError(f"{state_path}: unreadable training state ({exc})") from None
    tensors = load_state(state_tensors)
    try:
        optimizer.load_state_dict(_join_optimizer(tensors, values["optimizer"], optimizer.state_dict()))
        scheduler.load_state_dict(values["scheduler"])
        set_rng_state(tensors, values["rng"])
        if ema is not None:
            ema.load_state_dict({k[4:]: v for k, v in tensors.items() if k.startswith("ema.")})
    except (KeyError, ValueError, TypeError, RuntimeError) as exc:
        raise WeightsError(f"{state_path}: training state does not fit this run ({exc})") from None
    return values["progress"]
