"""Calibrate the rain/snow engine: the input PSNR-Y / SSIM-Y each degradation mix gives on held-out photographs.

For every mix (light, mixed, heavy) and task (rain, snow), ``n`` crops of the held-out photos are degraded by
``smartassign.data.degrade`` and scored against their clean crop with ``smartassign.metrics`` (MATLAB Y protocol on
uint8, as deraining papers report input PSNR). The 10th, 50th and 90th percentiles are printed as a Markdown table
and written to JSON with the command and seed, to sit beside the input figures the public sets report
(docs/datasets.md).

The design is paired: crop ``i`` is the same clean crop, with the same engine seed, in every mix and task, so the
mixes differ only by their distributions.

    .venv/bin/python benchmarks/calibrate_engine.py                 # 64 crops per task per mix, 256x256
    .venv/bin/python benchmarks/calibrate_engine.py --quick         # 4 crops: a smoke run
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import write_result  # noqa: E402
from smartassign.config import DEGRADATION_MIXES  # noqa: E402
from smartassign.data import clean_photos, degrade, load_downscaled  # noqa: E402
from smartassign.data.engine import TASKS  # noqa: E402
from smartassign.metrics import psnr, rgb_to_y, ssim, to_uint8  # noqa: E402

PERCENTILES = (10, 50, 90)
MIXES = tuple(m for m in ("light", "mixed", "heavy") if m in DEGRADATION_MIXES) + tuple(
    m for m in DEGRADATION_MIXES if m not in ("light", "mixed", "heavy")
)


def held_out_crops(n: int, size: int, seed: int, photos: Sequence[Path] | None = None) -> tuple[np.ndarray, list]:
    """``n`` uint8 crops ``(n, size, size, 3)`` of held-out photos (random photo, position, flips, 90° turns).

    Photos are read as training reads them (``load_downscaled``, longest side 768); one smaller than ``size`` is
    padded by reflection. Returns the crops and, per crop, ``[photo name, y, x, flip, turns]``.
    """
    photos = list(clean_photos("heldout") if photos is None else photos)
    if not photos:
        raise SystemExit("no held-out photographs installed (pip install -e .[photos])")
    rng = np.random.default_rng(seed)
    cache: dict[int, np.ndarray] = {}
    crops, where = [], []
    for _ in range(n):
        k = int(rng.integers(len(photos)))
        if k not in cache:
            img = load_downscaled(photos[k])
            ph, pw = max(size - img.shape[0], 0), max(size - img.shape[1], 0)
            cache[k] = np.pad(img, ((0, ph), (0, pw), (0, 0)), mode="reflect") if ph or pw else img
        img = cache[k]
        y, x = int(rng.integers(img.shape[0] - size + 1)), int(rng.integers(img.shape[1] - size + 1))
        flip, turns = bool(rng.random() < 0.5), int(rng.integers(4))
        crop = img[y : y + size, x : x + size]
        crop = np.rot90(crop[:, ::-1] if flip else crop, turns)
        crops.append(np.ascontiguousarray(crop))
        where.append([photos[k].name, y, x, flip, turns])
    return np.stack(crops), where


def _summary(values: list[float]) -> dict[str, float]:
    a = np.asarray(values, dtype=np.float64)
    out = {f"p{q}": float(np.percentile(a, q)) for q in PERCENTILES}
    out["mean"] = float(a.mean())
    return out


def calibrate(
    n: int = 64,
    size: int = 256,
    seed: int = 0,
    mixes: Sequence[str] = MIXES,
    tasks: Sequence[str] = TASKS,
    batch: int = 16,
    photos: Sequence[Path] | None = None,
) -> dict[str, Any]:
    """Input PSNR-Y / SSIM-Y per mix and task over ``n`` held-out crops: percentiles, mean and every value."""
    crops, where = held_out_crops(n, size, seed, photos)
    engine_seeds = np.random.default_rng((seed, 1)).integers(0, 2**32, size=n, dtype=np.int64)
    clean_y = [rgb_to_y(c) for c in crops]
    results: dict[str, Any] = {}
    for mix in mixes:
        results[mix] = {}
        for task in tasks:
            values: dict[str, list[float]] = {"psnr_y": [], "ssim_y": []}
            for start in range(0, n, batch):
                stop = min(start + batch, n)
                clean = torch.from_numpy(crops[start:stop]).permute(0, 3, 1, 2).float() / 255.0
                degraded, _ = degrade(clean, task, cfg=mix, seeds=engine_seeds[start:stop].tolist())  # type: ignore[arg-type]
                for i, image in enumerate(degraded):
                    y = rgb_to_y(to_uint8(image))
                    values["psnr_y"].append(psnr(y, clean_y[start + i]))
                    values["ssim_y"].append(ssim(y, clean_y[start + i]))
            results[mix][task] = {
                "n": n,
                "psnr_y": _summary(values["psnr_y"]),
                "ssim_y": _summary(values["ssim_y"]),
                "values": {k: [round(v, 4) for v in vs] for k, vs in values.items()},
            }
    return {
        "n": n,
        "size": size,
        "seed": seed,
        "crops": where,
        "engine_seeds": engine_seeds.tolist(),
        "results": results,
    }


def table(report: dict[str, Any]) -> str:
    """The Markdown table of percentiles."""
    lines = [
        "| mix | task | crops | PSNR-Y p10 / p50 / p90 (dB) | SSIM-Y p10 / p50 / p90 |",
        "|---|---|---:|---|---|",
    ]
    for mix, tasks in report["results"].items():
        for task, r in tasks.items():
            p, s = r["psnr_y"], r["ssim_y"]
            lines.append(
                f"| {mix} | {task} | {r['n']} | {p['p10']:.1f} / {p['p50']:.1f} / {p['p90']:.1f} "
                f"| {s['p10']:.3f} / {s['p50']:.3f} / {s['p90']:.3f} |"
            )
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    """Measure, print the table, write the JSON."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=64, help="crops per task per mix (default 64)")
    p.add_argument("--size", type=int, default=256, help="square crop side (default 256)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--batch", type=int, default=16, help="crops degraded together (results do not depend on it)")
    p.add_argument("--threads", type=int, default=0, help="torch threads (default: torch's)")
    p.add_argument("--quick", action="store_true", help="4 crops per task per mix: a smoke run")
    p.add_argument("--out", type=Path, help="JSON path (default benchmarks/results/engine_calibration[_quick].json)")
    args = p.parse_args(argv)
    if args.quick:
        args.n = min(args.n, 4)
    if args.threads:
        torch.set_num_threads(args.threads)
    out = args.out or Path(f"benchmarks/results/engine_calibration{'_quick' if args.quick else ''}.json")
    start = time.perf_counter()
    report = calibrate(args.n, args.size, args.seed, batch=args.batch)
    seconds = time.perf_counter() - start
    print(table(report))
    print(f"{args.n} held-out crops of {args.size}x{args.size} per task per mix, seed {args.seed}, {seconds:.0f} s")
    result = {
        "protocol": "input (degraded, 8-bit) vs clean crop; MATLAB rgb2ycbcr Y; smartassign.metrics psnr/ssim",
        "percentiles": list(PERCENTILES),
        "seconds": round(seconds, 1),
        "load_average_1min_at_end": os.getloadavg()[0],
        **report,
    }
    write_result(out, result, "calibrate_engine.py", argv)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
