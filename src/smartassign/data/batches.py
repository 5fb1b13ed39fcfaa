"""Synthetic training batches made on the training device: no workers, no host round trip per sample.

The clean photographs are decoded once into uint8 tensors that live on the device; each batch draws random
crops (zoom, flips, 90° turns, mild colour jitter), half rain and half snow, and degrades them with the engine.
Batch ``k`` of rank ``r`` is a pure function of ``(seed, k, r)``, so a resumed run continues exactly and DDP
ranks never repeat one another.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from smartassign.config import DegradationConfig, degradation_mix
from smartassign.data.corpus import load_downscaled
from smartassign.data.engine import TASKS, degrade, uniform
from smartassign.errors import ConfigError, DataError

_S_CROP = 11  # hash stream of the clean side (the engine uses streams below 10 and per-layer offsets)


class SyntheticBatches:
    """Balanced rain + snow batches ``{"input", "target", "label", "weather"}`` on ``device`` from a cache of
    photos (``weather``: False where the engine left the sample clear, see :func:`smartassign.data.sample`)."""

    def __init__(
        self,
        photos: Sequence[Path],
        crop: int,
        batch_size: int,
        seed: int,
        device: torch.device | str = "cpu",
        degradation: str | DegradationConfig = "mixed",
        tasks: Sequence[str] = TASKS,
        rank: int = 0,
        world_size: int = 1,
        max_side: int = 768,
        crops: Sequence[tuple[int, int]] = (),
    ) -> None:
        """``crops``: progressive crop sides as (first step, side) pairs; before the first (or without): ``crop``."""
        if not photos:
            raise DataError("no clean photographs for synthetic training")
        if batch_size < len(tasks) or batch_size % len(tasks):
            raise ConfigError(f"batch size {batch_size} must be a positive multiple of the {len(tasks)} tasks")
        self.device = torch.device(device)
        self.crop, self.batch_size, self.seed = crop, batch_size, seed
        self.rank, self.world_size = rank, world_size
        self.cfg = degradation_mix(degradation) if isinstance(degradation, str) else degradation
        self.tasks = list(tasks)
        self.crops = sorted((int(k), int(c)) for k, c in crops)
        side = max(max_side, crop, *(c for _, c in self.crops))
        self.photos = [
            torch.from_numpy(load_downscaled(p, side)).permute(2, 0, 1).contiguous().to(self.device) for p in photos
        ]
        self.labels = torch.tensor([TASKS.index(t) for t in self.tasks], device=self.device)  # type: ignore[arg-type]

    def seeds(self, step: int) -> torch.Tensor:
        """Per-sample 32-bit seeds of batch ``step`` on this rank: ``(B,)``."""
        base = ((self.seed * 1_000_003 + step) * 4099 + self.rank) * 257
        return (torch.arange(self.batch_size, dtype=torch.int64) + base) & 0xFFFFFFFF

    def crop_at(self, step: int) -> int:
        """The crop side of batch ``step``."""
        side = self.crop
        for first, c in self.crops:
            if step >= first:
                side = c
        return side

    def clean(self, seeds: torch.Tensor, crop: int | None = None) -> torch.Tensor:
        """Random clean crops ``(B, 3, crop, crop)`` float in [0, 1] (default side ``self.crop``), one per seed."""
        crop = crop or self.crop
        u = uniform(seeds, _S_CROP, (12,), torch.device("cpu")).tolist()
        out = []
        for r in u:
            photo = self.photos[int(r[0] * len(self.photos))]
            h, w = photo.shape[-2:]
            zoom = 0.5 + 0.5 * r[1]  # up to 2x less magnification: more distinct crops from few photos
            side = min(max(round(crop / zoom), crop), h, w)
            y, x = int(r[2] * (h - side + 1)), int(r[3] * (w - side + 1))
            patch = photo[:, y : y + side, x : x + side].float()[None] / 255
            if side != crop:
                mode = "area" if side > crop else "bilinear"
                patch = F.interpolate(patch, size=(crop, crop), mode=mode)
            if r[4] < 0.5:
                patch = patch.flip(-1)
            if r[5] < 0.5:
                patch = patch.flip(-2)
            patch = torch.rot90(patch, int(r[6] * 4), dims=(-2, -1))
            out.append(patch)
        x = torch.cat(out)
        # Mild colour jitter: exposure, contrast and saturation within a few percent.
        jit = torch.tensor([[r[7], r[8], r[9]] for r in u], device=x.device)
        gain = (0.9 + 0.2 * jit[:, 0])[:, None, None, None]
        mean = x.mean(dim=(1, 2, 3), keepdim=True)
        contrast = (0.9 + 0.2 * jit[:, 1])[:, None, None, None]
        grey = x.mean(dim=1, keepdim=True)
        sat = (0.85 + 0.3 * jit[:, 2])[:, None, None, None]
        x = grey + (x - grey) * sat
        x = (mean + (x - mean) * contrast) * gain
        return x.clamp(0, 1)

    def batch(self, step: int) -> dict[str, Any]:
        """Batch ``step``: degraded ``input`` and clean ``target`` on the 8-bit grid, ``label`` and ``weather`` (B,)."""
        seeds = self.seeds(step)
        target = self.clean(seeds, self.crop_at(step))
        target = torch.round(target * 255) / 255
        per = self.batch_size // len(self.tasks)
        tasks = [t for t in self.tasks for _ in range(per)]
        degraded, params = degrade(target, tasks, cfg=self.cfg, seeds=seeds)
        clear = params.get("clear", torch.zeros(len(tasks), dtype=torch.bool))
        return {
            "input": torch.round(degraded * 255) / 255,
            "target": target,
            "label": self.labels.repeat_interleave(per),
            "weather": ~clear.to(self.device),
        }


__all__ = ["SyntheticBatches"]
