"""CPU training and restoration in float32 and with bf16 autocast (``train.amp_cpu``, ``--precision``).

Each row times the trainer's own ``train_step`` (forward, the whole loss of eq. 19, backward, clipping, AdamW) on
one synthetic batch of the engine (``wide_all``, half rain, half snow) for ``--steps`` steps after a warm-up, with
``--threads`` torch threads. It reports crops per wall second and per CPU-second of this process (the second is
what one uncontended core would do when other work shares the machine) and the speed-up of bf16 over float32.
bf16 autocast is fast only on CPUs with native bf16 (AMX or AVX512-BF16: the JSON's ``cpu_flags``, from
``smartassign.restore.native_bf16_flags``); elsewhere it is slower, which is why ``train.amp_cpu`` is off by default.

The restoration rows time ``Restorer.restore`` of the bundled weights on a held-out photo (``--restore-side``²,
the engine's rain, 512² tiles) in float32 and in bf16 (what ``--precision auto`` picks on such a CPU), and how far
the two pictures are apart (mean and largest difference in uint8 levels, PSNR of one against the other).

Prints Markdown tables and writes JSON with the command, machine, torch version and load average.

    .venv/bin/python benchmarks/cpu_amp.py                        # the committed figures
    .venv/bin/python benchmarks/cpu_amp.py --presets tiny --steps 2 --out ''   # a smoke run, no JSON
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import write_result  # noqa: E402
from smartassign import build_model  # noqa: E402
from smartassign.config import LossConfig  # noqa: E402
from smartassign.data import SyntheticBatches, clean_photos  # noqa: E402
from smartassign.restore import native_bf16_flags  # noqa: E402
from smartassign.train import train_step  # noqa: E402


def rate(preset: str, batch: dict[str, Any], dtype: torch.dtype | None, steps: int) -> dict[str, float]:
    """Crops per wall second and per CPU-second of ``steps`` training steps of ``preset`` after one warm-up step."""
    torch.manual_seed(0)
    model = build_model(preset)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    loss = LossConfig(recog="ce", w_recog=0.3)
    cpu = torch.device("cpu")
    train_step(model, batch, opt, loss, cpu, dtype, grad_clip=1.0)
    start, used = time.perf_counter(), time.process_time()
    for _ in range(steps):
        train_step(model, batch, opt, loss, cpu, dtype, grad_clip=1.0)
    wall, used = time.perf_counter() - start, time.process_time() - used
    n = steps * batch["input"].shape[0]
    return {"crops_per_s": n / wall, "crops_per_cpu_s": n / used}


def restore_rows(side: int, repeats: int) -> dict[str, Any]:
    """Seconds per restoration of a ``side``² rainy held-out photo by the bundled weights, float32 and bf16."""
    from smartassign.data import heldout_photo, weathered
    from smartassign.restore import Restorer

    image = weathered(heldout_photo(0, side, side), "rain", seed=1)
    row: dict[str, Any] = {"side": side}
    pictures = {}
    for name, dtype in (("float32", torch.float32), ("bf16", torch.bfloat16)):
        restorer = Restorer.from_weights(None, device="cpu", dtype=dtype)
        restorer.restore(image, "rain")  # warm-up
        start = time.perf_counter()
        for _ in range(repeats):
            pictures[name] = restorer.restore(image, "rain").image.astype(np.float64)
        row[f"{name}_s"] = (time.perf_counter() - start) / repeats
    diff = np.abs(pictures["bf16"] - pictures["float32"])
    mse = float((diff**2).mean())
    psnr = 10 * np.log10(255**2 / mse) if mse else float("inf")
    row.update(speedup=row["float32_s"] / row["bf16_s"], mean_abs_levels=float(diff.mean()),
               max_abs_levels=float(diff.max()), psnr_db=float(psnr))  # fmt: skip
    return row


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--presets", nargs="+", default=["tiny", "small"])
    parser.add_argument("--crop", type=int, default=128)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--restore-side", type=int, default=512, help="restoration rows: photo side; 0 = none")
    parser.add_argument("--restore-repeats", type=int, default=2)
    parser.add_argument("--out", default="benchmarks/results/cpu_amp.json", help="JSON path; '' = none")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    source = SyntheticBatches(clean_photos("train"), args.crop, args.batch, seed=0, degradation="wide_all")
    batch = source.batch(0)
    rows = []
    for preset in args.presets:
        fp32 = rate(preset, batch, None, args.steps)
        bf16 = rate(preset, batch, torch.bfloat16, args.steps)
        rows.append({"preset": preset, "float32": fp32, "bf16": bf16,
                     "speedup": bf16["crops_per_cpu_s"] / fp32["crops_per_cpu_s"]})  # fmt: skip
    print(f"| preset | float32 crops/s (per CPU-s) | bf16 crops/s (per CPU-s) | bf16 speed-up (CPU-s) |  "
          f"{args.crop}², batch {args.batch}, {args.threads} thread(s)")
    print("|---|---:|---:|---:|")
    for r in rows:
        f, b = r["float32"], r["bf16"]
        print(f"| {r['preset']} | {f['crops_per_s']:.2f} ({f['crops_per_cpu_s']:.2f}) "
              f"| {b['crops_per_s']:.2f} ({b['crops_per_cpu_s']:.2f}) | {r['speedup']:.2f}x |")  # fmt: skip
    restore = restore_rows(args.restore_side, args.restore_repeats) if args.restore_side else None
    if restore:
        print(f"\n| restoration, {restore['side']}² | float32 s | bf16 s | speed-up | bf16 vs float32 |")
        print("|---|---:|---:|---:|---|")
        r = restore
        print(f"| bundled small, rain | {r['float32_s']:.2f} | {r['bf16_s']:.2f} | {r['speedup']:.2f}x "
              f"| mean {restore['mean_abs_levels']:.3f} / max {restore['max_abs_levels']:.0f} uint8 levels, "
              f"{restore['psnr_db']:.1f} dB |")  # fmt: skip
    if args.out:
        result = {"settings": vars(args), "rows": rows, "restore": restore}
        write_result(args.out, result, "cpu_amp.py", machine={"cpu_flags": native_bf16_flags()}, indent=2)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
