"""Pack the training photographs, downscaled, into a folder to carry to a machine that has none (the GPU).

    python scripts/pack_photos.py .carry/photos --max-side 640

JPEG at quality 95, longest side ``--max-side``; prints the folder's size (the device tool carries 64 MiB).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from PIL import Image

from smartassign.data import clean_photos, load_downscaled


def main() -> None:
    """Write every ``train`` photo of the corpus into ``out`` as ``NNN.jpg``."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("out", type=Path)
    p.add_argument("--max-side", type=int, default=640)
    args = p.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    photos = clean_photos("train")
    if not photos:
        raise SystemExit("no training photographs installed: run `make photos` first")
    for i, path in enumerate(photos):
        Image.fromarray(load_downscaled(path, args.max_side)).save(args.out / f"{i:03d}.jpg", quality=95)
    size = sum(f.stat().st_size for f in args.out.iterdir())
    print(f"{len(photos)} photos -> {args.out} ({size / 2**20:.1f} MiB)")


if __name__ == "__main__":
    main()
