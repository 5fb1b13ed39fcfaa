"""Overfitting one rain batch and one snow batch: the network and losses can learn."""

from __future__ import annotations

import numpy as np
import torch
from skimage import data as skdata
from skimage.transform import resize

from smartassign.config import LossConfig
from smartassign.losses import total_loss
from smartassign.model import build_model


def _psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(10 * torch.log10(1.0 / torch.mean((a.clamp(0, 1) - b) ** 2)))


def _pair_batch(size: int = 32) -> dict[str, torch.Tensor]:
    """Two clean crops; the first gets diagonal streaks (rain), the second bright blobs (snow)."""
    rng = np.random.default_rng(0)
    img = resize(skdata.astronaut(), (size * 2, size * 2), anti_aliasing=True).astype(np.float32)
    clean = np.stack([img[:size, :size], img[size:, size:]])
    yy, xx = np.mgrid[:size, :size]
    streaks = (((xx + 2 * yy) % 9) == 0).astype(np.float32) * 0.5
    blobs = np.zeros((size, size), np.float32)
    for cy, cx in rng.integers(2, size - 2, size=(12, 2)):
        blobs = np.maximum(blobs, np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / 2.0))
    degraded = clean.copy()
    # Each with a veil (haze), as in the Rain1200 and Snow100K families.
    degraded[0] = np.clip(0.8 * clean[0] + 0.15 + streaks[..., None], 0, 1)
    degraded[1] = (0.8 * clean[1] + 0.15) * (1 - blobs[..., None]) + blobs[..., None]
    to_t = lambda a: torch.from_numpy(a).permute(0, 3, 1, 2).contiguous()  # noqa: E731
    return {"input": to_t(degraded), "target": to_t(clean), "label": torch.tensor([0, 1])}


def test_tiny_overfits_a_rain_and_a_snow_batch() -> None:
    torch.manual_seed(0)
    model = build_model("tiny")
    batch = _pair_batch()
    opt = torch.optim.Adam(model.parameters(), lr=2e-3)
    cfg = LossConfig()
    first = None
    for _ in range(150):
        out = model(batch["input"])
        terms = total_loss(out, batch, cfg)
        if first is None:
            first = {k: v.item() for k, v in terms.items()}
        opt.zero_grad()
        terms["total"].backward()
        opt.step()
    model.eval()
    with torch.no_grad():
        out = model(batch["input"])
        last = total_loss(out, batch, cfg)
    assert last["total"].item() < 0.35 * first["total"]
    assert last["char"].item() < 0.6 * first["char"]
    for i, head in enumerate((out.derain, out.desnow)):
        before = _psnr(batch["input"][i], batch["target"][i])
        after = _psnr(head[i], batch["target"][i])
        assert after > before + 1.0, f"sample {i}: {before:.2f} dB -> {after:.2f} dB"
    assert out.logits.argmax(dim=1).tolist() == [0, 1]
