"""Write a reproducible synthetic paired dataset to disk: PNG pairs per task in the generic layout plus a manifest."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image
from tqdm import tqdm

from smartassign import __version__
from smartassign.config import DEGRADATION_MIXES
from smartassign.data.corpus import Split, clean_photos, photo_info
from smartassign.data.engine import TASKS
from smartassign.data.mixed import SyntheticPairs
from smartassign.errors import DataError

MANIFEST = "manifest.json"


def _png(path: Path, image: np.ndarray) -> None:
    # Fixed encoder settings and no metadata: the same pixels always give the same bytes.
    Image.fromarray((image * 255.0 + 0.5).astype(np.uint8)).save(path, format="PNG", compress_level=6)


def _source(path: Path) -> dict[str, str]:
    info = photo_info(path)
    if info is None:
        return {"path": str(path)}
    return {"path": str(path), "package": info.package, "author": info.author, "licence": info.licence}


def write_synthetic_set(
    out: str | Path,
    n: int,
    seed: int,
    size: int = 256,
    split: Split = "heldout",
    progress: bool = False,
    mix: str = "mixed",
) -> Path:
    """Write ``n`` rain and ``n`` snow pairs of ``size``² crops of ``split`` photos under ``out``; return the manifest.

    ``mix`` names the degradation mix (:data:`smartassign.config.DEGRADATION_MIXES`: ``light``, ``mixed``,
    ``heavy``); the manifest records it beside every sampled parameter.

    The tree is ``out/{rain,snow}/{input,target}/NNNNN.png`` (read each task with
    ``PairedDataset(out / task, "generic", label)``) and ``out/manifest.json`` with every parameter. Files are
    built in a temporary sibling folder and moved into place at the end, so ``out`` is either complete or absent.
    The same arguments give byte-identical files.
    """
    out = Path(out)
    if n < 1:
        raise DataError(f"--n must be at least 1, got {n}")
    if mix not in DEGRADATION_MIXES:
        raise DataError(f"unknown degradation mix {mix!r}; choose from {', '.join(DEGRADATION_MIXES)}")
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise DataError(f"{out}: already exists and is not empty; choose a new --out")
    photos = clean_photos(split)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        samples: list[dict[str, Any]] = []
        for task in TASKS:
            for sub in ("input", "target"):
                (tmp / task / sub).mkdir(parents=True)
            ds = SyntheticPairs(photos, task, crop=size, length=n, seed=seed, augment=True, degradation=mix)
            for i in tqdm(range(n), desc=f"synth {task}", unit="pair", disable=not progress):
                degraded, clean, meta = ds.generate(i)
                name = f"{i:05d}.png"
                _png(tmp / task / "input" / name, degraded)
                _png(tmp / task / "target" / name, clean)
                samples.append({"input": f"{task}/input/{name}", "target": f"{task}/target/{name}", **meta})
        manifest = {
            "format": "smartassign-synthetic/1",
            "generator": f"smartassign {__version__}",
            "seed": seed,
            "n_per_task": n,
            "size": size,
            "split": split,
            "mix": mix,
            "labels": {"rain": 0, "snow": 1},
            "photos": [_source(p) for p in photos],
            "samples": samples,
        }
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=1) + "\n")
        if out.exists():
            out.rmdir()
        os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out / MANIFEST


def heldout_photo(index: int, width: int | None = None, height: int | None = None) -> np.ndarray:
    """Held-out photo ``index`` as uint8 ``(H, W, 3)``: at its own size, or enlarged (bicubic) to cover
    ``width x height`` and centre-cropped to it (a user's large photo, for benchmarks and tests)."""
    from smartassign.data.corpus import load_rgb

    photo = Image.fromarray((load_rgb(clean_photos("heldout")[index]) * 255 + 0.5).astype(np.uint8))
    if width is None or height is None:
        return np.asarray(photo)
    scale = max(width / photo.width, height / photo.height)
    photo = photo.resize((int(np.ceil(photo.width * scale)), int(np.ceil(photo.height * scale))), Image.BICUBIC)
    x0, y0 = (photo.width - width) // 2, (photo.height - height) // 2
    return np.asarray(photo.crop((x0, y0, x0 + width, y0 + height)))


def weathered(clean: np.ndarray, task: str, seed: int = 0, mix: str = "mixed") -> np.ndarray:
    """uint8 ``clean`` with the engine's rain or snow made at the image's own size (seed ``seed``), uint8."""
    import torch

    from smartassign.data.engine import degrade

    x = torch.from_numpy(clean.astype(np.float32) / 255).permute(2, 0, 1)[None].contiguous()
    with torch.no_grad():
        out = degrade(x, task, seeds=[seed], cfg=mix)[0][0]  # type: ignore[arg-type]
    return (out.permute(1, 2, 0).numpy() * 255 + 0.5).astype(np.uint8)
