"""Test-time local statistics (TLC) on held-out images: restoration quality and tile invariance, on and off.

    .venv/bin/python benchmarks/tlc_eval.py [--n 8] [--size 384] [--json benchmarks/results/tlc_eval.json]

Two sets, both from the held-out photos with the synthetic engine's ``mixed`` rain and snow: ``--n`` pairs per
task of ``--size``² crops (``smartassign data synth --split heldout``), and every held-out photo whole at its own
size (up to 741 px a side) with rain and with snow. Each image is restored with the bundled weights for its
true task (so recognition does not enter), as one whole image and with the default tiling (512 / 32), with TLC
over the training crop and with global pools. Reported: PSNR-Y / SSIM-Y of the whole-image restorations (the
deraining protocol of docs/evaluation.md) and the mean absolute difference, in uint8 levels, between the tiled
and the whole-image result.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import write_result  # noqa: E402
from smartassign import load  # noqa: E402
from smartassign.config import TASKS  # noqa: E402
from smartassign.data import clean_photos, heldout_photo, weathered  # noqa: E402
from smartassign.data.synthset import write_synthetic_set  # noqa: E402
from smartassign.io import read_image  # noqa: E402
from smartassign.metrics import mean_scores, score  # noqa: E402
from smartassign.restore import Restorer  # noqa: E402


def crops(n: int, size: int, folder: Path) -> list[tuple[str, str, np.ndarray, np.ndarray]]:
    """``(name, task, degraded, clean)`` uint8 pairs of the synthetic held-out set."""
    write_synthetic_set(folder, n, seed=0, size=size, split="heldout")
    pairs = []
    for task in TASKS:
        for path in sorted((folder / task / "input").glob("*.png")):
            target = read_image(folder / task / "target" / path.name).pixels
            pairs.append((f"{task}/{path.name}", task, read_image(path).pixels, target))
    return pairs


def whole_photos() -> list[tuple[str, str, np.ndarray, np.ndarray]]:
    """Every held-out photo at its own size, with rain and with snow (seed 0)."""
    pairs = []
    for index, path in enumerate(clean_photos("heldout")):
        clean = heldout_photo(index)
        for task in TASKS:
            pairs.append((f"{path.name} {task}", task, weathered(clean, task, 0), clean))
    return pairs


def evaluate(pairs: list[tuple[str, str, np.ndarray, np.ndarray]], net: torch.nn.Module, tlc: int | None) -> dict:
    """Scores of the whole-image restorations and the tiled-vs-whole difference for one TLC setting."""
    whole, tiled = Restorer(net, device="cpu", tile=0, tlc=tlc), Restorer(net, device="cpu", tlc=tlc)
    scores, inputs, diffs = [], [], []
    for name, task, degraded, clean in pairs:
        a = whole.restore(degraded, task).image
        b = tiled.restore(degraded, task).image
        scores.append(score(a, clean))
        inputs.append(score(degraded, clean))
        diffs.append(float(np.abs(a.astype(np.float32) - b.astype(np.float32)).mean()))
        print(f"  tlc={tlc} {name}: PSNR-Y {scores[-1].psnr_y:.2f}, tiled-whole {diffs[-1]:.3f}", file=sys.stderr)
    return {
        "restored": mean_scores(scores).as_dict(),
        "input": mean_scores(inputs).as_dict(),
        "tiled_vs_whole_levels": float(np.mean(diffs)),
        "per_image_psnr_y": [s.psnr_y for s in scores],
        "per_image_tiled_vs_whole": diffs,
    }


def main() -> None:
    """Run both sets with TLC on and off; print a Markdown table, optionally write JSON."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=8, help="crops per task")
    parser.add_argument("--size", type=int, default=384, help="crop side")
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args()
    restorer = load("small", device="cpu")
    window = restorer.tlc
    results: dict = {
        "weights": "bundled small",
        "tlc_window": window,
        "load_avg_start": os.getloadavg(),
        "sets": {},
    }
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        sets = {f"{args.size}² crops ({2 * args.n})": crops(args.n, args.size, Path(tmp) / "set")}
    sets[f"whole held-out photos ({2 * len(clean_photos('heldout'))})"] = whole_photos()
    print("| images | TLC | input PSNR-Y | PSNR-Y | SSIM-Y | tiled vs whole (uint8 levels) |")
    print("|---|---|---:|---:|---:|---:|")
    for label, pairs in sets.items():
        results["sets"][label] = {}
        for tlc in (window, None):
            r = evaluate(pairs, restorer.model, tlc)
            results["sets"][label]["on" if tlc else "off"] = r
            print(
                f"| {label} | {f'{tlc} px' if tlc else 'off (global pools)'} | {r['input']['psnr_y']:.2f} "
                f"| {r['restored']['psnr_y']:.2f} | {r['restored']['ssim_y']:.4f} | {r['tiled_vs_whole_levels']:.3f} |",
                flush=True,
            )
    results["seconds"] = round(time.perf_counter() - start)
    results["load_avg_end"] = os.getloadavg()
    if args.json is not None:
        write_result(args.json, results, "tlc_eval.py", machine={"torch_threads": torch.get_num_threads()}, indent=2)


if __name__ == "__main__":
    main()
