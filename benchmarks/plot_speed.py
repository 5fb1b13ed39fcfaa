"""Plot CPU latency against image size per model from the JSON that ``speed.py`` writes.

python benchmarks/plot_speed.py benchmarks/results/speed.json docs/images/latency.png
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def plot(results: dict, out: Path) -> None:
    """Log-log latency (median seconds) against megapixels, one line per model and mode."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for name, modes in results["cpu"].items():
        for mode, cells in modes.items():
            sizes = sorted(int(s) for s in cells)
            mp = [s * s / 1e6 for s in sizes]
            secs = [cells[str(s)]["median_s"] for s in sizes]
            style = "--" if mode != "whole" else "-"
            label = name if mode == "whole" else f"{name} ({mode.replace('tiled', 'Restorer tile ')})"
            ax.plot(mp, secs, style, marker="o", label=label)
            ax.annotate(f"{secs[-1]:.1f}s", (mp[-1], secs[-1]), textcoords="offset points", xytext=(4, -3), fontsize=7)
    m = results["machine"]
    ax.set_xscale("log")
    ax.set_yscale("log")
    sizes = sorted({int(s) for modes in results["cpu"].values() for cells in modes.values() for s in cells})
    ax.set_xticks([s * s / 1e6 for s in sizes], [f"{s}²" for s in sizes])
    ax.minorticks_off()
    ax.set_xlabel("image size (pixels)")
    ax.set_ylabel("latency, s (median)")
    ax.set_title(f"CPU restoration latency, {m['threads']} threads, {m['cpu']}", fontsize=10)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=120)


def main(argv: list[str] | None = None) -> int:
    """Read the JSON, write the PNG."""
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("json", type=Path)
    p.add_argument("png", type=Path)
    args = p.parse_args(argv)
    plot(json.loads(args.json.read_text()), args.png)
    print(f"wrote {args.png}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
