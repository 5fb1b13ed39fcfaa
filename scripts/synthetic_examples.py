"""Render docs/images/synthetic_examples.png: clean / rain / snow for a few public-domain and CC0 photographs."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw
from skimage import data as skdata

from smartassign.data.synth import add_rain, add_snow

# Public-domain or CC0 images only, so the picture needs no attribution: (name, loader, top-left of the crop).
PHOTOS = [("chelsea", skdata.chelsea, (20, 120)), ("coffee", skdata.coffee, (40, 160)),
          ("astronaut", skdata.astronaut, (0, 120)), ("rocket", skdata.rocket, (80, 200))]
SIZE, HEADER = 256, 24


def main(out: Path) -> None:
    """Write the grid to ``out``."""
    rows = []
    for i, (_, load, (y, x)) in enumerate(PHOTOS):
        clean = np.ascontiguousarray(load()[y : y + SIZE, x : x + SIZE, :3], dtype=np.float32) / 255.0
        rain, _ = add_rain(clean, np.random.default_rng(i))
        snow, _ = add_snow(clean, np.random.default_rng(100 + i))
        rows.append(np.concatenate([clean, rain, snow], axis=1))
    grid = (np.concatenate(rows, axis=0) * 255.0 + 0.5).astype(np.uint8)
    canvas = Image.new("RGB", (grid.shape[1], grid.shape[0] + HEADER), "white")
    canvas.paste(Image.fromarray(grid), (0, HEADER))
    draw = ImageDraw.Draw(canvas)
    for col, title in enumerate(("clean", "synthetic rain", "synthetic snow")):
        draw.text((col * SIZE + 8, 6), title, fill="black")
    out.parent.mkdir(parents=True, exist_ok=True)
    canvas.save(out, optimize=True)


if __name__ == "__main__":
    main(Path(sys.argv[1] if len(sys.argv) > 1 else "docs/images/synthetic_examples.png"))
