"""CUDA inference latency of the presets and Restormer: bf16 autocast, channels_last, batch 1.

    python benchmarks/cuda_latency.py --out benchmarks/results/cuda_latency.json

Prints a table and writes JSON. Random weights (speed does not depend on them). Needs a CUDA GPU and,
for Restormer, deepinv installed without its dependencies (see benchmarks/_common.py).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

from _common import build_restormer, write_result
from smartassign.model import build_model


def latency_ms(model: torch.nn.Module, side: int, warmup: int = 3, repeats: int = 10) -> float:
    """Mean milliseconds of one ``(1, 3, side, side)`` forward pass on CUDA."""
    x = torch.rand(1, 3, side, side, device="cuda").contiguous(memory_format=torch.channels_last)
    with torch.inference_mode(), torch.autocast("cuda", torch.bfloat16):
        for _ in range(warmup):
            model(x)
        torch.cuda.synchronize()
        start = time.perf_counter()
        for _ in range(repeats):
            model(x)
        torch.cuda.synchronize()
    return (time.perf_counter() - start) / repeats * 1000


def main() -> None:
    """Time every model at every size and write the JSON."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sizes", nargs="+", type=int, default=[256, 512, 1024])
    p.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "results" / "cuda_latency.json")
    args = p.parse_args()
    if not torch.cuda.is_available():
        raise SystemExit("cuda_latency.py: no CUDA GPU")
    models = {name: build_model(name) for name in ("tiny", "small", "base")} | {"restormer": build_restormer()}
    res: dict[str, object] = {"gpu": torch.cuda.get_device_name()}
    print("| model | side | ms | MP/s |\n|---|---:|---:|---:|")
    for name, model in models.items():
        model = model.cuda().eval().to(memory_format=torch.channels_last)
        for side in args.sizes:
            ms = latency_ms(model, side)
            res[f"{name}@{side}"] = ms
            print(f"| {name} | {side} | {ms:.2f} | {side * side / 1e3 / ms:.1f} |")
    write_result(args.out, res, "cuda_latency.py")


if __name__ == "__main__":
    main()
