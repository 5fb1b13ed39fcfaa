"""Data throughput: synthesis alone, the mixed loader alone, and the loader feeding tiny-model training steps.

Prints a Markdown table and writes JSON. The loader rows show whether the CPU keeps the model busy: when
"loader + tiny model" runs near the model's own speed, decoding and synthesis are not the bottleneck.

    .venv/bin/python benchmarks/data_throughput.py --workers 2 --out benchmarks/results/data_throughput.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import numpy as np
import torch

from smartassign import build_model
from smartassign.data import SyntheticPairs, clean_photos, mixed_loader, synthesize

Rate = tuple[float, float | None]  # (images per wall second, images per CPU second of this process or None)


def synth_rate(task: str, size: int, n: int) -> Rate:
    """Images/s of ``synthesize`` alone on one core, on a fixed clean crop."""
    clean = np.random.default_rng(0).random((size, size, 3), dtype=np.float32)
    synthesize(clean, task, np.random.default_rng(0))  # warm FFT plans
    start, cpu = time.perf_counter(), time.process_time()
    for i in range(n):
        synthesize(clean, task, np.random.default_rng(i))
    return n / (time.perf_counter() - start), n / (time.process_time() - cpu)


def loader_rate(size: int, batch: int, workers: int, batches: int, model: torch.nn.Module | None) -> Rate:
    """Images/s through ``mixed_loader`` (optionally with a training step of ``model`` per batch)."""
    photos = clean_photos("train")
    rain = SyntheticPairs(photos, "rain", crop=size, length=100_000, seed=0)
    snow = SyntheticPairs(photos, "snow", crop=size, length=100_000, seed=0)
    loader = mixed_loader(rain, snow, batch_size=batch, seed=0, workers=workers)
    opt = torch.optim.Adam(model.parameters(), lr=1e-4) if model is not None else None
    threads = torch.get_num_threads()
    if model is None:
        torch.set_num_threads(1)  # as in a DataLoader worker: collation alone gains nothing from threads
    warmup, seen = 2 + workers, 0
    start = cpu = 0.0
    for i, b in enumerate(loader):
        if i == warmup:
            start, cpu, seen = time.perf_counter(), time.process_time(), 0
        if model is not None and opt is not None:
            out = model(b["input"])
            rain_mask = (b["label"] == 0).view(-1, 1, 1, 1)
            pred = torch.where(rain_mask, out.derain, out.desnow)
            loss = (pred - b["target"]).abs().mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
        seen += b["input"].shape[0]
        if i == warmup + batches:
            break
    wall = seen / (time.perf_counter() - start)
    torch.set_num_threads(threads)
    # Workers' CPU time is not this process's: a CPU rate only means something when everything runs here.
    return wall, (seen / (time.process_time() - cpu) if workers == 0 and model is None else None)


def model_rate(size: int, batch: int, steps: int) -> Rate:
    """Images/s of tiny-model training steps on a resident batch (no loading): the ceiling for the loader rows."""
    model = build_model("tiny").train()
    opt = torch.optim.Adam(model.parameters(), lr=1e-4)
    x = torch.rand(batch, 3, size, size)
    start = 0.0
    for i in range(steps + 1):
        if i == 1:
            start = time.perf_counter()
        out = model(x)
        loss = (out.derain - x).abs().mean() + (out.desnow - x).abs().mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    return steps * batch / (time.perf_counter() - start), None


def main() -> None:
    """Run every measurement, print the table, write the JSON."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--size", type=int, default=256)
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--images", type=int, default=120, help="images per synthesis measurement")
    p.add_argument("--batches", type=int, default=30, help="timed batches per loader measurement")
    p.add_argument("--out", type=Path, default=Path("benchmarks/results/data_throughput.json"))
    args = p.parse_args()
    torch.manual_seed(0)

    rows: list[tuple[str, Rate]] = [
        ("synthesize rain (1 core)", synth_rate("rain", args.size, args.images)),
        ("synthesize snow (1 core)", synth_rate("snow", args.size, args.images)),
        ("loader alone, 0 workers", loader_rate(args.size, args.batch, 0, args.batches, None)),
        (f"loader alone, {args.workers} workers", loader_rate(args.size, args.batch, args.workers, args.batches, None)),
        ("tiny model train step alone", model_rate(args.size, args.batch, max(args.batches // 6, 3))),
        (
            f"loader + tiny model train step, {args.workers} workers",
            loader_rate(args.size, args.batch, args.workers, max(args.batches // 6, 3), build_model("tiny").train()),
        ),
    ]
    load = os.getloadavg()[0]
    print(f"| measurement ({args.size}x{args.size}, batch {args.batch}) | images/s (wall) | images/CPU-s |")
    print("|---|---:|---:|")
    for name, (wall, cpu) in rows:
        print(f"| {name} | {wall:.1f} | {'' if cpu is None else f'{cpu:.1f}'} |")
    print(f"load average at the end: {load:.1f} on {os.cpu_count()} CPUs (wall rates drop when others share them)")
    result = {
        "size": args.size,
        "batch": args.batch,
        "workers": args.workers,
        "cpus": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "machine": platform.platform(),
        "processor": platform.processor(),
        "train_photos": len(clean_photos("train")),
        "load_average_1min_at_end": load,
        "images_per_s_wall": {name: wall for name, (wall, _) in rows},
        "images_per_cpu_s": {name: cpu for name, (_, cpu) in rows if cpu is not None},
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
