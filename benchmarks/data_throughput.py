"""Data throughput of the synthetic rain/snow engine: crops/s with the clean side included, CPU and CUDA.

Each measured batch is what synthetic training makes, by the trainer's own ``SyntheticBatches.batch``: ``batch``
random crops of the training photos (decoded once into uint8 tensors on the device), zoomed, flipped, turned by
90° and mildly colour-jittered there, half degraded with rain and half with snow by ``smartassign.data.degrade``
(the ``mixed`` mix by default), both quantized to 8 bits. Rows: CPU with 1 and 2 torch threads, and CUDA when a
GPU is present, at 128² and 256². CPU rows also give crops per CPU-second of this process, which is what one
uncontended core does when others share the machine. A ``tiny`` model training step at the same crop size (CPU,
2 threads) gives the fraction of a training step the data would cost.

Prints a Markdown table and writes JSON with the command, machine, torch version and load average.

    .venv/bin/python benchmarks/data_throughput.py                # the committed figures
    .venv/bin/python benchmarks/data_throughput.py --quick        # a smoke run (tiny batch, 64², no JSON)
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import write_result  # noqa: E402
from smartassign import build_model  # noqa: E402
from smartassign.data import SyntheticBatches, clean_photos  # noqa: E402


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def engine_rate(
    photos: Sequence[Path], device: torch.device, size: int, batch: int, batches: int, mix: str
) -> dict[str, float | None]:
    """Crops/s (wall, and per CPU-second on CPU) of the trainer's ``SyntheticBatches.batch`` and the clean side's
    share of that time (``SyntheticBatches.clean`` alone, timed over the same steps)."""
    source = SyntheticBatches(photos, size, batch, seed=0, device=device, degradation=mix)
    source.batch(0)  # warm up: allocations, FFT plans, CUDA kernels
    _sync(device)
    start, cpu = time.perf_counter(), time.process_time()
    for step in range(1, batches + 1):
        source.batch(step)
    _sync(device)
    wall, cpu = time.perf_counter() - start, time.process_time() - cpu
    start = time.perf_counter()
    for step in range(1, batches + 1):
        source.clean(source.seeds(step))
    _sync(device)
    clean = time.perf_counter() - start
    n = batch * batches
    return {
        "crops_per_s": n / wall,
        "crops_per_cpu_s": n / cpu if device.type == "cpu" else None,
        "clean_side_share": clean / wall,
        "seconds": wall,
    }


def model_step_seconds(device: torch.device, size: int, batch: int, steps: int) -> float:
    """Median seconds of one ``tiny`` training step (forward, L1 on both heads, backward, Adam) per crop."""
    model = build_model("tiny").to(device).train()
    opt = torch.optim.Adam(model.parameters(), lr=1e-4)
    x = torch.rand(batch, 3, size, size, device=device)
    times = []
    for i in range(steps + 1):
        _sync(device)
        start = time.perf_counter()
        out = model(x)
        loss = (out.derain - x).abs().mean() + (out.desnow - x).abs().mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        _sync(device)
        if i:  # the first step warms up
            times.append(time.perf_counter() - start)
    return sorted(times)[len(times) // 2] / batch


def previous_figures(path: Path) -> dict[str, Any] | None:
    """The numpy engine's figures, when ``path`` still holds its JSON (kept in the new JSON for comparison)."""
    try:
        old = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    if "images_per_s_wall" not in old:
        return old.get("previous_numpy_engine")
    return old


def _step_row(device: str, threads: int | None, size: int, batch: int, step: float, data: float) -> dict[str, Any]:
    return {
        "device": device,
        "threads": threads,
        "size": size,
        "batch": batch,
        "step_seconds_per_crop": step,
        "data_seconds_per_crop": data,
        "data_share_of_step": data / step,
    }


def main(argv: Sequence[str] | None = None) -> int:
    """Run every measurement, print the table, write the JSON."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sizes", type=int, nargs="+", default=[128, 256])
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--batches", type=int, default=3, help="timed batches per CPU row (CUDA: 10x as many)")
    p.add_argument("--threads", type=int, nargs="+", default=[1, 2], help="CPU torch thread counts")
    p.add_argument("--mix", default="mixed")
    p.add_argument("--model-batch", type=int, default=4, help="batch of the tiny training step (0: skip it)")
    p.add_argument("--no-cuda", action="store_true")
    p.add_argument("--quick", action="store_true", help="64², batch 4, one batch, no model step, no JSON")
    p.add_argument("--out", type=Path, default=Path("benchmarks/results/data_throughput.json"))
    args = p.parse_args(argv)
    if args.quick:
        args.sizes, args.batch, args.batches, args.model_batch = [64], 4, 1, 0
    photos = clean_photos("train")
    load_start = os.getloadavg()
    threads0 = torch.get_num_threads()
    cpu = torch.device("cpu")
    rows: list[dict[str, Any]] = []
    for threads in args.threads:
        torch.set_num_threads(threads)
        for size in args.sizes:
            r = engine_rate(photos, cpu, size, args.batch, args.batches, args.mix)
            rows.append({"device": "cpu", "threads": threads, "size": size, **r})
            print(f"cpu, {threads} thread(s), {size}²: {r['crops_per_s']:.1f} crops/s", file=sys.stderr)
    torch.set_num_threads(max(args.threads))
    model: list[dict[str, Any]] = []
    if args.model_batch:
        for size in args.sizes:
            step = model_step_seconds(cpu, size, args.model_batch, steps=2)
            data = next(1 / r["crops_per_s"] for r in rows if r["size"] == size and r["threads"] == max(args.threads))
            model.append(_step_row("cpu", max(args.threads), size, args.model_batch, step, data))
    gpu = None
    if torch.cuda.is_available() and not args.no_cuda:
        dev = torch.device("cuda")
        gpu = torch.cuda.get_device_name(dev)
        for size in args.sizes:
            r = engine_rate(photos, dev, size, args.batch, args.batches * 10, args.mix)
            rows.append({"device": "cuda", "threads": None, "size": size, **r})
            if args.model_batch:
                step = model_step_seconds(dev, size, args.batch, steps=5)
                model.append(_step_row("cuda", None, size, args.batch, step, 1 / r["crops_per_s"]))
    torch.set_num_threads(threads0)
    load_end = os.getloadavg()

    print(f"| device | {' | '.join(f'{s}² crops/s (per CPU-s)' for s in args.sizes)} | clean side share |")
    print(f"|---|{'---:|' * len(args.sizes)}---:|")
    for dev_name, thr in [("cpu", t) for t in args.threads] + ([("cuda", None)] if gpu else []):
        mine = [r for r in rows if r["device"] == dev_name and r["threads"] == thr]
        label = f"CPU, {thr} thread{'s' if thr != 1 else ''}" if dev_name == "cpu" else f"CUDA ({gpu})"
        cells = [
            f"{r['crops_per_s']:.1f}" + (f" ({r['crops_per_cpu_s']:.1f})" if r["crops_per_cpu_s"] else "") for r in mine
        ]
        share = " / ".join(f"{r['clean_side_share']:.0%}" for r in mine)
        print(f"| {label} | {' | '.join(cells)} | {share} |")
    if not gpu:
        print("| CUDA | not measured: no GPU on this machine | |")
    for m in model:
        print(
            f"tiny training step, {m['device']}, {m['size']}², batch {m['batch']}: {m['step_seconds_per_crop']:.3f} s"
            f" per crop; the data costs {m['data_share_of_step']:.1%} of it"
        )
    print(f"load average (1, 5, 15 min): start {load_start}, end {load_end} on {os.cpu_count()} CPUs")
    if args.quick:
        return 0
    result = {
        "what": "crops/s of SyntheticBatches.batch: clean sampling (uint8 photo tensors on the device: crop, zoom, "
        "flips, rot90, colour jitter) + degrade, half rain half snow per batch, 8-bit quantized",
        "mix": args.mix,
        "batch": args.batch,
        "gpu": gpu,
        "train_photos": len(photos),
        "load_average_at_start": load_start,
        "load_average_at_end": load_end,
        "rows": rows,
        "tiny_training_step": model,
        "previous_numpy_engine": previous_figures(args.out),
    }
    write_result(args.out, result, "data_throughput.py", argv, indent=2)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
