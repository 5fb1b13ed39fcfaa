"""Small in-memory paired datasets and experiments for the training tests (fast on one CPU thread)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from smartassign.config import DataConfig, Experiment, LossConfig, TrainConfig, model_config
from smartassign.train import TrainData


class StripePairs(Dataset):
    """``n`` smooth clean images with rain-like stripes (label 0) or snow-like dots (label 1) added.

    Each read flips the pair with a coin from torch's global RNG, like ``PairedDataset``'s augmentation, so
    the tests see whether the training loop makes that randomness reproducible (``flip=False``: no coin).
    ``nan`` poisons every input.
    """

    def __init__(self, n: int, size: int, label: int, seed: int = 0, nan: bool = False, flip: bool = True) -> None:
        self.n, self.size, self.label, self.seed, self.nan, self.flip = n, size, label, seed, nan, flip

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, index: int) -> dict[str, Any]:
        rng = np.random.default_rng((self.seed, self.label, index))
        s = self.size
        yy, xx = np.mgrid[:s, :s] / s
        clean = np.stack([0.5 + 0.3 * np.sin(2 * np.pi * (rng.random() * 2 * xx + rng.random() * yy + c / 3))
                          for c in range(3)])  # fmt: skip
        if self.label == 0:
            mask = ((np.arange(s)[None, :] + 2 * np.arange(s)[:, None] + index) % 7 == 0).astype(np.float64)
        else:
            mask = (rng.random((s, s)) < 0.05).astype(np.float64)
        degraded = np.clip(clean + 0.4 * mask, 0, 1)
        pair = torch.from_numpy(np.stack([degraded, clean])).float()
        if self.flip and torch.rand(()) < 0.5:
            pair = pair.flip(-1)
        if self.nan:
            pair[0, 0, 0, 0] = float("nan")
        return {"input": pair[0], "target": pair[1], "label": torch.tensor(self.label), "name": f"{self.label}-{index}"}


def stripe_data(n: int = 8, size: int = 24, val: int = 2, nan: bool = False) -> TrainData:
    """Rain and snow training sets of ``n`` pairs and validation sets of ``val`` pairs (a different seed)."""
    return TrainData(
        train={"rain": StripePairs(n, size, 0, nan=nan), "snow": StripePairs(n, size, 1, nan=nan)},
        val={t: StripePairs(val, 32, i, seed=1, flip=False) for i, t in enumerate(("rain", "snow"))} if val else {},
    )


def tiny_experiment(out_dir: Path, variant: str = "V6", **train: Any) -> Experiment:
    """A width-8 tiny network on CPU, batch 2, no progress bar, no TensorBoard; ``train`` overrides TrainConfig."""
    settings: dict[str, Any] = dict(out_dir=str(out_dir), device="cpu", steps=4, batch_size=2, lr=1e-3,
                                    log_every=1, val_every=2, sample_every=2, ckpt_every=2, keep_last=2,
                                    plateau_every=2, plateau_patience=0, tensorboard=False, progress=False)  # fmt: skip
    settings.update(train)
    return Experiment(
        model=model_config("tiny", variant, width=8),
        loss=LossConfig(),
        data=DataConfig(workers=0),
        train=TrainConfig(**settings),
        preset="tiny",
        variant=variant,
    )
