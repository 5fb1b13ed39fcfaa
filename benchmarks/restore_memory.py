"""Large photos through ``smartassign restore``: peak memory, time and, on held-out photos, the recognised task.

Default: one synthetic 6000x4000 JPEG (24 MP) and random ``small`` weights, restored with ``--task rain``;
memory and time do not depend on the weights' values.

``--heldout``: held-out photos (``smartassign.data.clean_photos("heldout")``) enlarged to ``--size`` (default
4000x3000) with synthetic rain and with snow made at that size (1-3 px streaks and small flakes on a smooth,
enlarged scene: what the network sees in a large photo), restored with the bundled weights and ``--task
auto``. Each row gives the task the one pass recognised (the mean over all tiles), the task recognised on
the same photo at its own size, and the one a single recognition pass on a copy box-filtered to at most
``--lowres`` pixels a side decides (the cheap alternative to recognising every tile).

The restore runs in a child process, exactly as a user runs it (read, recognise, tiled restoration, write),
so its peak resident set size is measured alone, without this script's own image synthesis.

    .venv/bin/python benchmarks/restore_memory.py [--size 6000x4000] [--tile 512] [--json out.json]
    .venv/bin/python benchmarks/restore_memory.py --heldout [--size 4000x3000] [--photos 0 2] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import cpu_name, write_result  # noqa: E402
from smartassign import build_model  # noqa: E402
from smartassign.checkpoint import save_weights  # noqa: E402
from smartassign.data import clean_photos, heldout_photo, weathered  # noqa: E402
from smartassign.restore import Restorer, bundled_weights  # noqa: E402

# The child: restore as the CLI does, then record its own peak RSS (KiB on Linux) for the parent.
CHILD = (
    "import json, os, resource, sys; from smartassign.cli import main; code = main(); "
    "open(os.environ['PEAK_FILE'], 'w').write(json.dumps(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)); "
    "sys.exit(code)"
)


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


def box_filtered(image: np.ndarray, side: int) -> np.ndarray:
    """An integer-factor box-filtered copy whose longest side is at most ``side`` (the former detection input)."""
    h, w = image.shape[:2]
    k = math.ceil(max(h, w) / side)
    h, w = h // k * k, w // k * k
    return image[:h, :w].reshape(h // k, k, w // k, k, 3).mean(axis=(1, 3)).astype(np.float32) / 255


def restore_cli(image: Path, folder: Path, weights: Path, task: str, args: argparse.Namespace) -> dict[str, object]:
    """Run ``smartassign restore`` on ``image`` in a child process: its report row, seconds and peak RSS."""
    command = [
        sys.executable, "-c", CHILD, "restore", str(image), "-o", str(folder / "out"), "--task", task,
        "--weights", str(weights), "--device", "cpu", "--tile", str(args.tile), "--overlap", str(args.overlap),
        "--report", str(folder / "report.json"), "--overwrite",
    ]  # fmt: skip
    env = {**os.environ, "PEAK_FILE": str(folder / "peak.json")}
    start = time.perf_counter()
    subprocess.run(command, check=True, env=env)
    seconds = time.perf_counter() - start
    row = json.loads((folder / "report.json").read_text())["images"][0]
    return {
        **row,
        "seconds": round(seconds, 1),
        "peak_rss_mib": round(json.loads((folder / "peak.json").read_text()) / 1024),
    }


def machine(args: argparse.Namespace) -> dict[str, object]:
    """What the numbers were measured on."""
    return {
        "tile": args.tile,
        "overlap": args.overlap,
        "torch_threads": torch.get_num_threads(),
        "cpus": os.cpu_count(),
        "cpu": cpu_name(),
        "torch": torch.__version__,
        "load_avg_start": os.getloadavg(),
    }


def memory_run(args: argparse.Namespace, width: int, height: int) -> dict[str, object]:
    """The synthetic photo with random weights: peak RSS and time."""
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        Image.fromarray(synthetic_photo(width, height)).save(folder / "photo.jpg", quality=90)
        torch.manual_seed(0)
        save_weights(build_model(args.preset), folder / "weights.safetensors")
        row = restore_cli(folder / "photo.jpg", folder, folder / "weights.safetensors", "rain", args)
        with Image.open(folder / "out" / "photo.jpg") as out:
            assert out.size == (width, height), out.size
    results = {"image": f"{width}x{height} JPEG", "preset": args.preset, **machine(args)}
    results.update(peak_rss_mib=row["peak_rss_mib"], seconds=row["seconds"], load_avg_end=os.getloadavg())
    print("| image | preset | tile/overlap | peak RSS (MiB) | time (s) | CPU |")
    print("|---|---|---|---:|---:|---|")
    print(
        f"| {results['image']} | {args.preset} | {args.tile}/{args.overlap} | {results['peak_rss_mib']} "
        f"| {results['seconds']} | {results['cpus']} x {results['cpu']} |"
    )
    return results


def heldout_run(args: argparse.Namespace, width: int, height: int) -> dict[str, object]:
    """Held-out photos with rain and snow at ``width x height``: the task each way of recognising decides."""
    weights = bundled_weights("small")
    restorer = Restorer.from_weights(weights, device="cpu")
    rows = []
    print("| photo | weather | own size: task | one pass, every tile | low-res pass | time (s) | peak RSS (MiB) |")
    print("|---|---|---|---|---|---:|---:|")
    for index in args.photos:
        for seed, task in enumerate(("rain", "snow")):
            small = weathered(heldout_photo(index), task, seed)
            large = weathered(heldout_photo(index, width, height), task, seed)
            own, lowres = restorer.detect(small), restorer.detect(box_filtered(large, args.lowres))
            with tempfile.TemporaryDirectory() as tmp:
                folder = Path(tmp)
                Image.fromarray(large).save(folder / "photo.jpg", quality=95)
                del large
                row = restore_cli(folder / "photo.jpg", folder, weights, "auto", args)
            name = clean_photos("heldout")[index].name
            rows.append(
                {
                    "photo": name,
                    "weather": task,
                    "own_size": list(small.shape[:2]),
                    "own_size_task": own[0],
                    "own_size_confidence": own[1],
                    "task": row["task"],
                    "confidence": row["confidence"],
                    "lowres_task": lowres[0],
                    "lowres_confidence": lowres[1],
                    "seconds": row["seconds"],
                    "peak_rss_mib": row["peak_rss_mib"],
                }  # fmt: skip
            )
            print(
                f"| {name} | {task} | {own[0]} ({own[1]:.0%}) | {row['task']} ({row['confidence']:.0%}) "
                f"| {lowres[0]} ({lowres[1]:.0%}) | {row['seconds']} | {row['peak_rss_mib']} |",
                flush=True,
            )
    right = {k: sum(r[k] == r["weather"] for r in rows) for k in ("own_size_task", "task", "lowres_task")}
    print(
        f"\nright: own size {right['own_size_task']}/{len(rows)}, one pass {right['task']}/{len(rows)}, "
        f"low-res pass {right['lowres_task']}/{len(rows)}"
    )
    return {
        "image": f"{width}x{height} JPEG (quality 95) from held-out photos",
        "weights": "bundled small",
        "lowres_side": args.lowres,
        **machine(args),
        "rows": rows,
        "right": right,
        "load_avg_end": os.getloadavg(),
    }


def main() -> None:
    """Make the photos, restore each in a child process, print and optionally save the numbers."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", help="WIDTHxHEIGHT (default 6000x4000, or 4000x3000 with --heldout)")
    parser.add_argument("--preset", default="small", help="model preset (random weights; not with --heldout)")
    parser.add_argument("--tile", type=int, default=512)
    parser.add_argument("--overlap", type=int, default=32)
    parser.add_argument("--heldout", action="store_true", help="held-out photos, bundled weights, recognition")
    parser.add_argument("--photos", type=int, nargs="+", default=[2, 4], help="held-out photo indices")
    parser.add_argument("--lowres", type=int, default=512, help="longest side of the low-res recognition copy")
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args()
    width, height = map(int, (args.size or ("4000x3000" if args.heldout else "6000x4000")).lower().split("x"))
    results = heldout_run(args, width, height) if args.heldout else memory_run(args, width, height)
    if args.json is not None:
        write_result(args.json, results, "restore_memory.py", indent=2)


if __name__ == "__main__":
    main()
