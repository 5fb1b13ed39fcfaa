"""CPU training smoke: the tiny model on synthetic rain and snow for a fixed wall-clock budget.

Trains ``configs/synthetic_tiny.yaml`` (overridable) for ``--minutes``, then scores the result on held-out
synthetic pairs (photos never trained on, a seed of their own) against the degraded inputs themselves: the PSNR
gain is what a user of the smoke config can expect. Prints a Markdown table and writes JSON.

    .venv/bin/python benchmarks/train_smoke.py --minutes 10 --out runs/train_smoke
"""

from __future__ import annotations

import argparse
import logging
import shutil
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import write_result  # noqa: E402
from smartassign.config import experiment_to_dict, load_experiment  # noqa: E402
from smartassign.data import SyntheticPairs, clean_photos  # noqa: E402
from smartassign.train import evaluate, fit  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    """Train for the budget, evaluate on held-out pairs, report."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--minutes", type=float, default=10.0, help="training wall-clock budget")
    p.add_argument("--config", type=Path, default=ROOT / "configs" / "synthetic_tiny.yaml")
    p.add_argument("--out", type=Path, default=ROOT / "runs" / "train_smoke", help="run folder (replaced)")
    p.add_argument("--eval-pairs", type=int, default=32, help="held-out pairs per task")
    p.add_argument("--eval-size", type=int, default=128, help="side of the held-out crops")
    p.add_argument("--threads", type=int, default=0, help="torch threads; 0 = torch's default")
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="config overrides, e.g. train.lr=2e-3")
    args = p.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.out.exists():
        shutil.rmtree(args.out)
    overrides = [*args.overrides, f"train.out_dir={args.out}", f"train.time_limit_min={args.minutes}",
                 "train.steps=100000000", "train.progress=false"]  # fmt: skip
    exp = load_experiment(args.config, overrides)

    start = time.perf_counter()
    result = fit(exp)
    seconds = time.perf_counter() - start

    photos = clean_photos("heldout")
    rows = {}
    for task in exp.model.tasks:
        # Seed 1000: not the validation pairs fit() watched (those use train.seed).
        pairs = SyntheticPairs(photos, task, crop=args.eval_size, length=args.eval_pairs, seed=1000, augment=False)
        ev = evaluate(result.model, pairs, task, device="cpu", tile=None)
        rows[task] = ev.summary()

    report = {
        "benchmark": "train_smoke",
        "config": experiment_to_dict(exp),
        "budget_min": args.minutes,
        "train_seconds": seconds,
        "steps": result.step,
        "images": result.step * exp.train.batch_size,
        "heldout": {"pairs_per_task": args.eval_pairs, "size": args.eval_size, "results": rows},
    }
    print(f"\n{result.step} steps in {seconds / 60:.1f} min ({report['images'] / seconds:.1f} images/s)\n")
    print("| task | input PSNR-Y | output PSNR-Y | gain (dB) | input SSIM-Y | output SSIM-Y | recognition |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for task, r in rows.items():
        i, o = r["input"], r["restored"]
        acc = "n/a" if r["accuracy"] is None else f"{100 * r['accuracy']:.0f}%"
        print(f"| {task} | {i['psnr_y']:.2f} | {o['psnr_y']:.2f} | {o['psnr_y'] - i['psnr_y']:+.2f} | "
              f"{i['ssim_y']:.4f} | {o['ssim_y']:.4f} | {acc} |")  # fmt: skip
    threads = {"torch_threads": torch.get_num_threads()}
    write_result(args.out / "train_smoke.json", report, "train_smoke.py", machine=threads)


if __name__ == "__main__":
    main()
