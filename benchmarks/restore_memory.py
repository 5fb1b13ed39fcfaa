"""Peak memory and time of ``smartassign restore`` on one large synthetic JPEG (default 6000x4000, 24 MP).

The restore runs in a child process, exactly as a user runs it (read, detect,
tiled restoration, write), so its peak resident set size is measured alone,
without this script's own image synthesis. Random ``small`` weights suffice:
memory and time do not depend on the weights' values.

    .venv/bin/python benchmarks/restore_memory.py [--size 6000x4000] [--tile 512] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import cpu_name  # noqa: E402
from smartassign import build_model  # noqa: E402
from smartassign.checkpoint import save_weights  # noqa: E402


def synthetic_photo(width: int, height: int, seed: int = 0) -> np.ndarray:
    """``(height, width, 3)`` uint8: smooth colour gradients, texture and bright streaks, like a rainy photo."""
    rng = np.random.default_rng(seed)
    y = np.linspace(0, 1, height, dtype=np.float32)[:, None]
    x = np.linspace(0, 1, width, dtype=np.float32)[None, :]
    photo = np.empty((height, width, 3), dtype=np.uint8)
    for c, phase in enumerate((0.0, 2.1, 4.2)):
        channel = 0.5 + 0.25 * np.sin(6 * x + phase) * np.cos(4 * y) + 0.05 * rng.standard_normal((height, width))
        streaks = (rng.random((height // 8, width)) > 0.995).repeat(8, axis=0)[:height] * 0.3
        photo[..., c] = (np.clip(channel + streaks, 0, 1) * 255).astype(np.uint8)
    return photo


def main() -> None:
    """Write the photo and random weights, restore in a child process, print and optionally save the numbers."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", default="6000x4000", help="WIDTHxHEIGHT of the synthetic JPEG")
    parser.add_argument("--preset", default="small", help="model preset (random weights)")
    parser.add_argument("--tile", type=int, default=512)
    parser.add_argument("--overlap", type=int, default=32)
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args()
    width, height = map(int, args.size.lower().split("x"))
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        Image.fromarray(synthetic_photo(width, height)).save(folder / "photo.jpg", quality=90)
        torch.manual_seed(0)
        save_weights(build_model(args.preset), folder / "weights.safetensors")
        command = [
            sys.executable, "-c", "import sys; from smartassign.cli import main; sys.exit(main())",
            "restore", str(folder / "photo.jpg"), "-o", str(folder / "out"), "--task", "rain",
            "--weights", str(folder / "weights.safetensors"), "--device", "cpu",
            "--tile", str(args.tile), "--overlap", str(args.overlap),
        ]  # fmt: skip
        start = time.perf_counter()
        subprocess.run(command, check=True)
        seconds = time.perf_counter() - start
        with Image.open(folder / "out" / "photo.jpg") as out:
            assert out.size == (width, height), out.size
    peak_mib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024  # Linux reports KiB
    results = {
        "image": f"{width}x{height} JPEG",
        "preset": args.preset,
        "tile": args.tile,
        "overlap": args.overlap,
        "peak_rss_mib": round(peak_mib),
        "seconds": round(seconds, 1),
        "torch_threads": torch.get_num_threads(),
        "cpus": os.cpu_count(),
        "cpu": cpu_name(),
        "torch": torch.__version__,
    }
    print("| image | preset | tile/overlap | peak RSS (MiB) | time (s) | CPU |")
    print("|---|---|---|---:|---:|---|")
    print(
        f"| {results['image']} | {args.preset} | {args.tile}/{args.overlap} | {results['peak_rss_mib']} "
        f"| {results['seconds']} | {results['cpus']} x {results['cpu']} |"
    )
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
