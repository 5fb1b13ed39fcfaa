"""Restorer: the inference wrapper around :class:`SmartAssignNet` for users' own images.

It takes numpy arrays or Pillow images of any size and restores them tile by tile with cosine-weighted overlap
blending (so memory is bounded by the tile, not the photo), in one pass: each tile's network pass gives both the
recognition logits and the restorations of the tasks that can still be chosen. The task is the one with the
larger mean recognition probability over the image (each tile weighted by the pixels it contributes); once the
tiles left cannot change that, the other head is no longer computed. The result is clamped to [0, 1] and handed
back in the input's type, dtype and channels.

Test-time local statistics (TLC, on by default): the network's channel gates and channel attention pool over a
window of the training crop's size (``tlc``, input pixels) instead of their whole input, so a photo larger than
the crops the weights were trained on sees the statistics training saw, and the tiling barely changes the result.

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
from torch import nn

from smartassign.checkpoint import load_weights, read_sidecar
from smartassign.config import TASKS
from smartassign.errors import ConfigError, ImageError, WeightsError
from smartassign.io import array_to_pil, pil_to_array
from smartassign.layers import ChannelAttention, ChannelGate
from smartassign.model import Output, SmartAssignNet

ImageLike = np.ndarray | Image.Image
# ITU-R BT.601 luma, the weights Pillow's convert("L") uses: restored gray comes back as luma.
_LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float32)
# The crop the bundled weights were trained on: the TLC window when the weights do not say theirs.
TLC_WINDOW = 192


@dataclass
class Restored:
    """A restored image (same type, size, channels and dtype as the input) and how it was made."""

    image: ImageLike
    task: str  # "rain" or "snow"
    confidence: float | None  # mean recognition probability of ``task``; None when the caller chose the task
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


NATIVE_BF16_FLAGS = ("amx_bf16", "avx512_bf16")
PRECISIONS = ("auto", "float32", "bf16")


def native_bf16_flags(cpuinfo: str | None = None) -> list[str]:
    """The CPU flags that make bf16 fast on this CPU (AMX, AVX512-BF16), read from ``/proc/cpuinfo``.

    Empty where the CPU has none of them, or the file is missing (not Linux): there bf16 is emulated and slower
    than float32."""
    if cpuinfo is None:
        try:
            cpuinfo = Path("/proc/cpuinfo").read_text()
        except OSError:
            return []
    flags = next((line.split(":", 1)[1].split() for line in cpuinfo.splitlines() if line.startswith("flags")), [])
    return [f for f in NATIVE_BF16_FLAGS if f in flags]


def precision_dtype(precision: str, device: torch.device) -> torch.dtype:
    """``"auto"``: bf16 on CUDA and on a CPU with native bf16 (about 2x float32 there, pictures within 1e-3),
    else float32; ``"float32"`` / ``"bf16"``: that. :class:`ConfigError` for anything else."""
    if precision not in PRECISIONS:
        raise ConfigError(f"unknown precision {precision!r}; choose from {', '.join(PRECISIONS)}")
    if precision == "auto":
        fast = device.type == "cuda" or bool(native_bf16_flags())
        return torch.bfloat16 if fast else torch.float32
    return torch.bfloat16 if precision == "bf16" else torch.float32


def trained_crop(path: str | Path) -> int:
    """The last training crop recorded in the sidecar of weights ``path`` (the last side of
    ``experiment.data.progressive``, else ``experiment.data.crop``), else TLC_WINDOW."""
    data = read_sidecar(Path(path)).get("experiment", {}).get("data", {})
    progressive = data.get("progressive") or []
    crop = progressive[-1][1] if progressive and isinstance(progressive[-1], (list, tuple)) else data.get("crop")
    return crop if isinstance(crop, int) and not isinstance(crop, bool) and crop > 0 else TLC_WINDOW


def set_local_statistics(model: SmartAssignNet, window: int | None) -> None:
    """TLC: pool every channel gate and channel attention of ``model`` over ``window`` input pixels (None: globally).

    Each module's window is ``window`` divided by the stride of the map it sees, which a forward pass on an
    image of one padding multiple reveals. Only eval mode uses the windows.
    """
    modules = [m for m in model.modules() if isinstance(m, ChannelGate | ChannelAttention)]
    side = model.cfg.pad_multiple
    seen: dict[nn.Module, int] = {}

    def record(module: nn.Module, args: tuple[torch.Tensor, ...]) -> None:
        seen.setdefault(module, args[0].shape[-1])

    hooks = [m.register_forward_pre_hook(record) for m in modules]
    param = next(model.parameters())
    try:
        with torch.no_grad():
            model(torch.zeros(1, 3, side, side, device=param.device, dtype=param.dtype))
    finally:
        for hook in hooks:
            hook.remove()
    for m in modules:
        m.local_window = None if window is None else max(1, round(window * seen[m] / side))


def tile_size(length: int, tile: int, overlap: int, multiple: int = 8) -> int:
    """Side of the tiles along ``length``: as few tiles of at most ``tile`` as cover it, then as small as they can be.

    ``n = ceil((length - overlap) / (tile - overlap))`` tiles, each ``ceil((length + (n - 1) overlap) / n)``
    rounded up to ``multiple`` (the network pads to one) but never beyond ``tile`` or ``length``: a 1024 side in
    512 tiles is 3 tiles of 368, not 3 of 512 (1104 pixels processed instead of 1536).
    """
    if length <= tile:
        return length
    n = math.ceil((length - overlap) / (tile - overlap))
    size = math.ceil((length + (n - 1) * overlap) / n)
    return min(-(-size // multiple) * multiple, tile, length)


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


def split_pixels(pixels: np.ndarray) -> tuple[np.ndarray, np.ndarray | None, float]:
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
    """Restore photos with a trained network: one pass per tile for the task and its restoration, TLC, layouts."""

    def __init__(
        self,
        model: SmartAssignNet,
        device: str | torch.device = "auto",
        tile: int | None = 512,
        overlap: int = 32,
        dtype: torch.dtype | str | None = None,
        tlc: int | None = TLC_WINDOW,
    ) -> None:
        tile = tile or None  # 0 means: the whole image at once
        if overlap < 0 or (tile is not None and tile <= 2 * overlap):
            raise ConfigError(f"tile {tile} must be larger than twice the overlap {overlap} (and overlap >= 0)")
        self.device = resolve_device(device)
        # None: bf16 on CUDA (half the memory, tensor cores), float32 on CPU, reproducible on every chip (evaluation and
        # the gate use this). A precision name (PRECISIONS) is resolved for this device: the user-facing entry points
        # pass "auto", bf16 where it is fast.
        if isinstance(dtype, str):
            dtype = precision_dtype(dtype, self.device)
        self.dtype = dtype or (torch.bfloat16 if self.device.type == "cuda" else torch.float32)
        memory_format = torch.channels_last if self.device.type == "cuda" else torch.contiguous_format
        self.model = model.eval().to(self.device, memory_format=memory_format)
        self.memory_format = memory_format
        self.tile = tile
        self.overlap = overlap
        self.tlc = tlc

    @classmethod
    def from_weights(cls, path: str | Path | None = None, device: str | torch.device = "auto", **kw: Any) -> Restorer:
        """Load weights (``None``: the bundled ``small`` weights); TLC by default over the crop they were trained on."""
        path = Path(path) if path is not None else bundled_weights("small")
        model = load_weights(path)
        kw.setdefault("tlc", trained_crop(path))
        return cls(model, device, **kw)

    @property
    def tasks(self) -> tuple[str, ...]:
        """The tasks this model restores."""
        return tuple(self.model.cfg.tasks)

    @property
    def tlc(self) -> int | None:
        """Side in input pixels of the test-time local statistics window; None: global pools, as in training."""
        return self._tlc

    @tlc.setter
    def tlc(self, window: int | None) -> None:
        if window is not None and window < 1:
            raise ConfigError(f"the TLC window must be at least 1 pixel, got {window}")
        set_local_statistics(self.model, window)
        self._tlc = window

    @torch.inference_mode()
    def _forward(self, x: torch.Tensor, tasks: tuple[str, ...]) -> Output:
        """Run the network for ``tasks`` on a ``(1, 3, h, w)`` float tensor under inference mode and autocast."""
        autocast = (
            torch.autocast(self.device.type, dtype=self.dtype)
            if self.dtype != torch.float32
            else contextlib.nullcontext()
        )
        with autocast:
            return self.model(x.contiguous(memory_format=self.memory_format), tasks=tasks)

    def _tensor(self, pixels: np.ndarray, scale: float) -> torch.Tensor:
        """``(h, w, 1 or 3)`` pixels -> ``(1, 3, h, w)`` float32 in [0, 1] on the device."""
        x = torch.from_numpy(np.array(pixels)).to(self.device)  # a copy: PIL-backed arrays are read-only
        x = x.permute(2, 0, 1)[None].float().div_(scale).clamp_(0, 1)
        return x.expand(-1, 3, -1, -1) if x.shape[1] == 1 else x

    def _candidates(self, task: str) -> tuple[str, ...]:
        """The tasks ``task`` ("auto" or one of them) may end up as; :class:`ConfigError` if it cannot be chosen."""
        if task == "auto":
            if len(self.tasks) > 1 and self.model.recognizer is None:
                raise ConfigError("this model has no recognition head; choose the task (rain or snow) yourself")
            return self.tasks
        if task not in self.tasks:
            raise ConfigError(f"task {task!r} is not one of this model's tasks: auto, {', '.join(self.tasks)}")
        return (task,)

    def _tiles(self, h: int, w: int) -> list[tuple[slice, slice, np.ndarray, np.ndarray]]:
        """Tiles of an ``h x w`` image: rows, columns and the blend weights along each, normalised so that all
        tiles' weights ``wy[:, None] * wx[None, :]`` sum to 1 at every pixel."""
        axes = []
        for length in (h, w):
            size = tile_size(length, self.tile or length, self.overlap, self.model.cfg.pad_multiple)
            starts = tile_starts(length, size, self.overlap)
            weights = [blend_weights(s, size, length, self.overlap) for s in starts]
            total = np.zeros(length, dtype=np.float32)
            for s, wt in zip(starts, weights, strict=True):
                total[s : s + size] += wt
            axes.append([(slice(s, s + size), wt / total[s : s + size]) for s, wt in zip(starts, weights, strict=True)])
        return [(rows, cols, wy, wx) for rows, wy in axes[0] for cols, wx in axes[1]]

    def _run(
        self, colour: np.ndarray, scale: float, candidates: tuple[str, ...], restore: bool, drop: bool = True
    ) -> tuple[dict[str, np.ndarray], np.ndarray | None]:
        """One pass over the tiles of ``(H, W, 1 or 3)`` pixels: ``(H, W, 3)`` float32 restorations in [0, 1] of the
        candidates still able to win (every candidate when ``drop`` is False; none when ``restore`` is False), and
        the ``(2,)`` mean recognition probabilities over the image (None with one candidate).

        Each tile's probabilities count by its share of the image, the sum of its blend weights (all shares sum
        to ``H * W``). A candidate is dropped once it cannot win even if every tile left voted for it; the margin
        keeps rounding from dropping the winner (ties go to rain, as argmax does).
        """
        h, w = colour.shape[:2]
        recognise = len(candidates) > 1 and self.model.recognizer is not None
        out = {t: np.zeros((h, w, 3), dtype=np.float32) for t in candidates} if restore else {}
        tiles = self._tiles(h, w)
        shares = np.array([float(wy.sum()) * float(wx.sum()) for *_, wy, wx in tiles])
        left = np.concatenate([np.cumsum(shares[::-1])[::-1][1:], [0.0]])  # shares of the tiles after each
        margin = 1e-6 * shares.sum()
        votes = np.zeros(2)  # sums of share x probability of (rain, snow), the logits' order (TASKS)
        for (rows, cols, wy, wx), share, rest in zip(tiles, shares, left, strict=True):
            wanted = (*out, "recognition") if recognise else tuple(out)
            result = self._forward(self._tensor(colour[rows, cols], scale), wanted)
            for t, acc in out.items():
                pred = result.restored(t)[0].float().clamp(0, 1).permute(1, 2, 0).cpu().numpy()
                acc[rows, cols] += pred * wy[:, None, None] * wx[None, :, None]
            if recognise:
                votes += share * result.logits[0].float().softmax(-1).cpu().numpy()
                rain, snow = votes
                lost = {"rain": rain + rest < snow - margin, "snow": snow + rest < rain - margin}
                out = {t: acc for t, acc in out.items() if not (drop and lost[t])}
        for acc in out.values():
            np.clip(acc, 0.0, 1.0, out=acc)
        return out, (votes / votes.sum() if recognise else None)

    def detect(self, image: ImageLike) -> tuple[str, float]:
        """The task (``"rain"`` or ``"snow"``) the recognition head sees in ``image``, and its mean probability.

        The same tiles as :meth:`restore`, each weighted by the pixels it contributes; a recognition-only pass.
        """
        colour, _, scale = split_pixels(pil_to_array(image) if isinstance(image, Image.Image) else image)
        candidates = self._candidates("auto")
        if len(candidates) == 1:
            return candidates[0], 1.0
        probs = self._run(colour, scale, candidates, restore=False)[1]
        assert probs is not None
        index = int(probs.argmax())
        return TASKS[index], float(probs[index])

    def restore_each(self, image: np.ndarray) -> tuple[dict[str, np.ndarray], str | None, float | None]:
        """Every head's restoration of ``image`` (numpy ``(H, W, 3)``) in one pass, none dropped, as float32
        ``(H, W, 3)`` in [0, 1]; and the task the recognition head picks with its probability (a one-task model:
        its task and None; two tasks without a recognition head: None, None). For evaluation: the true head's and
        the recognised head's pictures at once."""
        colour, _, scale = split_pixels(image)
        restorations, probs = self._run(colour, scale, self.tasks, restore=True, drop=False)
        if probs is None:
            return restorations, (self.tasks[0] if len(self.tasks) == 1 else None), None
        index = int(probs.argmax())
        return restorations, TASKS[index], float(probs[index])

    def restore(self, image: ImageLike, task: str = "auto") -> Restored:
        """Restore ``image`` (numpy ``(H, W[, C])`` or PIL) for ``task`` (``auto``, ``rain`` or ``snow``)."""
        start = time.perf_counter()
        pixels = pil_to_array(image) if isinstance(image, Image.Image) else image
        colour, alpha, scale = split_pixels(pixels)
        candidates = self._candidates(task)
        restorations, probs = self._run(colour, scale, candidates, restore=True)
        if probs is None:
            chosen, confidence = candidates[0], (1.0 if task == "auto" else None)
        else:
            index = int(probs.argmax())
            chosen, confidence = TASKS[index], float(probs[index])
        out = _merge(restorations[chosen], colour.shape[2] == 1, alpha, pixels.dtype, scale)
        if pixels.ndim == 2:
            out = out[..., 0]
        result = array_to_pil(out) if isinstance(image, Image.Image) else out
        return Restored(result, chosen, confidence, time.perf_counter() - start)


__all__ = [
    "TLC_WINDOW",
    "Restored",
    "Restorer",
    "blend_weights",
    "bundled_weights",
    "resolve_device",
    "set_local_statistics",
    "split_pixels",
    "tile_size",
    "tile_starts",
    "trained_crop",
]
