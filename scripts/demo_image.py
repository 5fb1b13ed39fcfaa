"""Make the README's picture from ``make demo``'s side-by-side outputs: two of them stacked, input | restored.

    make demo && .venv/bin/python scripts/demo_image.py [outputs/demo] [docs/images/demo.jpg]
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
from PIL import Image

SHOWN = ("rain_rocket_compare.jpg", "snow_hopper_compare.jpg")


def main() -> None:
    """Stack the shown comparisons, each at most 1024 px wide, and save them as JPEG."""
    folder = Path(sys.argv[1] if len(sys.argv) > 1 else "outputs/demo")
    out = Path(sys.argv[2] if len(sys.argv) > 2 else "docs/images/demo.jpg")
    rows = []
    for name in SHOWN:
        path = folder / name
        if not path.is_file():
            sys.exit(f"demo_image: {path} is missing; run `make demo` first")
        image = Image.open(path).convert("RGB")
        scale = min(1.0, 1024 / image.width)
        rows.append(np.asarray(image.resize((round(image.width * scale), round(image.height * scale)))))
    width = min(r.shape[1] for r in rows)
    Image.fromarray(np.concatenate([r[:, :width] for r in rows], axis=0)).save(out, quality=88)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
