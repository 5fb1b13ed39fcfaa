"""Restorer: the inference wrapper around :class:`SmartAssignNet` for users' own images.

It takes numpy arrays or Pillow images of any size, picks the task with the
recognition head on a downscaled copy, restores the image tile by tile with
cosine-weighted overlap blending (so memory is bounded by the tile, not the
photo), clamps to [0, 1] and hands back the input's type, dtype and channels.

Accepted pixels: ``(H, W)`` or ``(H, W, C)`` with C = 1 (gray), 2 (gray +
alpha), 3 (RGB) or 4 (RGBA); ``uint8``, ``uint16`` or floating point in
[0, 1]. Gray is restored as three equal channels and returned as luma; alpha
is passed through untouched. Float input with NaN or infinity is rejected with
:class:`ImageError` (nothing is silently invented); finite values outside
[0, 1] are clipped, alpha included.
"""

from __future__ import annotations

import contextlib
import math
import time
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from smartassign.checkpoint import load_weights
from smartassign.config import TASKS
from smartassign.errors import ConfigError, ImageError, WeightsError
from smartassign.io import array_to_pil, pil_to_array
from smartassign.model import Output, SmartAssignNet

ImageLike = np.ndarray | Image.Image
# ITU-R BT.601 luma, the weights Pillow's convert("L") uses: restored gray comes back as luma.
_LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float32)


@dataclass
class Restored:
    """A restored image (same type, size, channels and dtype as the input) and how it was made."""

    image: ImageLike
    task: str  # "rain" or "snow"
    confidence: float | None  # recognition probability of ``task``; None when the caller chose the task
    seconds: float


def bundled_weights(name: str = "small") -> Path:
    """Path of the weights shipped in the package under ``name``; :class:`WeightsError` if not installed."""
    folder = Path(str(resources.files("smartassign") / "weights"))
    path = folder / f"{name}.safetensors"
    if not path.is_file():
        shipped = sorted(p.stem for p in folder.glob("*.safetensors"))
        raise WeightsError(
            f"{path}: no bundled weights named {name!r} (bundled: {', '.join(shipped) or 'none'}); "
            "pass the path of a .safetensors file, or reinstall the package"
        )
    return path


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """``"auto"`` -> CUDA when available, else CPU; :class:`ConfigError` for CUDA without a GPU."""
    if str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        resolved = torch.device(device)
    except (RuntimeError, TypeError) as exc:
        raise ConfigError(f"unknown device {device!r} ({exc}); use cpu, cuda or auto") from None
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError("CUDA was requested but no GPU is available; use --device cpu")
    return resolved


def tile_starts(length: int, tile: int, overlap: int) -> list[int]:
    """Start offsets of tiles of ``tile`` pixels covering ``length``, neighbours sharing >= ``overlap`` pixels."""
    if length <= tile:
        return [0]
    return list(range(0, length - tile, tile - overlap)) + [length - tile]


def blend_weights(start: int, size: int, length: int, overlap: int) -> np.ndarray:
    """``(size,)`` weights of one tile: 1 inside, a half-Hann ramp over ``overlap`` pixels toward each neighbour.

    Facing ramps sum to exactly 1 (``sin^2 + cos^2``), and no weight is 0, so
    normalising by the summed weights is exact wherever tiles meet.
    """
    w = np.ones(size, dtype=np.float32)
    ramp = np.sin(0.5 * np.pi * (np.arange(overlap, dtype=np.float32) + 0.5) / overlap) ** 2 if overlap else None
    if ramp is not None and start > 0:
        w[:overlap] = ramp
    if ramp is not None and start + size < length:
        w[-overlap:] = np.minimum(w[-overlap:], ramp[::-1])
    return w


def _split(pixels: np.ndarray) -> tuple[np.ndarray, np.ndarray | None, float]:
    """``(H, W[, C])`` pixels -> colour ``(H, W, 1 or 3)``, alpha ``(H, W, 1)`` or None, and the value of white."""
    if pixels.ndim == 2:
        pixels = pixels[..., None]
    if pixels.ndim != 3 or pixels.shape[2] not in (1, 2, 3, 4):
        raise ImageError(f"input array: shape {pixels.shape} is not (H, W) or (H, W, C) with C in 1..4")
    if pixels.shape[0] == 0 or pixels.shape[1] == 0:
        raise ImageError(f"input array: image has zero size {pixels.shape[:2]}")
    if pixels.dtype == np.uint8:
        scale = 255.0
    elif pixels.dtype == np.uint16:
        scale = 65535.0
    elif np.issubdtype(pixels.dtype, np.floating):
        bad = int(np.count_nonzero(~np.isfinite(pixels)))
        if bad:
            raise ImageError(f"input array: {bad} NaN or infinite values; replace them (e.g. numpy.nan_to_num)")
        scale = 1.0
    else:
        raise ImageError(f"input array: dtype {pixels.dtype} is not supported; use uint8, uint16 or float in [0, 1]")
    alpha = pixels[..., -1:] if pixels.shape[2] in (2, 4) else None
    colour = pixels[..., :-1] if alpha is not None else pixels
    if alpha is not None and scale == 1.0:
        alpha = np.clip(alpha, 0, 1)  # float output stays in [0, 1] like the restored colour
    return colour, alpha, scale


def _merge(rgb: np.ndarray, gray: bool, alpha: np.ndarray | None, dtype: np.dtype, scale: float) -> np.ndarray:
    """Float ``(H, W, 3)`` in [0, 1] -> the input's layout: gray as luma, alpha re-attached, ``dtype``."""
    out = (rgb @ _LUMA)[..., None] if gray else rgb
    if np.issubdtype(dtype, np.integer):
        out *= scale
        out += 0.5  # round to nearest on the cast below
        out = out.astype(dtype)
    else:
        out = out.astype(dtype, copy=False)
    return np.concatenate([out, alpha], axis=2) if alpha is not None else out


class Restorer:
    """Restore photos with a trained network: task detection, tiling, dtype and layout handling."""

    def __init__(
        self,
        model: SmartAssignNet,
        device: str | torch.device = "auto",
        tile: int | None = 512,
        overlap: int = 32,
        dtype: torch.dtype | None = None,
        detect_size: int = 512,
    ) -> None:
        tile = tile or None  # 0 means: the whole image at once
        if overlap < 0 or (tile is not None and tile <= 2 * overlap):
            raise ConfigError(f"tile {tile} must be larger than twice the overlap {overlap} (and overlap >= 0)")
        self.device = resolve_device(device)
        # bf16 on CUDA: half the memory and tensor cores; float32 on CPU, where bf16 is slow on most chips.
        self.dtype = dtype or (torch.bfloat16 if self.device.type == "cuda" else torch.float32)
        memory_format = torch.channels_last if self.device.type == "cuda" else torch.contiguous_format
        self.model = model.eval().to(self.device, memory_format=memory_format)
        self.memory_format = memory_format
        self.tile = tile
        self.overlap = overlap
        self.detect_size = detect_size

    @classmethod
    def from_weights(cls, path: str | Path | None = None, device: str | torch.device = "auto", **kw: Any) -> Restorer:
        """Load weights (``None``: the bundled ``small`` weights) and wrap them in a Restorer."""
        return cls(load_weights(Path(path) if path is not None else bundled_weights("small")), device, **kw)

    @property
    def tasks(self) -> tuple[str, ...]:
        """The tasks this model restores."""
        return tuple(self.model.cfg.tasks)

    @torch.inference_mode()
    def _forward(self, x: torch.Tensor) -> Output:
        """Run the network on a ``(1, 3, h, w)`` float tensor under inference mode and autocast."""
        autocast = (
            torch.autocast(self.device.type, dtype=self.dtype)
            if self.dtype != torch.float32
            else contextlib.nullcontext()
        )
        with autocast:
            return self.model(x.contiguous(memory_format=self.memory_format))

    def _tensor(self, pixels: np.ndarray, scale: float) -> torch.Tensor:
        """``(h, w, 1 or 3)`` pixels -> ``(1, 3, h, w)`` float32 in [0, 1] on the device."""
        x = torch.from_numpy(np.array(pixels)).to(self.device)  # a copy: PIL-backed arrays are read-only
        x = x.permute(2, 0, 1)[None].float().div_(scale).clamp_(0, 1)
        return x.expand(-1, 3, -1, -1) if x.shape[1] == 1 else x

    def detect(self, image: ImageLike) -> tuple[str, float]:
        """The task (``"rain"`` or ``"snow"``) the recognition head sees in ``image``, and its probability."""
        colour, _, scale = _split(pil_to_array(image) if isinstance(image, Image.Image) else image)
        return self._detect(colour, scale)

    def _detect(self, colour: np.ndarray, scale: float) -> tuple[str, float]:
        """Detection on an area-downscaled copy whose longest side is at most ``detect_size``."""
        if len(self.tasks) == 1:
            return self.tasks[0], 1.0
        if self.model.recognizer is None:
            raise ConfigError("this model has no recognition head; choose the task (rain or snow) yourself")
        h, w = colour.shape[:2]
        k = math.ceil(max(h, w) / self.detect_size)
        if k > 1:  # a box filter by an integer factor: cheap, alias-free, and no float copy of the full image
            ky, kx = min(k, h), min(k, w)
            h, w = h // ky * ky, w // kx * kx
            colour = colour[:h, :w].reshape(h // ky, ky, w // kx, kx, -1).mean(axis=(1, 3), dtype=np.float32)
        probs = self._forward(self._tensor(colour, scale)).logits.float().softmax(-1)[0]
        index = int(probs.argmax())
        return TASKS[index], float(probs[index])

    def _restore_tiled(self, colour: np.ndarray, scale: float, task: str) -> np.ndarray:
        """``(H, W, 1 or 3)`` pixels -> ``(H, W, 3)`` float32 in [0, 1], restored tile by tile and blended."""
        h, w = colour.shape[:2]
        tile = self.tile or max(h, w)
        out = np.zeros((h, w, 3), dtype=np.float32)
        weight = np.zeros((h, w, 1), dtype=np.float32)
        for y in tile_starts(h, tile, self.overlap):
            th = min(tile, h)
            wy = blend_weights(y, th, h, self.overlap)
            for x in tile_starts(w, tile, self.overlap):
                tw = min(tile, w)
                restored = self._forward(self._tensor(colour[y : y + th, x : x + tw], scale)).restored(task)
                pred = restored[0].float().clamp(0, 1).permute(1, 2, 0).cpu().numpy()
                wxy = wy[:, None, None] * blend_weights(x, tw, w, self.overlap)[None, :, None]
                out[y : y + th, x : x + tw] += pred * wxy
                weight[y : y + th, x : x + tw] += wxy
        out /= weight
        return np.clip(out, 0.0, 1.0, out=out)

    def restore(self, image: ImageLike, task: str = "auto") -> Restored:
        """Restore ``image`` (numpy ``(H, W[, C])`` or PIL) for ``task`` (``auto``, ``rain`` or ``snow``)."""
        start = time.perf_counter()
        pixels = pil_to_array(image) if isinstance(image, Image.Image) else image
        colour, alpha, scale = _split(pixels)
        if task == "auto":
            task, confidence = self._detect(colour, scale)
        elif task in self.tasks:
            confidence = None
        else:
            raise ConfigError(f"task {task!r} is not one of this model's tasks: auto, {', '.join(self.tasks)}")
        rgb = self._restore_tiled(colour, scale, task)
        out = _merge(rgb, colour.shape[2] == 1, alpha, pixels.dtype, scale)
        if pixels.ndim == 2:
            out = out[..., 0]
        result = array_to_pil(out) if isinstance(image, Image.Image) else out
        return Restored(result, task, confidence, time.perf_counter() - start)


__all__ = ["Restored", "Restorer", "blend_weights", "bundled_weights", "resolve_device", "tile_starts"]
