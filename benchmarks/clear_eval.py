"""Do no harm: what weights do to a photograph with no rain or snow on it.

A restorer should hand a clear picture back nearly unchanged. This restores clear crops of the held-out photos
(``--n`` of ``--size``², the targets of the gate set's pairs: ``SyntheticPairs`` of the ``heldout`` split, mix
``mixed``, seed ``--seed``) with each head and with the head the recognition picks, and reports per weights file:
PSNR-Y of the output against the clear input, the mean Y offset (output − input, grey levels of 255: negative is
darker), the RMS of the low-passed (Gaussian σ 6 px) and of the remaining Y difference, and how often the
recognition says rain. An output identical to its input counts as 99 dB. A network trained only on weather,
which only ever adds light, darkens every picture.

    .venv/bin/python benchmarks/clear_eval.py                                      # the bundled weights
    .venv/bin/python benchmarks/clear_eval.py --weights A.safetensors B.safetensors --out ''   # compare, no JSON
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import numpy as np
import torch
from scipy.ndimage import gaussian_filter

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import write_result  # noqa: E402
from smartassign.data import SyntheticPairs, clean_photos  # noqa: E402
from smartassign.gate import sha256  # noqa: E402
from smartassign.metrics import psnr, rgb_to_y, to_uint8  # noqa: E402
from smartassign.restore import Restorer, bundled_weights  # noqa: E402

IDENTICAL_DB = 99.0  # PSNR counted for an output identical to its input (infinite), so means stay finite


def clear_crops(n: int, size: int, seed: int) -> list[np.ndarray]:
    """``n`` clear ``(size, size, 3)`` float32 crops of the held-out photos (the gate set's targets)."""
    pairs = SyntheticPairs(clean_photos("heldout"), "rain", crop=size, length=n, seed=seed, degradation="mixed")
    return [pairs[i]["target"].permute(1, 2, 0).numpy() for i in range(n)]


def difference(output: np.ndarray, clear: np.ndarray) -> dict[str, float]:
    """PSNR-Y, mean Y offset and low/high-pass RMS of ``output`` against ``clear`` (uint8 levels)."""
    y_out, y_ref = rgb_to_y(to_uint8(output)), rgb_to_y(to_uint8(clear))
    d = y_out.astype(np.float64) - y_ref.astype(np.float64)
    low = gaussian_filter(d, 6.0)
    return {
        "psnr_y": min(psnr(y_out, y_ref), IDENTICAL_DB),
        "offset_y": float(d.mean()),
        "low_rms": float(np.sqrt((low**2).mean())),
        "high_rms": float(np.sqrt(((d - low) ** 2).mean())),
    }


def score(weights: Path, crops: list[np.ndarray]) -> dict[str, Any]:
    """Mean :func:`difference` per head and with the recognised head, and the share read as rain."""
    restorer = Restorer.from_weights(weights, "cpu")
    rows: dict[str, list[dict[str, float]]] = {"rain": [], "snow": [], "auto": []}
    said_rain = 0
    for crop in crops:
        each, detected, _ = restorer.restore_each(crop)
        detected = detected or restorer.tasks[0]
        said_rain += detected == "rain"
        for head in ("rain", "snow"):
            if head in each:
                rows[head].append(difference(each[head], crop))
        rows["auto"].append(difference(each[detected], crop))
    mean = {k: {m: float(np.mean([r[m] for r in v])) for m in v[0]} for k, v in rows.items() if v}
    return {"weights": str(weights), "sha256": sha256(weights), "heads": mean, "said_rain": said_rain / len(crops)}


def table(results: list[dict[str, Any]]) -> str:
    """Markdown table of :func:`score` results."""
    lines = [
        "| weights | head | PSNR-Y vs clear | mean Y offset | low-pass RMS | high-pass RMS |",
        "|---|---|---:|---:|---:|---:|",
    ]
    for r in results:
        for head, m in r["heads"].items():
            lines.append(
                f"| {Path(r['weights']).name} ({r['sha256'][:10]}) | {head} | {m['psnr_y']:.2f} | "
                f"{m['offset_y']:+.2f} | {m['low_rms']:.2f} | {m['high_rms']:.2f} |"
            )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Score each weights file on the clear crops, print the table, write the JSON."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--weights", type=Path, nargs="+", default=[bundled_weights("small")])
    ap.add_argument("--n", type=int, default=16, help="clear crops")
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", default="benchmarks/results/clear_eval.json", help="JSON path ('' = none)")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    crops = clear_crops(args.n, args.size, args.seed)
    results = [score(w, crops) for w in args.weights]
    print(f"{args.n} clear {args.size}² crops of the held-out photos, seed {args.seed}:\n\n{table(results)}")
    if args.out:
        settings = {"n": args.n, "size": args.size, "seed": args.seed, "threads": args.threads}
        write_result(args.out, {"settings": settings, "results": results}, "clear_eval.py", argv)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
