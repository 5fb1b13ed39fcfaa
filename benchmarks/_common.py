"""Shared helpers for the benchmarks: the Restormer reference, timing, machine facts.

Benchmarks are scripts, not part of the package: they may import optional
dependencies (the ``bench`` extra) that the library never needs.
"""

from __future__ import annotations

import importlib.util
import json
import platform
import shlex
import statistics
import sys
import time
import types
from collections.abc import Callable, Sequence
from pathlib import Path

import torch
from torch import nn

from smartassign.checkpoint import atomic_write_text

# Restormer for image deraining (Zamir et al., CVPR 2022, the paper's main peer):
# the configuration of the authors' Deraining/Options/Deraining_Restormer.yml.
RESTORMER_DERAIN = dict(
    dim=48,
    num_blocks=(4, 6, 6, 8),
    num_refinement_blocks=4,
    heads=(1, 2, 4, 8),
    ffn_expansion_factor=2.66,
    bias=False,
    LayerNorm_type="WithBias",
)


def _load_module(name: str, path: Path) -> types.ModuleType:
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def load_restormer_class() -> type[nn.Module]:
    """deepinv's ``Restormer`` class, loaded without running ``deepinv/__init__.py``.

    That ``__init__`` imports torchvision, which has no build for this torch. The
    restormer module itself needs only ``deepinv.models.utils`` and
    ``deepinv.models.base`` (both loaded from their real files); the one thing
    stubbed is ``deepinv.utils.io.DownloadError``, which ``models/utils.py``
    imports for weight downloads we never make (``pretrained=None``).
    """
    spec = importlib.util.find_spec("deepinv")
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError("deepinv is not installed: pip install --no-deps 'smartassign[bench]' deepinv")
    root = Path(next(iter(spec.submodule_search_locations)))
    if "deepinv.models.restormer" in sys.modules:
        return sys.modules["deepinv.models.restormer"].Restormer
    for pkg in ("deepinv", "deepinv.utils", "deepinv.models"):
        stub = types.ModuleType(pkg)
        stub.__path__ = [str(root / pkg.partition(".")[2].replace(".", "/"))] if "." in pkg else [str(root)]
        sys.modules.setdefault(pkg, stub)
    io_stub = types.ModuleType("deepinv.utils.io")
    io_stub.DownloadError = type("DownloadError", (RuntimeError,), {})  # type: ignore[attr-defined]
    sys.modules.setdefault("deepinv.utils.io", io_stub)
    _load_module("deepinv.models.utils", root / "models" / "utils.py")
    _load_module("deepinv.models.base", root / "models" / "base.py")
    return _load_module("deepinv.models.restormer", root / "models" / "restormer.py").Restormer


def build_restormer() -> nn.Module:
    """Restormer with the deraining configuration and random weights, in eval mode."""
    return load_restormer_class()(pretrained=None, **RESTORMER_DERAIN).eval()


def median_time(
    fn: Callable[[], object], repeats: int, warmup: int = 1, sync: Callable[[], None] | None = None
) -> float:
    """Median wall time of ``fn()`` in seconds over ``repeats`` runs after ``warmup`` runs."""
    for _ in range(warmup):
        fn()
    if sync:
        sync()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        if sync:
            sync()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def peak_rss_mib() -> float:
    """Peak resident set size of this process so far, in MiB (Linux ``ru_maxrss`` is KiB)."""
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def cpu_name() -> str:
    """The CPU model name as ``lscpu`` reports it (``/proc/cpuinfo``), else ``platform.processor()``."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def machine_facts() -> dict[str, object]:
    """What a result JSON records of the machine: CPU model, cores, platform, torch version, load average."""
    import os

    return {"cpu": cpu_name(), "cores": os.cpu_count(), "platform": platform.platform(), "torch": torch.__version__,
            "load_average": os.getloadavg()}  # fmt: skip


def matmul_gflops(n: int = 2048, repeats: int = 3, device: str = "cpu", dtype: torch.dtype = torch.float32) -> float:
    """Measured throughput of one large square ``torch.matmul`` in GFLOP/s (``2 n^3`` FLOPs)."""
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    sync = torch.cuda.synchronize if device == "cuda" else None
    t = median_time(lambda: a @ b, repeats, warmup=1, sync=sync)
    return 2 * n**3 / t / 1e9


def write_result(
    path: str | Path,
    record: dict[str, object],
    script: str,
    argv: Sequence[str] | None = None,
    machine: dict[str, object] | None = None,
    indent: int = 1,
) -> Path:
    """Write a benchmark's result JSON to ``path`` and say so: ``record`` after the command that reproduces it
    (``python benchmarks/SCRIPT ARGS``, with ``argv`` or this process's arguments) and the machine it ran on
    (:func:`machine_facts` with ``machine`` added; a ``"machine"`` or ``"command"`` key of ``record`` wins).
    Parents are made; the write is atomic, so an interrupted run leaves the previous result whole."""
    args = sys.argv[1:] if argv is None else list(argv)
    full = {
        "command": "python " + shlex.join([f"benchmarks/{script}", *args]),
        "machine": {**machine_facts(), **(machine or {})},
        **record,
    }
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out, json.dumps(full, indent=indent) + "\n")
    print(f"wrote {out}")
    return out
