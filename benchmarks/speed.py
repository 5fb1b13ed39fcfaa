"""Speed, memory and throughput of the SmartAssign presets against Restormer, measured in one run.

    python benchmarks/speed.py                # full CPU grid (256², 512², 1024²), ~15-25 min on 2 cores
    python benchmarks/speed.py --quick        # 256² on CPU (+ CUDA part when a GPU is present), ~2 min on a GPU box

Every model lives in its own worker process, so peak RSS is per model (the
high-water mark is reset before each measurement), and the parent interleaves
the models round-robin, so load from other users of a shared machine falls on
all of them alike: the ratios against Restormer are the headline, absolute
seconds are not. CPU numbers use ``--threads`` threads (default 2).

Reported: parameters, GFLOPs at 256² (torch's FlopCounterMode, 2 x MACs),
median CPU latency and megapixels/s per size, peak RSS, achieved GFLOP/s as a
fraction of a large matmul's, training images/s (256², batch 4) and, with a
GPU, CUDA latency (bf16 autocast, channels_last) and training with
torch.compile on and off. Writes JSON (``--out``) and prints Markdown tables.

CPU modes: ``whole`` is one bare forward (every output, global pools: what
training computes); ``whole-tlc`` the same with test-time local statistics;
``tiledN`` the :class:`~smartassign.restore.Restorer` with tiles of N for a
given task (one head); ``e2eN`` end to end as ``smartassign restore`` runs it:
a uint8 image, ``task="auto"``, recognition and restoration in one pass per
tile, TLC on. Random weights recognise nothing, so the decision stays open to
the last tile and both heads run everywhere: the one pass's worst case.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import build_restormer, cpu_name, matmul_gflops, median_time, write_result  # noqa: E402

RESTORMER = "restormer"
# name -> (preset, attention kind); "small-window" decides the default attention kind (DESIGN.md).
SMARTASSIGN = {
    "tiny": ("tiny", "channel"),
    "small": ("small", "channel"),
    "base": ("base", "channel"),
    "small-window": ("small", "window"),
}
ALL_MODELS = [*SMARTASSIGN, RESTORMER]
DEFAULT_REPEATS = {256: 3, 512: 2}  # larger sizes: 1
HEADLINE = ("small", 1024)


# --------------------------------------------------------------------------- worker side


def _build(name: str) -> torch.nn.Module:
    """The model ``name`` with random weights, in eval mode, on the CPU."""
    if name == RESTORMER:
        return build_restormer()
    from smartassign.config import model_config
    from smartassign.model import build_model

    preset, attention = SMARTASSIGN[name]
    return build_model(model_config(preset, attention=attention)).eval()


def _rss_mib(field: str = "VmHWM") -> float:
    """``VmHWM`` (peak) or ``VmRSS`` (current) of this process in MiB, from /proc/self/status."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    return float("nan")


def _reset_peak_rss() -> None:
    """Reset the kernel's peak-RSS mark to the current RSS (Linux >= 4.0: ``clear_refs`` 5)."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        pass


class Worker:
    """Holds one model and answers measurement requests (one JSON object per line)."""

    def __init__(self, name: str, threads: int) -> None:
        torch.set_num_threads(threads)
        torch.manual_seed(0)
        self.name = name
        self.model = _build(name)
        self.is_restormer = name == RESTORMER

    def info(self) -> dict[str, Any]:
        """Parameter count and forward GFLOPs at 256² (FlopCounterMode: 2 x MACs)."""
        from smartassign.model import count_flops, count_parameters

        return {"params": count_parameters(self.model), "gflops_256": count_flops(self.model, 256) / 1e9}

    def cpu(self, size: int, mode: str, warmup: bool) -> dict[str, Any]:
        """One timed restoration of a ``size``² image in ``mode`` (``whole``, ``whole-tlc``, ``tiledN``, ``e2eN``)."""
        import numpy as np

        from smartassign.restore import TLC_WINDOW, Restorer, set_local_statistics

        if mode in ("whole", "whole-tlc"):
            x = torch.rand(1, 3, size, size)
            if not self.is_restormer:  # a Restorer of an earlier run left its windows on the model
                set_local_statistics(self.model, TLC_WINDOW if mode == "whole-tlc" else None)

            def run() -> None:
                with torch.inference_mode():
                    self.model(x)

        else:
            e2e = mode.startswith("e2e")
            restorer = Restorer(self.model, device="cpu", tile=int(mode.removeprefix("e2e" if e2e else "tiled")))
            rng = np.random.default_rng(0)
            image = (
                rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
                if e2e
                else rng.random((size, size, 3), dtype=np.float32)
            )
            task = "auto" if e2e else "rain"

            def run() -> None:
                restorer.restore(image, task=task)

        if warmup:
            run()
        base = _rss_mib("VmRSS")
        _reset_peak_rss()
        start = time.perf_counter()
        run()
        seconds = time.perf_counter() - start
        return {"seconds": seconds, "peak_rss_mib": _rss_mib("VmHWM"), "base_rss_mib": base}

    def _train_step_fn(self, model: torch.nn.Module, device: str, autocast: bool) -> Any:
        from smartassign.config import LossConfig
        from smartassign.losses import total_loss

        gen = torch.Generator().manual_seed(0)
        batch = {
            "input": torch.rand(4, 3, 256, 256, generator=gen),
            "target": torch.rand(4, 3, 256, 256, generator=gen),
            "label": torch.randint(0, 2, (4,), generator=gen),
        }
        batch = {
            k: (v.to(device, memory_format=torch.channels_last) if v.ndim == 4 else v.to(device))
            for k, v in batch.items()
        }
        params = [p for p in self.model.parameters() if p.requires_grad]
        optimizer = torch.optim.Adam(params, lr=1e-4)
        loss_cfg = LossConfig()

        def step() -> None:
            optimizer.zero_grad(set_to_none=True)
            with torch.autocast(device, dtype=torch.bfloat16, enabled=autocast):
                out = model(batch["input"])
            total_loss(out, batch, loss_cfg)["total"].backward()
            optimizer.step()

        return step

    def train_cpu(self, steps: int) -> dict[str, Any]:
        """Training images/s at 256², batch 4, float32 on the CPU (one warm-up step)."""
        self.model.train()
        step = self._train_step_fn(self.model, "cpu", autocast=False)
        seconds = median_time(step, steps, warmup=1)
        self.model.eval()
        return {"images_per_s": 4 / seconds, "step_s": seconds}

    def cuda(self, sizes: list[int], repeats: int) -> dict[str, Any]:
        """CUDA latency per size: bf16 autocast, channels_last, inference mode; peak allocated memory."""
        model = self.model.cuda().to(memory_format=torch.channels_last)
        result = {}
        for size in sizes:
            x = torch.rand(1, 3, size, size, device="cuda").contiguous(memory_format=torch.channels_last)

            def run(x: torch.Tensor = x) -> None:
                with torch.inference_mode(), torch.autocast("cuda", dtype=torch.bfloat16):
                    model(x)

            torch.cuda.reset_peak_memory_stats()
            seconds = median_time(run, repeats, warmup=3, sync=torch.cuda.synchronize)
            result[str(size)] = {"seconds": seconds, "peak_mem_mib": torch.cuda.max_memory_allocated() / 2**20}
        self.model.cpu()
        torch.cuda.empty_cache()
        return result

    def train_cuda(self, steps: int, compile_model: bool) -> dict[str, Any]:
        """CUDA training images/s at 256², batch 4, bf16 autocast, channels_last; torch.compile on or off."""
        self.model.cuda().to(memory_format=torch.channels_last).train()
        model = torch.compile(self.model) if compile_model else self.model
        step = self._train_step_fn(model, "cuda", autocast=True)
        start = time.perf_counter()
        step()  # compiles when compile_model
        torch.cuda.synchronize()
        first = time.perf_counter() - start
        seconds = median_time(step, steps, warmup=2, sync=torch.cuda.synchronize)
        self.model.eval().cpu()
        torch.cuda.empty_cache()
        return {"images_per_s": 4 / seconds, "step_s": seconds, "first_step_s": first}


def worker_main(name: str, threads: int) -> None:
    """Serve requests on stdin; answers go to the original stdout, everything else to stderr."""
    proto = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    worker = Worker(name, threads)
    proto.write(json.dumps({"ready": True}) + "\n")
    for line in sys.stdin:
        request = json.loads(line)
        op = request.pop("op")
        if op == "quit":
            break
        try:
            answer = getattr(worker, op)(**request)
        except Exception as exc:  # reported to the parent, which records and goes on
            answer = {"error": f"{type(exc).__name__}: {exc}"}
        proto.write(json.dumps(answer) + "\n")


# --------------------------------------------------------------------------- parent side


class Client:
    """A worker subprocess for one model."""

    def __init__(self, name: str, threads: int) -> None:
        env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
        self.name = name
        self.proc = subprocess.Popen(
            [sys.executable, __file__, "--worker", name, "--threads", str(threads)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            env=env,
        )
        self._read()

    def _read(self) -> dict[str, Any]:
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"worker {self.name} died (exit {self.proc.wait()}); see its stderr above")
        return json.loads(line)

    def ask(self, op: str, **kw: Any) -> dict[str, Any]:
        """Send one request and wait for its answer."""
        assert self.proc.stdin is not None
        self.proc.stdin.write(json.dumps({"op": op, **kw}) + "\n")
        self.proc.stdin.flush()
        return self._read()

    def close(self) -> None:
        """Ask the worker to quit and wait for it."""
        if self.proc.poll() is None:
            assert self.proc.stdin is not None
            self.proc.stdin.write(json.dumps({"op": "quit"}) + "\n")
            self.proc.stdin.close()
            self.proc.wait(timeout=60)


def log(msg: str) -> None:
    """Progress to stderr, so stdout is the Markdown report."""
    print(msg, file=sys.stderr, flush=True)


def machine_info(threads: int) -> dict[str, Any]:
    """What the numbers were measured on."""
    info = {
        "cpu": cpu_name(),
        "cpu_count": os.cpu_count(),
        "threads": threads,
        "torch": torch.__version__,
        "python": platform.python_version(),
        "load_avg_start": os.getloadavg(),
    }
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name()
    return info


def cpu_grid(clients: dict[str, Client], args: argparse.Namespace) -> list[dict[str, Any]]:
    """Round-robin CPU latency/RSS measurements over models, sizes, repeats and modes."""
    runs = []
    for size in args.sizes:
        jobs = [(n, "whole") for n in clients if size <= args.whole_max]
        jobs += [(n, "whole-tlc") for n in clients if n in args.tlc and size <= args.whole_max]
        jobs += [(n, f"tiled{t}") for n in clients if n in args.tiled and n != RESTORMER for t in args.tile]
        jobs += [(n, f"e2e{t}") for n in clients if n in args.e2e and n != RESTORMER for t in args.tile]
        repeats = args.repeats or DEFAULT_REPEATS.get(size, 1)
        warmed: set[tuple[str, str]] = set()
        for rep in range(repeats):
            shift = rep % max(len(jobs), 1)
            for name, mode in jobs[shift:] + jobs[:shift]:
                warmup = size <= 256 and (name, mode) not in warmed
                warmed.add((name, mode))
                answer = clients[name].ask("cpu", size=size, mode=mode, warmup=warmup)
                answer.update(model=name, size=size, mode=mode, repeat=rep)
                runs.append(answer)
                log(f"  cpu {name:12s} {mode:5s} {size:5d}² rep {rep}: {answer.get('seconds', float('nan')):8.3f} s")
    return runs


def summarize(runs: list[dict[str, Any]]) -> dict[str, dict[str, dict[str, dict[str, float]]]]:
    """``{model: {mode: {size: {median_s, min_s, n, peak_rss_mib}}}}`` from the raw runs."""
    out: dict[str, Any] = {}
    for r in runs:
        if "seconds" not in r:
            continue
        cell = out.setdefault(r["model"], {}).setdefault(r["mode"], {}).setdefault(str(r["size"]), {"times": []})
        cell["times"].append(r["seconds"])
        cell["peak_rss_mib"] = max(cell.get("peak_rss_mib", 0.0), r["peak_rss_mib"])
        cell["base_rss_mib"] = r["base_rss_mib"]
    for modes in out.values():
        for sizes in modes.values():
            for size, cell in sizes.items():
                times = cell.pop("times")
                cell.update(median_s=statistics.median(times), min_s=min(times), n=len(times))
                cell["megapixels_per_s"] = int(size) ** 2 / 1e6 / cell["median_s"]
    return out


def add_ratios(results: dict[str, Any]) -> None:
    """Speed-up against Restormer (whole image, same size) and efficiency against the matmul rate."""
    cpu = results["cpu"]
    ref = cpu.get(RESTORMER, {}).get("whole", {})
    peak = results["matmul_gflops"]
    for name, modes in cpu.items():
        gflops_256 = results["models"][name]["gflops_256"]
        for mode, sizes in modes.items():
            for size, cell in sizes.items():
                if size in ref:
                    cell["speedup_vs_restormer"] = ref[size]["median_s"] / cell["median_s"]
                if mode == "whole":  # FLOPs grow with the pixel count for every model here
                    achieved = gflops_256 * (int(size) / 256) ** 2 / cell["median_s"]
                    cell["achieved_gflops_per_s"] = achieved
                    cell["fraction_of_matmul"] = achieved / peak


def _fmt(x: float | None, spec: str = ".2f") -> str:
    return "–" if x is None else format(x, spec)


def markdown(results: dict[str, Any]) -> str:
    """The report: model sizes, CPU latency with ratios, memory, efficiency, training, CUDA."""
    m = results["machine"]
    sizes = [str(s) for s in results["args"]["sizes"]]
    lines = [
        f"Machine: {m['cpu']}, {m['cpu_count']} logical CPUs, {m['threads']} torch threads, torch {m['torch']}"
        + (f", GPU {m['gpu']}" if "gpu" in m else ""),
        f"Matmul (2048², fp32, {m['threads']} threads): {results['matmul_gflops']:.1f} GFLOP/s.",
        "",
        "| model | params (M) | GFLOPs @256² | FLOPs vs Restormer |",
        "|---|---:|---:|---:|",
    ]
    ref_flops = results["models"].get(RESTORMER, {}).get("gflops_256")
    for name, info in results["models"].items():
        ratio = f"{info['gflops_256'] / ref_flops:.2f}x" if ref_flops else "–"
        lines.append(f"| {name} | {info['params'] / 1e6:.2f} | {info['gflops_256']:.1f} | {ratio} |")

    cpu = results["cpu"]
    head = " | ".join(f"{s}²" for s in sizes)
    lines += [
        "",
        "CPU latency, seconds (median; in brackets: speed-up against Restormer whole-image at the same size)",
        "",
        f"| model | mode | {head} | MP/s @{sizes[-1]}² |",
        "|---|---|" + "---:|" * (len(sizes) + 1),
    ]
    for name, modes in cpu.items():
        for mode, cells in modes.items():
            row = []
            for s in sizes:
                c = cells.get(s)
                if c is None:
                    row.append("–")
                else:
                    r = c.get("speedup_vs_restormer")
                    row.append(f"{c['median_s']:.2f}" + (f" ({r:.1f}x)" if r and name != RESTORMER else ""))
            last = cells.get(sizes[-1], {}).get("megapixels_per_s")
            lines.append(f"| {name} | {mode} | " + " | ".join(row) + f" | {_fmt(last, '.3f')} |")

    lines += [
        "",
        "Peak RSS, MiB (whole process: model, torch and activations)",
        "",
        f"| model | mode | {head} |",
        "|---|---|" + "---:|" * len(sizes),
    ]
    for name, modes in cpu.items():
        for mode, cells in modes.items():
            row = [_fmt(cells.get(s, {}).get("peak_rss_mib"), ".0f") for s in sizes]
            lines.append(f"| {name} | {mode} | " + " | ".join(row) + " |")

    lines += [
        "",
        "Achieved GFLOP/s (whole image) and its fraction of the matmul rate",
        "",
        f"| model | {head} |",
        "|---|" + "---:|" * len(sizes),
    ]
    for name, modes in cpu.items():
        cells = modes.get("whole", {})
        row = []
        for s in sizes:
            c = cells.get(s)
            row.append("–" if c is None else f"{c['achieved_gflops_per_s']:.1f} ({100 * c['fraction_of_matmul']:.0f}%)")
        lines.append(f"| {name} | " + " | ".join(row) + " |")

    if results.get("train"):
        lines += [
            "",
            "Training throughput, 256² crops, batch 4 (images/s)",
            "",
            "| model | device | torch.compile | images/s | step (s) |",
            "|---|---|---|---:|---:|",
        ]
        for t in results["train"]:
            lines.append(
                f"| {t['model']} | {t['device']} | {t.get('compile', '–')} | "
                f"{_fmt(t.get('images_per_s'))} | {_fmt(t.get('step_s'), '.3f')} |"
            )

    if results.get("cuda"):
        cuda_sizes = [str(s) for s in results["args"]["cuda_sizes"]]
        lines += [
            "",
            "CUDA latency, ms (bf16 autocast, channels_last, batch 1; peak allocated MiB)",
            "",
            "| model | " + " | ".join(f"{s}²" for s in cuda_sizes) + " |",
            "|---|" + "---:|" * len(cuda_sizes),
        ]
        for name, cells in results["cuda"].items():
            row = [
                "–" if s not in cells else f"{1e3 * cells[s]['seconds']:.1f} ({cells[s]['peak_mem_mib']:.0f} MiB)"
                for s in cuda_sizes
            ]
            lines.append(f"| {name} | " + " | ".join(row) + " |")

    lines += ["", *results["headline"]]
    return "\n".join(lines)


def headline(results: dict[str, Any]) -> list[str]:
    """The issue's goal, checked: small at 1024² against Restormer, and memory flat under tiling."""
    name, size = HEADLINE
    cpu = results["cpu"]
    out = []
    for mode in cpu.get(name, {}):
        c = cpu[name][mode].get(str(size))
        if c and "speedup_vs_restormer" in c:
            verdict = "met" if c["speedup_vs_restormer"] >= 3 else "NOT met"
            out.append(
                f"Goal (`{name}` {mode} at {size}² >= 3x faster than Restormer whole-image): "
                f"{c['speedup_vs_restormer']:.2f}x, {verdict}."
            )
    for mode, cells in cpu.get(name, {}).items():
        rss = ", ".join(f"{s}²: {c['peak_rss_mib']:.0f} MiB" for s, c in cells.items())
        out.append(f"Peak RSS of `{name}` {mode}: {rss}.")
    modes = cpu.get(name, {})
    for mode in (m for m in modes if m.startswith("e2e")):
        for size, cell in modes[mode].items():
            bare = modes.get("whole", {}).get(size)
            if bare:
                ratio = cell["median_s"] / bare["median_s"]
                out.append(
                    f"One pass (`{name}` {mode} at {size}² <= 1.15x one bare forward): {ratio:.2f}x, "
                    f"{'met' if ratio <= 1.15 else 'NOT met'}."
                )
            if "speedup_vs_restormer" in cell:
                r = cell["speedup_vs_restormer"]
                out.append(
                    f"End to end (`{name}` {mode} at {size}² >= 15x faster than Restormer): {r:.1f}x, "
                    f"{'met' if r >= 15 else 'NOT met'}."
                )
    return out


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark; print Markdown, write JSON."""
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="256² only on CPU, fewer steps (about 2 min with a GPU)")
    p.add_argument("--models", nargs="+", default=ALL_MODELS, choices=ALL_MODELS)
    p.add_argument("--sizes", nargs="+", type=int, default=None, help="CPU image sides (default 256 512 1024)")
    p.add_argument("--whole-max", type=int, default=1024, help="largest side run as one whole image on CPU")
    p.add_argument("--tiled", nargs="*", default=["small"], help="models also timed through the Restorer tiling")
    p.add_argument("--e2e", nargs="*", default=["small"], help="models also timed end to end (detect + restore)")
    p.add_argument("--tlc", nargs="*", default=["small"], help="models also timed as one forward with TLC")
    p.add_argument("--tile", nargs="+", type=int, default=[512], help="Restorer tile sides to time (overlap 32)")
    p.add_argument("--repeats", type=int, default=None, help="CPU repeats per size (default 3, 2, then 1)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--train-models", nargs="*", default=["tiny", "small"])
    p.add_argument("--train-steps", type=int, default=None)
    p.add_argument("--cuda-sizes", nargs="+", type=int, default=[256, 512, 1024])
    p.add_argument("--no-compile", action="store_true", help="skip the torch.compile training run on CUDA")
    p.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "results" / "speed.json")
    p.add_argument("--worker", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.worker:
        worker_main(args.worker, args.threads)
        return 0
    if args.sizes is None:
        args.sizes = [256] if args.quick else [256, 512, 1024]
    args.sizes = sorted(args.sizes)
    if args.quick:
        args.repeats = args.repeats or 2
        args.tiled = [] if args.tiled == ["small"] else args.tiled
        args.e2e = [] if args.e2e == ["small"] else args.e2e
        args.tlc = [] if args.tlc == ["small"] else args.tlc
    train_steps = args.train_steps or (1 if args.quick else 3)

    torch.set_num_threads(args.threads)
    results: dict[str, Any] = {"machine": machine_info(args.threads), "args": {**vars(args), "out": str(args.out)}}
    log(f"machine: {results['machine']}")
    matmul = [matmul_gflops(2048)]
    clients = {}
    try:
        for name in args.models:
            log(f"starting worker {name}")
            clients[name] = Client(name, args.threads)
        results["models"] = {name: c.ask("info") for name, c in clients.items()}
        runs = cpu_grid(clients, args)
        matmul.append(matmul_gflops(2048))
        results["matmul_gflops_runs"] = matmul
        results["matmul_gflops"] = statistics.median(matmul)
        results["cpu_runs"] = runs
        results["cpu"] = summarize(runs)
        add_ratios(results)

        results["train"] = []
        for name in args.train_models:
            if name in clients:
                log(f"  train cpu {name}")
                answer = clients[name].ask("train_cpu", steps=train_steps)
                results["train"].append({"model": name, "device": "cpu", **answer})
        if torch.cuda.is_available():
            results["cuda"] = {}
            for name, c in clients.items():
                log(f"  cuda {name}")
                results["cuda"][name] = c.ask("cuda", sizes=args.cuda_sizes, repeats=5 if args.quick else 20)
            # Compiling small's forward and backward took longer than a quick run allows on an H200;
            # tiny (a third of the blocks) still shows what torch.compile buys.
            compile_models = ["tiny"] if args.quick else args.train_models
            for name in args.train_models:
                if name not in clients:
                    continue
                for compiled in [False] if args.no_compile or name not in compile_models else [False, True]:
                    log(f"  train cuda {name} compile={compiled}")
                    answer = clients[name].ask("train_cuda", steps=5 if args.quick else 20, compile_model=compiled)
                    results["train"].append({"model": name, "device": "cuda", "compile": compiled, **answer})
    finally:
        for c in clients.values():
            c.close()
    results["machine"]["load_avg_end"] = os.getloadavg()
    results["headline"] = headline(results)
    print(markdown(results))
    write_result(args.out, results, "speed.py", argv, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
