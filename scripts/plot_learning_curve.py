"""Plot validation gain (PSNR-Y over the input, per task) against the crops the weights have seen.

Each run's ``val.csv`` is placed after the crops its starting weights had already seen (``RUN:OFFSET``), so
continued runs read as one curve. Validation sets differ between runs (each run draws its own), so compare
gains, not absolute PSNR.

    .venv/bin/python scripts/plot_learning_curve.py runs/cpu_r2:8008 runs/cpu_r3:11848 \\
        --batch 8 --out docs/images/learning_curve.png

``--minutes`` puts training time on the x axis instead (crops seen / the run's median throughput in
``train.csv``, so validation pauses are left out): runs of different presets then compare at equal compute.
"""

from __future__ import annotations

import argparse
import csv
import statistics
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def main() -> None:
    """Read the runs' validation logs, plot gain against crops seen, save the figure."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("runs", nargs="+", help="RUN_FOLDER[:CROPS_SEEN_BEFORE]")
    p.add_argument("--batch", type=int, default=8, help="crops per step")
    p.add_argument("--out", type=Path, default=Path("docs/images/learning_curve.png"))
    p.add_argument("--minutes", action="store_true", help="x axis: training minutes at the run's throughput")
    p.add_argument("--title", default="", help="figure title")
    args = p.parse_args()
    fig, ax = plt.subplots(figsize=(6.4, 3.6))
    for task, colour in (("rain", "tab:blue"), ("snow", "tab:orange")):
        for i, spec in enumerate(args.runs):
            folder, _, offset = spec.partition(":")
            rows = [r for r in csv.DictReader((Path(folder) / "val.csv").open()) if r["task"] == task]
            x = [int(offset or 0) + int(r["step"]) * args.batch for r in rows]
            if args.minutes:
                speed = statistics.median(
                    float(r["images_per_s"]) for r in csv.DictReader((Path(folder) / "train.csv").open())
                )
                x = [v / speed / 60 for v in x]
            y = [float(r["psnr_y"]) - float(r["input_psnr_y"]) for r in rows]
            ax.plot(x, y, "o-", color=colour, alpha=0.5 + 0.5 * (i + 1) / len(args.runs),
                    label=f"{task} ({Path(folder).name})")  # fmt: skip
    ax.set_xlabel("training minutes (crops seen / throughput)" if args.minutes else "crops seen by the weights")
    if args.title:
        ax.set_title(args.title, fontsize=9)
    ax.set_ylabel("validation gain, PSNR-Y (dB)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.out, dpi=120)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
