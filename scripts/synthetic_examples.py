"""Render docs/images/synthetic_examples.jpg: the engine across its range on held-out photographs.

Columns are held-out, public-domain or CC0 photos (so the picture needs no attribution); the first row is the
clean crop, then light, mixed and heavy rain, then light, mixed and heavy snow (``smartassign.data.degrade`` with
each named mix). Each cell is labelled with its input PSNR-Y against the clean crop (measured before the grid is
saved; a ``.jpg`` grid is saved at quality 90 without chroma subsampling, to keep the file under 1 MB).

    .venv/bin/python scripts/synthetic_examples.py [OUT.jpg|OUT.png]
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw

from smartassign.data import clean_photos, degrade, load_downscaled
from smartassign.metrics import psnr, rgb_to_y, to_uint8

# Held-out photos that are public domain or CC0: (file name, top-left of the crop in the 768-side downscale).
PHOTOS = [("coffee.png", (100, 250)), ("rocket.jpg", (180, 120)), ("grace_hopper.jpg", (40, 160)),
          ("gravel.png", (128, 128))]  # fmt: skip
ROWS = [("clean", None, None)] + [
    (f"{mix} {task}", task, mix) for task in ("rain", "snow") for mix in ("light", "mixed", "heavy")
]
SIZE, LABEL_W, HEADER = 256, 96, 22
SEED = 7


def _crops() -> np.ndarray:
    found = {p.name: p for p in clean_photos("heldout")}
    missing = [name for name, _ in PHOTOS if name not in found]
    if missing:
        raise SystemExit(f"held-out photos not installed: {', '.join(missing)} (pip install -e .[photos])")
    crops = []
    for name, (y, x) in PHOTOS:
        img = load_downscaled(found[name])
        y, x = min(y, img.shape[0] - SIZE), min(x, img.shape[1] - SIZE)
        crops.append(img[y : y + SIZE, x : x + SIZE])
    return np.stack(crops)


def main(out: Path) -> None:
    """Write the grid to ``out``."""
    crops = _crops()
    clean = torch.from_numpy(crops).permute(0, 3, 1, 2).float() / 255.0
    n = len(PHOTOS)
    canvas = Image.new("RGB", (LABEL_W + n * SIZE, HEADER + len(ROWS) * SIZE), "white")
    draw = ImageDraw.Draw(canvas)
    for col, (name, _) in enumerate(PHOTOS):
        draw.text((LABEL_W + col * SIZE + 8, 5), name, fill="black")
    for row, (label, task, mix) in enumerate(ROWS):
        top = HEADER + row * SIZE
        draw.text((6, top + SIZE // 2 - 6), label, fill="black")
        if task is None:
            images = [to_uint8(c) for c in clean]
        else:
            # One seed per column and row: each row samples its own point of the mix's range.
            seeds = [SEED * 1000 + row * 10 + col for col in range(n)]
            degraded, _ = degrade(clean, task, cfg=mix, seeds=seeds)
            images = [to_uint8(d) for d in degraded]
        for col, img in enumerate(images):
            left = LABEL_W + col * SIZE
            canvas.paste(Image.fromarray(img), (left, top))
            if task is not None:
                db = psnr(rgb_to_y(img), rgb_to_y(crops[col]))
                text = f"PSNR-Y {db:.1f} dB"
                draw.rectangle((left + 3, top + 3, left + 8 + 6 * len(text), top + 16), fill="black")
                draw.text((left + 6, top + 4), text, fill="white")
    out.parent.mkdir(parents=True, exist_ok=True)
    if out.suffix.lower() in (".jpg", ".jpeg"):
        canvas.save(out, quality=90, subsampling=0, optimize=True)
    else:
        canvas.save(out, optimize=True)
    print(f"wrote {out} ({canvas.width}x{canvas.height})")


if __name__ == "__main__":
    torch.set_num_threads(1)
    main(Path(sys.argv[1] if len(sys.argv) > 1 else "docs/images/synthetic_examples.jpg"))
