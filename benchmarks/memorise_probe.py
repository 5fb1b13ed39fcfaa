"""How fast can the bundled network learn to restore one fixed batch, with and without each auxiliary loss?

A probe of the training recipe, not of generalisation: the bundled ``small`` weights train on ONE batch of the
engine (``--batch`` crops of the training photos, half rain, half snow) for ``--steps`` AdamW steps under the loss
of eq. 19 with some terms switched off, and the PSNR gain of each head on that same batch is printed every
``--every`` steps. A term that slows the fit of a single batch competes with restoration for the shared trunk.
Everything else is the recipe of ``configs/continue_small.yaml`` (cross-entropy recognition, gradient clipping at
1, bf16 autocast when ``--bf16``). Variants: ``paper`` (all five terms), ``norecog`` (w_recog 0), ``nosparse``,
``nograd``, ``nocontra``, ``charonly`` (Charbonnier alone), ``recog0.03`` (w_recog 0.03).

Prints a Markdown table and writes JSON with the command and machine.

    .venv/bin/python benchmarks/memorise_probe.py                    # the committed figures
    .venv/bin/python benchmarks/memorise_probe.py --steps 2 --every 1 --variants paper --out ''   # smoke
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import write_result  # noqa: E402
from smartassign.checkpoint import load_weights  # noqa: E402
from smartassign.config import LossConfig  # noqa: E402
from smartassign.data import SyntheticBatches, clean_photos  # noqa: E402
from smartassign.losses import select_restoration, total_loss  # noqa: E402
from smartassign.restore import bundled_weights  # noqa: E402

VARIANTS: dict[str, dict[str, float]] = {
    "paper": {},
    "norecog": {"w_recog": 0.0},
    "recog0.03": {"w_recog": 0.03},
    "nosparse": {"w_sparsity": 0.0},
    "nograd": {"w_grad": 0.0},
    "nocontra": {"w_contra": 0.0},
    "charonly": {"w_recog": 0.0, "w_sparsity": 0.0, "w_contra": 0.0, "w_grad": 0.0},
}


def psnr(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Per-image RGB PSNR in dB of ``(B, 3, H, W)`` in [0, 1]."""
    return 10 * torch.log10(1 / ((x.float().clamp(0, 1) - y) ** 2).mean(dim=(1, 2, 3)))


def fit(batch: dict[str, torch.Tensor], variant: str, args: argparse.Namespace) -> list[dict[str, float]]:
    """Train the bundled weights on ``batch``; the mean gain per task every ``args.every`` steps."""
    torch.manual_seed(args.seed)
    model = load_weights(bundled_weights("small")).float().train()
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr)
    cfg = LossConfig(**{"recog": "ce", "w_recog": 0.3, **VARIANTS[variant]})  # type: ignore[arg-type]
    before = psnr(batch["input"], batch["target"])
    rain = batch["label"] == 0
    rows = []
    for step in range(args.steps + 1):
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=args.bf16):
            out = model(batch["input"])
        terms = total_loss(out, batch, cfg)
        if step % args.every == 0:
            with torch.no_grad():
                gain = psnr(select_restoration(out, batch["label"]), batch["target"]) - before
            logged = {k: float(v.detach()) for k, v in terms.items() if k in ("char", "recog")}
            rows.append({"step": step, "rain": float(gain[rain].mean()), "snow": float(gain[~rain].mean()), **logged})
            print(f"  {variant} step {step}: gain rain {rows[-1]['rain']:+.2f} snow {rows[-1]['snow']:+.2f} dB",
                  flush=True)  # fmt: skip
        opt.zero_grad(set_to_none=True)
        terms["total"].backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--variants", nargs="+", default=["paper", "norecog", "recog0.03", "charonly"],
                        choices=sorted(VARIANTS))  # fmt: skip
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--every", type=int, default=25)
    parser.add_argument("--lr", type=float, default=3e-4)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--crop", type=int, default=96)
    parser.add_argument("--mix", default="wide_all")
    parser.add_argument("--seed", type=int, default=5, help="which batch (the data seed) and the torch seed")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--bf16", action=argparse.BooleanOptionalAction, default=True)
    parser.add_argument("--out", default="benchmarks/results/memorise_probe.json", help="JSON path; '' = none")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    source = SyntheticBatches(clean_photos("train"), args.crop, args.batch, seed=args.seed, degradation=args.mix)
    batch = source.batch(0)
    start = time.perf_counter()
    results = {v: fit(batch, v, args) for v in args.variants}
    steps = [r["step"] for r in results[args.variants[0]]]
    print(f"\n| variant | {' | '.join(f'step {s}: rain / snow' for s in steps)} |")
    print("|---|" + "---:|" * len(steps))
    for v, rows in results.items():
        print(f"| {v} | " + " | ".join(f"{r['rain']:+.2f} / {r['snow']:+.2f}" for r in rows) + " |")
    if args.out:
        out = {"settings": vars(args), "seconds": time.perf_counter() - start, "results": results}
        write_result(args.out, out, "memorise_probe.py", indent=2)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
