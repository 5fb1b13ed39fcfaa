"""``smartassign eval --weights W --data PATH --layout NAME``: PSNR/SSIM (Y and RGB), baseline, recognition.

Scores follow the deraining protocol (``smartassign.metrics``): 8-bit images, MATLAB Y, whole images (tiled
inference for large ones), each result paired with its target by file name. Prints a Markdown table and writes
it with a JSON report (per-image scores included) to ``--report PREFIX`` (``.md`` and ``.json``).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path
from typing import Any

from torch.utils.data import Dataset, Subset

from smartassign.checkpoint import atomic_write_text, load_weights
from smartassign.config import TASKS
from smartassign.data import LAYOUTS, PairedDataset
from smartassign.errors import ConfigError, DataError
from smartassign.restore import bundled_weights, trained_crop
from smartassign.train import Evaluation, evaluate

# The task each public layout's degradation belongs to; "generic" folders need --task (or rain/ and snow/).
LAYOUT_TASK = {
    "rain1200": "rain",
    "rain_streak": "rain",
    "spa": "rain",
    "snow100k": "snow",
    "srrs": "snow",
    "csd": "snow",
}
PROTOCOL = (
    "uint8 images; Y = MATLAB rgb2ycbcr (BT.601) rounded to uint8; PSNR = 20 log10(255 / RMSE); SSIM Wang 2004 "
    "(Gaussian 11x11, sigma 1.5, K1 0.01, K2 0.03, L 255, valid windows); RGB SSIM = mean over channels; "
    "no border crop; mean over images; results paired with targets by file name"
)


def register(sub: argparse._SubParsersAction) -> None:
    """Add the ``eval`` subcommand."""
    p = sub.add_parser("eval", help="PSNR/SSIM (Y and RGB) and recognition accuracy on a paired dataset")
    p.add_argument("--weights", type=Path, help="a .safetensors file with its .json beside it; default: bundled small")
    p.add_argument("--data", required=True, type=Path, help="dataset folder (or a `smartassign data synth` folder)")
    p.add_argument("--layout", default="generic", choices=list(LAYOUTS), help="how the folder is organised")
    p.add_argument("--task", choices=list(TASKS), help="head to evaluate (default: the layout's task)")
    p.add_argument("--device", default="auto", help="cpu, cuda, cuda:N or auto (default)")
    p.add_argument("--tile", type=int, default=512, help="tile side for large images; 0 = whole images at once")
    p.add_argument("--overlap", type=int, default=32, help="pixels shared by neighbouring tiles, blended")
    p.add_argument("--limit", type=int, default=0, help="only the first N pairs (by name) of each task; 0 = all")
    p.add_argument("--report", type=Path, help="write PREFIX.md and PREFIX.json (default: eval/<data folder name>)")
    p.add_argument(
        "--skip-missing",
        action="store_true",
        help="score the complete pairs and report how many lacked a partner (default: a missing partner is an error)",
    )
    p.set_defaults(func=run)


def datasets(root: Path, layout: str, task: str | None, tasks: tuple[str, ...] = TASKS) -> dict[str, Dataset]:
    """The paired sets to score, by task: ``root/<task>`` of a synthetic set for each of ``tasks``, else ``root``."""
    split = {t: root / t for t in tasks if (root / t / "input").is_dir()}
    if layout == "generic" and split and task is None:
        return {t: PairedDataset(path, "generic", TASKS.index(t)) for t, path in split.items()}
    task = task or LAYOUT_TASK.get(layout)
    if task is None:
        raise ConfigError(f"{root}: a generic folder needs --task rain or --task snow")
    return {task: PairedDataset(root, layout, TASKS.index(task))}


def incomplete(sets: dict[str, Dataset], layout: str, skip: bool) -> dict[str, list[str]]:
    """Files without a partner, by task. Without ``skip`` any such file is a DataError naming the first one: a
    score over the remaining pairs would look complete but leave images out."""
    missing = {task: list(getattr(ds, "missing", [])) for task, ds in sets.items()}
    lines = [line for lines in missing.values() for line in lines]
    if lines and not skip:
        more = f" (and {len(lines) - 1} more)" if len(lines) > 1 else ""
        root = next(ds.root for task, ds in sets.items() if missing[task])
        raise DataError(
            f"{lines[0]}{more}; `smartassign data check {root} --layout {layout}` lists every one, and --skip-missing "
            "scores only the complete pairs"
        )
    return {task: lines for task, lines in missing.items() if lines}


def _finite(value: Any) -> Any:
    """JSON has no infinity: non-finite floats (PSNR of identical images) become the strings 'inf' / 'nan'."""
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_finite(v) for v in value]
    return value


def markdown(results: dict[str, Evaluation], name: str) -> str:
    """A Markdown table: restored and input (baseline) PSNR/SSIM on Y and RGB, and recognition accuracy."""
    lines = [
        "| data | task | images | PSNR-Y | SSIM-Y | PSNR-RGB | SSIM-RGB | input PSNR-Y | input SSIM-Y "
        "| input PSNR-RGB | input SSIM-RGB | recognition |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for task, ev in results.items():
        r, i = ev.mean, ev.input_mean
        acc = "n/a" if ev.accuracy is None else f"{100 * ev.accuracy:.1f}%"
        lines.append(
            f"| {name} | {task} | {len(ev.names)} | {r.psnr_y:.2f} | {r.ssim_y:.4f} | {r.psnr_rgb:.2f} | "
            f"{r.ssim_rgb:.4f} | {i.psnr_y:.2f} | {i.ssim_y:.4f} | {i.psnr_rgb:.2f} | {i.ssim_rgb:.4f} | {acc} |"
        )
    return "\n".join(lines) + "\n"


def run(args: argparse.Namespace) -> int:
    """Score every task found under ``--data``; print and write the report."""
    weights = args.weights or bundled_weights("small")
    model = load_weights(weights)
    sets = datasets(args.data, args.layout, args.task, model.cfg.tasks)
    skipped = incomplete(sets, args.layout, args.skip_missing)
    results: dict[str, Evaluation] = {}
    for task, ds in sets.items():
        if args.limit:
            ds = Subset(ds, range(min(args.limit, len(ds))))  # type: ignore[arg-type]
        results[task] = evaluate(model, ds, task, args.device, tile=args.tile or None, overlap=args.overlap,
                                 progress=sys.stderr.isatty(), tlc=trained_crop(weights))  # fmt: skip
    name = args.data.resolve().name
    table = markdown(results, name)
    if skipped:
        counts = ", ".join(f"{len(lines)} {task}" for task, lines in skipped.items())
        table += f"\nNot scored (--skip-missing): {counts} file(s) without a partner.\n"
    print(table, end="")
    prefix = args.report or Path("eval") / name
    header = f"# {name}: {weights}\n\nProtocol: {PROTOCOL}.\n\n"
    atomic_write_text(prefix.with_name(prefix.name + ".md"), header + table)
    report = {
        "weights": str(weights),
        "data": str(args.data),
        "layout": args.layout,
        "protocol": PROTOCOL,
        "results": {
            t: {**ev.summary(), "skipped_missing": len(skipped.get(t, [])), "per_image": ev.per_image()}
            for t, ev in results.items()
        },
        "missing": skipped,
    }
    atomic_write_text(prefix.with_name(prefix.name + ".json"), json.dumps(_finite(report), indent=1) + "\n")
    print(f"report: {prefix}.md, {prefix}.json")
    return 0
