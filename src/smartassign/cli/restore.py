"""``smartassign restore IN... -o OUTDIR``: restore files, folders and globs; one line per image, a JSON report.

A bad image never stops the batch: it is listed with its problem and the exit
code is 1 (0 when every image was restored or skipped, 2 for usage, weights or
configuration errors). Outputs are written atomically, never onto an input
file, and existing outputs are skipped unless ``--overwrite``.
"""

from __future__ import annotations

import argparse
import errno
import fnmatch
import glob
import json
import os
import sys
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from smartassign.checkpoint import atomic_write_text
from smartassign.errors import ConfigError, ImageError
from smartassign.io import MAX_PIXELS, SUFFIX_FORMAT, WRITABLE, Picture, read_image, save_picture
from smartassign.metrics import score, to_uint8
from smartassign.restore import PRECISIONS, Restorer, split_pixels

FORMATS = {"jpeg": "JPEG", "png": "PNG", "webp": "WEBP", "tiff": "TIFF"}
# Files read that are written in another format: multi-picture JPEG as JPEG, everything else as PNG.
WRITE_AS = {".mpo": "JPEG"}
IMAGE_SUFFIXES = {*SUFFIX_FORMAT, *WRITE_AS, ".bmp", ".gif"}


def register(sub: argparse._SubParsersAction) -> None:
    """Add the ``restore`` subcommand."""
    p = sub.add_parser("restore", help="remove rain or snow from images", description=__doc__.split("\n\n")[0])
    p.add_argument("inputs", nargs="+", metavar="IN", help="image files, folders or glob patterns")
    p.add_argument("-o", "--output", required=True, type=Path, metavar="OUTDIR", help="folder for restored images")
    p.add_argument("--recursive", action="store_true", help="descend into sub-folders (kept in OUTDIR); '**' in globs")
    p.add_argument("--task", choices=["auto", "rain", "snow"], default="auto", help="auto: the recognition head picks")
    p.add_argument("--weights", type=Path, help="a .safetensors file with its .json beside it; default: bundled small")
    p.add_argument("--device", default="auto", help="cpu, cuda, cuda:N or auto (default)")
    p.add_argument("--tile", type=int, default=512, help="tile side in pixels; 0 restores the whole image at once")
    p.add_argument("--overlap", type=int, default=32, help="pixels shared by neighbouring tiles, blended")
    p.add_argument(
        "--no-tlc", action="store_true", help="pool statistics over each whole tile, not a training-crop window"
    )
    p.add_argument("--threads", type=int, help="CPU threads for the network (default: one per core)")
    add_precision(p)
    p.add_argument("--side-by-side", action="store_true", help="also write NAME_compare.EXT: input | restored")
    p.add_argument("--suffix", default="", help="appended to each output's stem, e.g. _restored")
    p.add_argument("--format", choices=sorted(FORMATS), help="output format (default: the input's)")
    p.add_argument("--report", type=Path, help="write a JSON report of every input here")
    p.add_argument(
        "--reference",
        type=Path,
        metavar="DIR",
        help="clean originals (same relative path and stem, any image suffix): print each image's PSNR-Y gain",
    )
    p.add_argument("--overwrite", action="store_true", help="replace existing outputs (inputs are never replaced)")
    p.add_argument(
        "--max-megapixels", type=float, default=MAX_PIXELS / 1e6, help="refuse larger images (decompression bombs)"
    )
    p.set_defaults(func=run)


@dataclass
class Job:
    """One input image, where its restoration goes and in which format."""

    source: Path
    target: Path
    fmt: str


@dataclass
class Outcome:
    """What happened to one input: a row of the JSON report."""

    input: str
    output: str | None
    status: str  # "restored", "skipped" or "failed"
    task: str | None = None
    confidence: float | None = None
    seconds: float | None = None
    width: int | None = None
    height: int | None = None
    error: str | None = None
    reference: str | None = None  # the clean original the image was scored against (--reference)
    psnr_y_input: float | None = None
    psnr_y_restored: float | None = None


def _is_within(path: Path, folder: Path) -> bool:
    """Whether ``path`` lies inside ``folder`` (both resolved)."""
    return path.resolve().is_relative_to(folder.resolve())


def images_in(folder: Path, recursive: bool, exclude: Path) -> list[Path]:
    """Image files in ``folder`` by suffix, sorted; hidden files are left out, and so is ``exclude`` (OUTDIR) when
    it is a folder inside ``folder``. Links to files count; links to folders are not descended into."""
    skip = exclude if _is_within(exclude, folder) and exclude.resolve() != folder.resolve() else None
    found = folder.rglob("*") if recursive else folder.iterdir()
    return sorted(
        p
        for p in found
        if p.is_file()
        and p.suffix.lower() in IMAGE_SUFFIXES
        and not any(part.startswith(".") for part in p.relative_to(folder).parts)
        and not (skip is not None and _is_within(p, skip))
    )


def _listing(folder: Path, pattern: str) -> list[Path]:
    """Entries of ``folder`` whose names match ``pattern``, sorted; hidden ones only for a pattern starting '.'."""
    try:
        names = os.listdir(folder)
    except OSError:  # not a folder, or unreadable: it holds no match, as for glob.glob
        return []
    hidden = pattern.startswith(".")
    return [folder / n for n in sorted(names) if (hidden or not n.startswith(".")) and fnmatch.fnmatch(n, pattern)]


def _matches(folder: Path, parts: tuple[str, ...], recursive: bool) -> Iterator[Path]:
    """Paths below ``folder`` matching the pattern ``parts``; ``**`` (with ``recursive``) spans real folders only."""
    if not parts:
        yield folder
        return
    part, rest = parts[0], parts[1:]
    if part == "**" and recursive:
        rest = rest or ("*",)  # a trailing '**' matches every file below, as in glob.glob
        yield from _matches(folder, rest, recursive)  # '**' spanning no folder at all
        for sub in _listing(folder, "*"):
            # A link to a folder is not walked: it may lead back up the tree (a loop without end) or to a
            # folder walked already (the same file many times), as `restore DIR --recursive` never follows one.
            if sub.is_dir() and not sub.is_symlink():
                yield from _matches(sub, parts, recursive)
    elif glob.has_magic(part):
        for entry in _listing(folder, part):
            yield from _matches(entry, rest, recursive)
    elif os.path.lexists(folder / part):
        yield from _matches(folder / part, rest, recursive)


def glob_files(pattern: str, recursive: bool) -> list[Path]:
    """Files matching the glob ``pattern``, sorted, each real file once (by resolved path).

    Like :func:`glob.glob` (``*`` skips hidden names; ``**`` spans folders only with ``recursive``), except that
    ``**`` never goes through a link to a folder, so a link loop ends and a linked folder is not counted twice.
    """
    path = Path(pattern)
    parts = path.parts[1:] if path.anchor else path.parts
    seen: set[Path] = set()
    files = []
    for match in sorted(set(_matches(Path(path.anchor or "."), parts, recursive))):
        if match.is_file() and (real := match.resolve()) not in seen:
            seen.add(real)
            files.append(match)
    return files


def expand_inputs(patterns: list[str], recursive: bool, exclude: Path) -> tuple[list[tuple[Path, Path]], list[Outcome]]:
    """``(file, its path relative to OUTDIR)`` for every input found, each real file once, and a failure per
    pattern matching nothing."""
    found: list[tuple[Path, Path]] = []
    missing: list[Outcome] = []
    for pattern in patterns:
        path = Path(pattern)
        if path.is_dir():
            found += [(f, f.relative_to(path)) for f in images_in(path, recursive, exclude)]
        elif path.exists():
            found.append((path, Path(path.name)))
        elif glob.has_magic(pattern) and (matches := glob_files(pattern, recursive)):
            found += [(m, Path(m.name)) for m in matches]
        else:
            missing.append(Outcome(pattern, None, "failed", error=f"{pattern}: no such file, folder or match"))
    seen: set[Path] = set()
    unique = []
    for source, relative in found:  # a file named twice (or through a link) is restored once
        if (real := source.resolve()) not in seen:
            seen.add(real)
            unique.append((source, relative))
    return unique, missing


def plan(relative: Path, suffix: str, fmt: str | None) -> tuple[Path, str]:
    """Output path (relative to OUTDIR) and format: ``fmt``, else the input suffix's, else PNG."""
    ext = relative.suffix
    fmt = fmt or SUFFIX_FORMAT.get(ext.lower()) or WRITE_AS.get(ext.lower(), "PNG")
    if SUFFIX_FORMAT.get(ext.lower()) != fmt:
        ext = WRITABLE[fmt]
    return relative.with_name(f"{relative.stem}{suffix}{ext}"), fmt


def _same_file(a: Path, b: Path) -> bool:
    """Whether two paths name the same file (by inode where both exist)."""
    try:
        return os.path.samefile(a, b)
    except OSError:
        return a.resolve() == b.resolve()


def check_output_folder(folder: Path) -> None:
    """Refuse up front an OUTDIR that can never be a folder; create nothing: that waits for the first image."""
    if folder.exists() and not folder.is_dir():
        raise ConfigError(f"{folder}: cannot create the output folder ({os.strerror(errno.EEXIST)})")
    parent = folder.parent
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    if parent.exists() and not parent.is_dir():
        raise ConfigError(f"{folder}: cannot create the output folder ({os.strerror(errno.ENOTDIR)})")


def make_output_folder(folder: Path) -> None:
    """Create OUTDIR (and its parents) when the first image is about to be written."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(f"{folder}: cannot create the output folder ({exc.strerror or exc})") from None


def drop_earlier_outputs(
    found: list[tuple[Path, Path]], output: Path, suffix: str, fmt: str | None
) -> tuple[list[tuple[Path, Path]], list[tuple[Path, Path]]]:
    """Split off inputs named as another input's output (or ``_compare`` image) in OUTDIR: with ``-o`` the input
    folder and a ``--suffix``, those are the outputs of an earlier run (``a_r.png`` beside ``a.png``), not images
    to restore again into ``a_r_r.png``. Returns the inputs kept and ``(left out, the input it is the output of)``."""
    made: dict[Path, Path] = {}
    for source, relative in found:
        target = output / plan(relative, suffix, fmt)[0]
        for out in (target, target.with_name(f"{target.stem}_compare{target.suffix}")):
            made.setdefault(out.resolve(), source)
    kept, earlier = [], []
    for source, relative in found:
        origin = made.get(source.resolve())
        if origin is not None and origin != source:
            earlier.append((source, origin))
        else:
            kept.append((source, relative))
    return kept, earlier


def _rgb8(pixels: np.ndarray) -> np.ndarray:
    """``(H, W, 3)`` uint8 of any accepted pixels (gray repeated, alpha dropped), as the metrics take them."""
    colour, _, scale = split_pixels(pixels)
    rgb = colour.astype(np.float32) / scale
    return to_uint8(np.repeat(rgb, 3, axis=2) if rgb.shape[2] == 1 else rgb)


def find_reference(folder: Path, relative: Path) -> Path | None:
    """The clean original of input ``relative`` in ``folder``: the same relative path, any image suffix."""
    parent = folder / relative.parent
    if not parent.is_dir():
        return None
    found = sorted(p for p in parent.glob(f"{glob.escape(relative.stem)}.*") if p.suffix.lower() in IMAGE_SUFFIXES)
    return found[0] if found else None


def read_reference(reference: Path, degraded: np.ndarray, limit: int) -> np.ndarray:
    """The clean original as ``(H, W, 3)`` uint8; :class:`ImageError` unless it has the input's size."""
    clean = read_image(reference, limit).pixels
    if clean.shape[:2] != degraded.shape[:2]:
        h, w = degraded.shape[:2]
        raise ImageError(f"{reference}: the reference is {clean.shape[1]}x{clean.shape[0]}, the input {w}x{h}")
    return _rgb8(clean)


def restore_one(
    restorer: Restorer, job: Job, args: argparse.Namespace, inputs: list[Path], reference: Path | None = None
) -> Outcome:
    """Read, restore and write one image (and its side-by-side); errors propagate to the caller."""
    compare = job.target.with_name(f"{job.target.stem}_compare{job.target.suffix}")
    targets = (job.target, compare) if args.side_by_side else (job.target,)
    for out in targets:
        if any(_same_file(out, i) for i in inputs):
            raise ImageError(f"{job.source}: refusing to write {out}, which is an input; choose another -o or --suffix")
    if not args.overwrite and all(out.exists() for out in targets):
        reason = f"{job.target} exists (--overwrite replaces it)"
        return Outcome(str(job.source), str(job.target), "skipped", error=reason)
    limit = int(args.max_megapixels * 1e6)
    picture = read_image(job.source, limit)
    clean = read_reference(reference, picture.pixels, limit) if reference is not None else None
    result = restorer.restore(picture.pixels, task=args.task)
    if not args.output.is_dir():  # created with the first image: a run that writes nothing leaves no empty folder
        make_output_folder(args.output)
    save_picture(job.target, Picture(result.image, job.fmt, picture.icc_profile, picture.exif))
    if args.side_by_side:
        both = np.concatenate([picture.pixels, result.image], axis=1)
        save_picture(compare, Picture(both, job.fmt, picture.icc_profile, picture.exif))
    h, w = result.image.shape[:2]
    outcome = Outcome(str(job.source), str(job.target), "restored", result.task, result.confidence, result.seconds)
    outcome.width, outcome.height = w, h
    if clean is not None:
        outcome.reference = str(reference)
        outcome.psnr_y_input = score(_rgb8(picture.pixels), clean).psnr_y
        outcome.psnr_y_restored = score(_rgb8(result.image), clean).psnr_y
    return outcome


def describe(outcome: Outcome) -> str:
    """One terminal line for an outcome."""
    if outcome.status == "restored":
        sure = f"{outcome.confidence:.0%}" if outcome.confidence is not None else "given"
        line = f"{outcome.input} -> {outcome.output}  {outcome.task} ({sure})  {outcome.seconds:.1f} s"
        if outcome.psnr_y_input is not None and outcome.psnr_y_restored is not None:
            gain = outcome.psnr_y_restored - outcome.psnr_y_input
            line += f"  PSNR-Y {outcome.psnr_y_input:.2f} -> {outcome.psnr_y_restored:.2f} dB ({gain:+.2f})"
        return f"{line}  ({outcome.error})" if outcome.error else line
    if outcome.status == "skipped":
        return f"{outcome.input}: skipped, {outcome.error}"
    return f"smartassign: {outcome.error}"


def add_precision(p: argparse.ArgumentParser) -> None:
    """The ``--precision`` option of the commands that restore for a user."""
    p.add_argument(
        "--precision", choices=PRECISIONS, default="auto",
        help="network arithmetic; auto (default): bf16 on a GPU and on CPUs with native bf16 (AMX / AVX512-BF16), "
        "about 2x float32 there with pictures within 1e-3; float32 elsewhere",
    )  # fmt: skip


def set_threads(threads: int | None) -> None:
    """``--threads``: the number of CPU threads torch computes with (None: leave torch's default)."""
    if threads is None:
        return
    if threads < 1:
        raise ConfigError(f"--threads must be at least 1, got {threads}")
    torch.set_num_threads(threads)


def run(args: argparse.Namespace) -> int:
    """Restore every input, one line each; exit 1 if any failed."""
    if args.max_megapixels <= 0:
        raise ConfigError(f"--max-megapixels must be positive, got {args.max_megapixels}")
    check_output_folder(args.output)
    for folder in (Path(p) for p in args.inputs):
        if folder.is_dir() and folder.resolve() == args.output.resolve() and not args.suffix:
            raise ConfigError(
                f"-o {args.output} is the input folder {folder}: the restored images would replace the inputs; "
                "choose another -o, or add --suffix (e.g. --suffix _restored) to write NAME_restored.EXT beside each"
            )
    found, outcomes = expand_inputs(args.inputs, args.recursive, args.output)
    found, earlier = drop_earlier_outputs(found, args.output, args.suffix, FORMATS.get(args.format or ""))
    if not found and not outcomes:
        raise ImageError(f"no images found in: {' '.join(args.inputs)}")
    inputs = [f for f, _ in found]
    if args.report is not None and any(_same_file(args.report, i) for i in inputs):
        raise ConfigError(f"--report {args.report} is one of the inputs; choose another path")
    if args.reference is not None and not args.reference.is_dir():
        raise ConfigError(f"--reference {args.reference}: not a folder of clean originals")
    set_threads(args.threads)
    tlc = {"tlc": None} if args.no_tlc else {}
    restorer = Restorer.from_weights(args.weights, device=args.device, tile=args.tile, overlap=args.overlap,
                                     dtype=args.precision, **tlc)  # fmt: skip
    for outcome in outcomes:
        print(describe(outcome), file=sys.stderr)
    if earlier:
        output, source = earlier[0]
        print(
            f"left out {len(earlier)} file(s) named as the output of another input, taken for earlier "
            f"outputs (e.g. {output}, the output of {source})",
            file=sys.stderr,
        )
    planned: dict[Path, Path] = {}
    for source, relative in tqdm(found, desc="restoring", unit="image", disable=None):
        name, fmt = plan(relative, args.suffix, FORMATS.get(args.format or ""))
        job = Job(source, args.output / name, fmt)
        try:
            if job.target in planned:
                raise ImageError(f"{source}: {job.target} is also the output of {planned[job.target]}; rename one")
            planned[job.target] = source
            reference = find_reference(args.reference, relative) if args.reference is not None else None
            outcome = restore_one(restorer, job, args, inputs, reference)
            if args.reference is not None and reference is None:
                outcome.error = f"no clean original for {relative} in {args.reference}"
        except ImageError as exc:
            outcome = Outcome(str(source), None, "failed", error=str(exc))
        except OSError as exc:  # e.g. a full disk or a read-only folder while writing
            outcome = Outcome(str(source), None, "failed", error=f"{source}: cannot write {job.target} ({exc})")
        except (MemoryError, torch.OutOfMemoryError):
            outcome = Outcome(str(source), None, "failed", error=f"{source}: out of memory; try a smaller --tile")
        outcomes.append(outcome)
        tqdm.write(describe(outcome), file=sys.stderr if outcome.status == "failed" else sys.stdout)
    failed = [o for o in outcomes if o.status == "failed"]
    restored = sum(o.status == "restored" for o in outcomes)
    skipped = sum(o.status == "skipped" for o in outcomes)
    print(f"{restored} restored, {skipped} skipped, {len(failed)} failed")
    scored = [o for o in outcomes if o.psnr_y_input is not None and o.psnr_y_restored is not None]
    if scored:
        before = float(np.mean([o.psnr_y_input for o in scored]))
        after = float(np.mean([o.psnr_y_restored for o in scored]))
        print(f"PSNR-Y against the clean originals, mean of {len(scored)}: {before:.2f} -> {after:.2f} dB "
              f"({after - before:+.2f})")  # fmt: skip
    if failed:
        print(f"failed ({len(failed)} of {len(outcomes)}):", file=sys.stderr)
        for outcome in failed:
            print(f"  {outcome.error}", file=sys.stderr)
    if args.report is not None:
        images = [asdict(o) for o in outcomes]
        report = {"restored": restored, "skipped": skipped, "failed": len(failed), "images": images}
        try:
            atomic_write_text(args.report, json.dumps(report, indent=2) + "\n")
        except OSError as exc:  # e.g. the disk filled up with the images
            raise ConfigError(f"--report {args.report}: cannot write the report ({exc.strerror or exc})") from None
    return 1 if failed else 0
