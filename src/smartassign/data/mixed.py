"""Labelled rain + snow training: on-the-fly synthetic pairs, a mixed dataset, and a per-batch balanced sampler."""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset, Sampler

from smartassign.config import DegradationConfig
from smartassign.data.corpus import load_downscaled
from smartassign.data.datasets import sample
from smartassign.data.engine import TASKS, Task, degrade
from smartassign.errors import ConfigError, DataError

LABELS: dict[str, int] = {"rain": 0, "snow": 1}

# The paper trains one rain and one snow set together (§4.1): rain tables pair each rain set with CSD, snow
# tables pair each snow set with Rain1200. Key: the evaluated set; value: (rain layout, snow layout).
PAPER_PAIRINGS: dict[str, tuple[str, str]] = {
    "rain_streak": ("rain_streak", "csd"),
    "rain1200": ("rain1200", "csd"),
    "spa": ("spa", "csd"),
    "snow100k": ("rain1200", "snow100k"),
    "srrs": ("rain1200", "srrs"),
    "csd": ("rain1200", "csd"),
}


class SyntheticPairs(Dataset):
    """``length`` synthetic (degraded, clean) crops of ``photos``; index ``i`` always gives the same bytes.

    Each index seeds its own generator from ``(seed, task, i)``, which picks the photo, the crop, the augmentation
    (random zoom, flips, 90° turns when ``augment``) and every degradation parameter. Both images are quantized to
    8 bits, exactly as ``smartassign data synth`` writes them. Photos are decoded once, downscaled to
    ``max_side`` and cached on disk and in memory, so a crop costs only the synthesis.
    """

    def __init__(
        self,
        photos: Sequence[Path],
        task: Task,
        crop: int = 256,
        length: int = 1000,
        seed: int = 0,
        augment: bool = True,
        max_side: int = 768,
        degradation: str | DegradationConfig = "mixed",
    ) -> None:
        if task not in TASKS:
            raise ConfigError(f"unknown task {task!r}; expected one of {TASKS}")
        if not photos:
            raise DataError("no clean photographs given to SyntheticPairs")
        if length < 1 or crop < 8:
            raise ConfigError(f"SyntheticPairs needs length >= 1 and crop >= 8, got {length} and {crop}")
        self.photos = [Path(p) for p in photos]
        self.task, self.crop, self.length, self.seed, self.augment = task, crop, length, seed, augment
        self.max_side = max(max_side, crop)
        self.label = LABELS[task]
        self.degradation = degradation
        self._cache: dict[int, np.ndarray] = {}

    def __len__(self) -> int:
        return self.length

    def _photo(self, k: int) -> np.ndarray:
        if k not in self._cache:
            self._cache[k] = load_downscaled(self.photos[k], self.max_side)
        return self._cache[k]

    def _clean_crop(self, rng: np.random.Generator) -> tuple[np.ndarray, dict[str, Any]]:
        k = int(rng.integers(len(self.photos)))
        photo = self._photo(k)
        h, w = photo.shape[:2]
        # A random zoom (up to 2x less magnification) multiplies the distinct crops a few dozen photos offer.
        zoom = float(rng.uniform(0.5, 1.0)) if self.augment else 1.0
        side = min(max(int(round(self.crop / zoom)), self.crop), h, w)
        y, x = int(rng.integers(0, h - side + 1)), int(rng.integers(0, w - side + 1))
        patch = photo[y : y + side, x : x + side]
        if side != self.crop:  # shrinking for zoom, or enlarging a photo smaller than the crop
            patch = np.asarray(Image.fromarray(patch).resize((self.crop, self.crop), Image.Resampling.BILINEAR))
        flip_h = flip_v = False
        turns = 0
        if self.augment:
            flip_h, flip_v, turns = bool(rng.random() < 0.5), bool(rng.random() < 0.5), int(rng.integers(0, 4))
            patch = np.rot90(patch[::-1] if flip_v else patch, turns)
            patch = patch[:, ::-1] if flip_h else patch
        clean = np.ascontiguousarray(patch, dtype=np.float32) / 255.0
        meta = {
            "photo": str(self.photos[k]),
            "box_yxs": [y, x, side],
            "flip_h": flip_h,
            "flip_v": flip_v,
            "rot90": turns,
        }
        return clean, meta

    def generate(self, index: int) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
        """Pair ``index`` as float32 (crop, crop, 3) degraded and clean on the 8-bit grid, plus every parameter."""
        if not 0 <= index < self.length:
            raise IndexError(f"index {index} out of range for {self.length} synthetic pairs")
        rng = np.random.default_rng((self.seed, self.label, index))
        clean, meta = self._clean_crop(rng)
        seed = int(rng.integers(2**32))
        batch = torch.from_numpy(clean).permute(2, 0, 1)[None]
        out, params = degrade(batch, self.task, cfg=self.degradation, seeds=[seed])
        degraded = (torch.round(out[0].permute(1, 2, 0) * 255.0) / 255.0).numpy()
        meta = {"task": self.task, "index": index, **meta, "seed": seed, "params": _plain(params)}
        return degraded.astype(np.float32), clean, meta

    def __getitem__(self, index: int) -> dict[str, Any]:
        degraded, clean, meta = self.generate(index)
        return sample(degraded, clean, self.label, f"{self.task}-{index:06d}", not meta["params"].get("clear", False))


def _plain(params: dict[str, Any]) -> dict[str, Any]:
    """The engine's parameters of one sample as JSON-able numbers."""
    out: dict[str, Any] = {}
    for k, v in params.items():
        if isinstance(v, dict):
            out[k] = _plain(v)
        elif isinstance(v, torch.Tensor):
            out[k] = v.reshape(-1)[0].item()
        elif isinstance(v, list):
            out[k] = v[0]
    return out


class MixedDataset(Dataset):
    """Rain samples at indices ``[0, n_rain)``, then snow samples; each keeps its own dataset's label."""

    def __init__(self, rain_ds: Dataset, snow_ds: Dataset) -> None:
        self.rain_ds, self.snow_ds = rain_ds, snow_ds
        self.n_rain, self.n_snow = len(rain_ds), len(snow_ds)  # type: ignore[arg-type]
        if self.n_rain == 0 or self.n_snow == 0:
            raise DataError(f"mixed training needs both tasks; got {self.n_rain} rain and {self.n_snow} snow samples")

    def __len__(self) -> int:
        return self.n_rain + self.n_snow

    def __getitem__(self, index: int) -> dict[str, Any]:
        if index < self.n_rain:
            return self.rain_ds[index]
        return self.snow_ds[index - self.n_rain]


class BalancedBatchSampler(Sampler[list[int]]):
    """Batches of MixedDataset indices, half rain then half snow, reshuffled each epoch and sharded across ranks.

    An epoch covers the larger task once; the smaller one repeats through fresh permutations. The batches are
    dealt round-robin to ``world_size`` ranks and cut to a common count, so every DDP rank takes the same number
    of steps and, within an epoch, no two ranks read the same sample of a task that did not need repeating.
    """

    def __init__(
        self, n_rain: int, n_snow: int, batch_size: int, seed: int, rank: int = 0, world_size: int = 1
    ) -> None:
        if batch_size < 2 or batch_size % 2:
            raise ConfigError(f"a balanced batch needs an even batch size >= 2, got {batch_size}")
        if n_rain < 1 or n_snow < 1:
            raise DataError(f"balanced batches need both tasks; got {n_rain} rain and {n_snow} snow samples")
        if not 0 <= rank < world_size:
            raise ConfigError(f"rank {rank} is outside world size {world_size}")
        self.n_rain, self.n_snow, self.batch_size = n_rain, n_snow, batch_size
        self.seed, self.rank, self.world_size = seed, rank, world_size
        self.epoch = 0
        half = batch_size // 2
        self._total = math.ceil(max(n_rain, n_snow) / half)
        if self._total < world_size:
            raise DataError(f"{self._total} balanced batches cannot feed {world_size} ranks; use more data or fewer")

    def set_epoch(self, epoch: int) -> None:
        """Reshuffle for ``epoch`` (call before iterating, as with DistributedSampler)."""
        self.epoch = epoch

    def __len__(self) -> int:
        return self._total // self.world_size

    @staticmethod
    def _stream(n: int, count: int, rng: np.random.Generator) -> np.ndarray:
        reps = math.ceil(count / n)
        return np.concatenate([rng.permutation(n) for _ in range(reps)])[:count]

    def __iter__(self) -> Iterator[list[int]]:
        rng = np.random.default_rng((self.seed, self.epoch))
        half = self.batch_size // 2
        rain = self._stream(self.n_rain, self._total * half, rng).reshape(self._total, half)
        snow = self._stream(self.n_snow, self._total * half, rng).reshape(self._total, half) + self.n_rain
        batches = np.concatenate([rain, snow], axis=1)
        mine = batches[self.rank :: self.world_size][: len(self)]
        for batch in mine:
            yield batch.tolist()


def mixed_loader(
    rain_ds: Dataset,
    snow_ds: Dataset,
    batch_size: int,
    seed: int,
    workers: int = 0,
    rank: int = 0,
    world_size: int = 1,
) -> DataLoader:
    """A DataLoader of balanced rain+snow batches (``input`` (B, 3, H, W), ``target``, ``label`` (B,), ``name``).

    Call ``loader.batch_sampler.set_epoch(epoch)`` each epoch. Workers persist between epochs so photo caches and
    decoded files stay warm.
    """
    mixed = MixedDataset(rain_ds, snow_ds)
    sampler = BalancedBatchSampler(mixed.n_rain, mixed.n_snow, batch_size, seed, rank, world_size)
    return DataLoader(
        mixed,
        batch_sampler=sampler,
        num_workers=workers,
        persistent_workers=workers > 0,
        pin_memory=torch.cuda.is_available(),
        generator=torch.Generator().manual_seed(seed * 1009 + rank),  # per-rank worker seeds, reproducible
    )
