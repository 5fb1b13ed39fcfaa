"""How the model does on rain and snow it has never seen: held-out photos x an independent synthesizer.

The degradations come from ``smartassign.unseen`` (numpy/scipy, built differently from the training
engine; see ``benchmarks/unseen/README.md``); the photos are the ``heldout`` split, never trained on. The set is
built at run time, written as ``OUT/{rain,snow}/{input,target}/NAME.png`` (the generic layout), then every input
is restored in one pass giving (a) the task the recognition head picks (what a user gets) and (b) the true task.

    # full run at defaults (4 styles x 8 images, 256 px, one CPU thread): a few minutes
    nice -n 19 .venv/bin/python benchmarks/unseen_eval.py --grid runs/unseen_grid.png
    # about a minute: 3 images per style (one per density)
    nice -n 19 .venv/bin/python benchmarks/unseen_eval.py --quick

Scores are ``smartassign.metrics.score`` (MATLAB protocol, Y and RGB). Image ``i`` of every style uses the same
clean crop (photo ``i`` of a seeded permutation, cycling, at a seeded position), so styles are compared on the same
pictures; densities cycle light, medium, heavy over ``i``. Where the detected task is the true one, (b) is (a).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import math
import platform
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import scipy
import torch
from PIL import Image, ImageDraw

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))
import smartassign  # noqa: E402
import smartassign.unseen  # noqa: E402
from _common import write_result  # noqa: E402
from smartassign.restore import bundled_weights  # noqa: E402
from smartassign.unseen import DENSITIES, STYLES, score_item, unseen_set  # noqa: E402

log = logging.getLogger("unseen_eval")
TASK_ORDER = ("rain", "snow")
MANIFEST = "manifest.json"


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def finite(obj: Any) -> Any:
    """``obj`` with every non-finite float (PSNR of identical images is inf) replaced by None: strict JSON."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [finite(v) for v in obj]
    return obj


def weights_path(name_or_path: str) -> Path:
    """The file ``smartassign.load`` will read for ``name_or_path`` (a bundled name or a path)."""
    path = Path(name_or_path)
    if not path.suffix and path.name == name_or_path:
        return bundled_weights(name_or_path)
    return path


# ----------------------------------------------------------------------------- the set


def save_png(path: Path, image: np.ndarray) -> str:
    """Write an 8-bit RGB PNG; returns the sha256 of its bytes."""
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(image, "RGB").save(path, format="PNG", compress_level=6)
    return sha256_file(path)


def clear_previous(out: Path) -> None:
    """Delete the PNGs a previous run of this script listed in ``OUT/manifest.json`` (and nothing else)."""
    manifest = out / MANIFEST
    if not manifest.is_file():
        return
    try:
        names = json.loads(manifest.read_text())["files"]
    except (OSError, ValueError, KeyError):
        return
    for rel in names:
        p = (out / rel).resolve()
        if p.suffix == ".png" and out.resolve() in p.parents and p.is_file():
            p.unlink()


def build_set(args: argparse.Namespace, styles: list[str]) -> list[dict[str, Any]]:
    """Synthesize the set (:func:`smartassign.unseen.unseen_set`), write it under ``args.out``; returns one record
    per image, its arrays as ``_input`` and ``_target``."""
    out = Path(args.out)
    clear_previous(out)
    items, files = [], []
    for it in unseen_set(args.n, args.size, args.seed, styles, args.crop, args.max_side):
        inp, clean = it.pop("input"), it.pop("target")
        rel_in, rel_tg = f"{it['task']}/input/{it['name']}.png", f"{it['task']}/target/{it['name']}.png"
        it["input_png_sha256"] = save_png(out / rel_in, inp)
        it["target_png_sha256"] = save_png(out / rel_tg, clean)
        items.append({**it, "_input": inp, "_target": clean})
        files += [rel_in, rel_tg]
    (out / MANIFEST).write_text(json.dumps({"seed": args.seed, "files": files}, indent=1) + "\n")
    return items


# ----------------------------------------------------------------------------- scoring


def evaluate(restorer: smartassign.Restorer, items: list[dict[str, Any]], keep_for_grid: set[str]) -> None:
    """Restore every item in one pass (:func:`smartassign.unseen.score_item`: the auto-detected task's picture and
    the true task's) and add its scores to the record in place."""
    for k, it in enumerate(items):
        got = score_item(restorer, it["_input"], it["_target"], it["task"])
        auto_image = got.pop("auto_image")
        it.update(got)
        it["true_is_auto"] = it["correct"]
        if it["name"] in keep_for_grid:
            it["_restored"] = auto_image
        log.info(
            "[%d/%d] %s: detected %s (%.2f), PSNR-Y %.2f -> %.2f (auto) / %.2f (true task), %.1fs",
            k + 1,
            len(items),
            it["name"],
            it["detected"],
            it["confidence"] or 1.0,
            it["input"]["psnr_y"],
            it["auto"]["psnr_y"],
            it["true"]["psnr_y"],
            it["auto"]["seconds"],
        )


def _mean(values: list[float]) -> float:
    return float(np.mean(values)) if values else math.nan


def summarize(items: list[dict[str, Any]]) -> dict[str, float]:
    """Means over ``items`` of the figures the tables show (and a few more)."""

    def col(section: str, key: str) -> list[float]:
        return [it[section][key] for it in items]

    out = {"images": len(items)}
    for section in ("input", "auto", "true"):
        for key in ("psnr_y", "ssim_y", "psnr_rgb", "ssim_rgb"):
            out[f"{section}_{key}"] = _mean(col(section, key))
    for section in ("auto", "true"):
        gains = [a - b for a, b in zip(col(section, "psnr_y"), col("input", "psnr_y"), strict=True)]
        out[f"{section}_gain_psnr_y"] = _mean(gains)
        out[f"{section}_gain_psnr_y_std"] = float(np.std(gains)) if gains else math.nan
        out[f"{section}_gain_ssim_y"] = _mean(
            [a - b for a, b in zip(col(section, "ssim_y"), col("input", "ssim_y"), strict=True)]
        )
        out[f"{section}_worse_than_input"] = int(sum(g < 0 for g in gains))
    out["recognition"] = _mean([float(it["correct"]) for it in items])
    return out


def groups(items: list[dict[str, Any]], styles: list[str]) -> dict[str, dict[str, dict[str, float]]]:
    by_style = {s: summarize([it for it in items if it["style"] == s]) for s in styles}
    tasks = [t for t in TASK_ORDER if any(it["task"] == t for it in items)]
    by_task = {t: summarize([it for it in items if it["task"] == t]) for t in tasks}
    by_density = {
        f"{s}/{d}": summarize(sel)
        for s in styles
        for d in DENSITIES
        if (sel := [it for it in items if it["style"] == s and it["density"] == d])
    }
    return {"style": by_style, "task": by_task, "style_density": by_density, "all": {"all": summarize(items)}}


def table(title: str, rows: dict[str, dict[str, float]]) -> str:
    head = (
        f"| {title} | images | input PSNR-Y | restored PSNR-Y (auto) | gain (auto) | input SSIM-Y | "
        "restored SSIM-Y (auto) | restored PSNR-Y (true task) | gain (true task) | SSIM-Y (true task) | recognition |"
    )
    lines = [head, "|---|" + "---:|" * 10]
    for name, r in rows.items():
        lines.append(
            f"| {name} | {r['images']} | {r['input_psnr_y']:.2f} | {r['auto_psnr_y']:.2f} | "
            f"{r['auto_gain_psnr_y']:+.2f} | {r['input_ssim_y']:.4f} | {r['auto_ssim_y']:.4f} | "
            f"{r['true_psnr_y']:.2f} | {r['true_gain_psnr_y']:+.2f} | {r['true_ssim_y']:.4f} | "
            f"{100 * r['recognition']:.1f}% |"
        )
    return "\n".join(lines)


# ----------------------------------------------------------------------------- grid


def make_grid(path: Path, items: list[dict[str, Any]], styles: list[str], thumb: int = 128) -> None:
    """One row per style: for each density's first image, the input then the auto restoration."""
    label_w, pad = 120, 2
    cols = len(DENSITIES) * 2
    img = Image.new("RGB", (label_w + cols * (thumb + pad), 18 + len(styles) * (thumb + pad)), "white")
    draw = ImageDraw.Draw(img)
    for d, density in enumerate(DENSITIES):
        draw.text((label_w + 2 * d * (thumb + pad) + 4, 3), f"{density}: input | restored", fill="black")
    for r, style in enumerate(styles):
        y = 18 + r * (thumb + pad)
        draw.text((4, y + thumb // 2 - 6), style, fill="black")
        for d, density in enumerate(DENSITIES):
            it = next((it for it in items if it["style"] == style and it["density"] == density), None)
            if it is None:
                continue
            for c, arr in enumerate((it["_input"], it.get("_restored"))):
                if arr is None:
                    continue
                tile = Image.fromarray(arr).resize((thumb, thumb), Image.Resampling.LANCZOS)
                img.paste(tile, (label_w + (2 * d + c) * (thumb + pad), y))
            tag = f"{it['detected']} {it['auto']['psnr_y'] - it['input']['psnr_y']:+.1f}dB"
            tx, ty = label_w + (2 * d + 1) * (thumb + pad) + 3, y + 3
            draw.rectangle(draw.textbbox((tx, ty), tag), fill="black")
            draw.text((tx, ty), tag, fill="yellow")
    path.parent.mkdir(parents=True, exist_ok=True)
    img.save(path)


# ----------------------------------------------------------------------------- main


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--weights", default="small", help="bundled weights name or a .safetensors path (default: small)")
    p.add_argument("--n", type=int, default=None, help="images per style (default 8; 3 with --quick)")
    p.add_argument("--size", type=int, default=256, help="crop side in pixels (default 256)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--crop", choices=("random", "center"), default="random", help="seeded random or centre crops")
    p.add_argument("--max-side", type=int, default=512, help="photos are first downscaled to this longest side")
    p.add_argument("--styles", default=",".join(STYLES), help=f"comma-separated subset of {','.join(STYLES)}")
    p.add_argument("--out", default=str(ROOT / "runs" / "unseen_set"), help="where the set is written")
    p.add_argument("--json", default=None, help="results JSON (default benchmarks/results/unseen_eval[_quick].json)")
    p.add_argument("--grid", default=None, help="write a PNG grid of examples per style here")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1)")
    p.add_argument("--device", default="cpu", help="cpu (default), cuda or auto")
    p.add_argument("--quick", action="store_true", help="3 images per style: about a minute")
    args = p.parse_args(argv)
    if args.n is None:
        args.n = 3 if args.quick else 8
    if args.json is None:
        args.json = str(
            ROOT / "benchmarks" / "results" / ("unseen_eval_quick.json" if args.quick else "unseen_eval.json")
        )
    if args.n < 1 or args.size < 16:
        p.error("--n must be >= 1 and --size >= 16")
    return args


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    args = parse_args(argv)
    styles = [s.strip() for s in args.styles.split(",") if s.strip()]
    unknown = [s for s in styles if s not in STYLES]
    if unknown or not styles:
        raise SystemExit(f"unknown styles {unknown}; choose from {', '.join(STYLES)}")
    torch.set_num_threads(args.threads)
    start = time.perf_counter()

    items = build_set(args, styles)
    built = time.perf_counter() - start
    log.info("built %d images under %s in %.1fs", len(items), args.out, built)

    wpath = weights_path(args.weights)
    restorer = smartassign.load(args.weights, device=args.device)
    keep = set()
    if args.grid:
        for style in styles:
            for density in DENSITIES:
                first = next((it for it in items if it["style"] == style and it["density"] == density), None)
                if first:
                    keep.add(first["name"])
    evaluate(restorer, items, keep)
    elapsed = time.perf_counter() - start

    summary = groups(items, styles)
    md = "\n\n".join(
        [
            table("style", summary["style"]),
            table("task", summary["task"]),
            table("style / density", summary["style_density"]),
        ]
    )
    print(
        f"## Unseen rain/snow: {wpath.name}, {len(items)} images ({args.n} per style, {args.size} px, seed {args.seed})"
    )
    print()
    print(md)
    print()
    print(f"{elapsed:.0f}s in all ({built:.1f}s building the set), {args.threads} thread(s), device {restorer.device}")

    if args.grid:
        make_grid(Path(args.grid), items, styles)
        log.info("grid: %s", args.grid)

    set_hash = hashlib.sha256("".join(it["input_png_sha256"] + it["target_png_sha256"] for it in items).encode())
    record = {
        "benchmark": "unseen_eval",
        "args": vars(args),
        "seed": args.seed,
        "weights": {"arg": args.weights, "path": str(wpath), "sha256": sha256_file(wpath)},
        "synth_sha256": sha256_file(Path(smartassign.unseen.__file__)),
        "set_sha256": set_hash.hexdigest(),
        "seconds": {"total": elapsed, "build": built},
        "summary": summary,
        "markdown": md,
        "images": [{k: v for k, v in it.items() if not k.startswith("_")} for it in items],
    }
    machine = {"python": platform.python_version(), "numpy": np.__version__, "scipy": scipy.__version__,
               "smartassign": smartassign.__version__, "torch_threads": torch.get_num_threads(),
               "device": str(restorer.device)}  # fmt: skip
    write_result(args.json, finite(record), "unseen_eval.py", argv, machine=machine)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
