"""``smartassign data``: check dataset folders, write synthetic sets, download archives, list the photo corpus."""

from __future__ import annotations

import argparse
import sys

from smartassign.config import DEGRADATION_MIXES
from smartassign.data.corpus import PHOTOS, clean_photos, load_downscaled
from smartassign.data.datasets import LAYOUTS, check_layout
from smartassign.data.download import ARCHIVES, fetch
from smartassign.data.synthset import write_synthetic_set
from smartassign.errors import DataError


def register(sub: argparse._SubParsersAction) -> None:
    """Add the ``data`` subcommand and its verbs."""
    p = sub.add_parser("data", help="check, synthesize, download datasets; list the photo corpus")
    verbs = p.add_subparsers(dest="verb", required=True, metavar="VERB")

    c = verbs.add_parser("check", help="count pairs; report missing partners, unreadable files, size mismatches")
    c.add_argument("path", help="dataset folder (an unpacked archive or one of its splits)")
    c.add_argument("--layout", required=True, choices=list(LAYOUTS), help="how the folder is organised")
    c.set_defaults(func=run_check)

    s = verbs.add_parser("synth", help="write a reproducible synthetic rain+snow paired set (PNG + manifest)")
    s.add_argument("--out", required=True, help="new folder to create")
    s.add_argument("--n", type=int, required=True, help="pairs per task")
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--size", type=int, default=256, help="square crop side")
    s.add_argument(
        "--split", choices=("heldout", "train"), default="heldout", help="clean photos (default heldout, for eval)"
    )
    s.add_argument(
        "--mix",
        choices=list(DEGRADATION_MIXES),
        default="mixed",
        help="degradation mix: light (drizzle, flurries), heavy (downpour, blizzard) or mixed, the whole range"
        " (default)",
    )
    s.set_defaults(func=run_synth)

    d = verbs.add_parser("download", help="download, verify and unpack a public archive (resumable)")
    d.add_argument("name", choices=list(ARCHIVES))
    d.add_argument("--dest", required=True, help="folder for the archive and its unpacked tree")
    d.add_argument("--url", help="a mirror, or file:///path for an archive you fetched by hand")
    d.add_argument("--sha256", help="expected SHA-256 (else learnt on first download into DEST/SHA256SUMS)")
    d.add_argument("--no-unpack", action="store_true")
    d.set_defaults(func=run_download)

    ph = verbs.add_parser("photos", help="list the clean photo corpus and its licences")
    ph.add_argument("--cache", action="store_true", help="decode every photo once into the downscaled cache")
    ph.set_defaults(func=run_photos)


def run_check(args: argparse.Namespace) -> int:
    """Print every problem, then a summary; DataError (non-zero exit) if there is any."""
    report = check_layout(args.path, args.layout, progress=sys.stderr.isatty())
    for line in report.problems:
        print(line)
    print(report.summary())
    if not report.ok:
        raise DataError(f"{args.path}: {len(report.problems)} problem(s), {report.pairs} good pairs ({args.layout})")
    return 0


def run_synth(args: argparse.Namespace) -> int:
    """Write the set and say where its manifest is."""
    manifest = write_synthetic_set(
        args.out, args.n, args.seed, args.size, args.split, progress=sys.stderr.isatty(), mix=args.mix
    )
    print(f"wrote {args.n} rain + {args.n} snow pairs ({args.mix} mix); manifest {manifest}")
    return 0


def run_download(args: argparse.Namespace) -> int:
    """Fetch one archive."""
    where = fetch(
        args.name,
        args.dest,
        url=args.url,
        sha256=args.sha256,
        unpack=not args.no_unpack,
        progress=sys.stderr.isatty(),
    )
    print(f"{args.name}: {where} (layout {ARCHIVES[args.name].layout})")
    return 0


def run_photos(args: argparse.Namespace) -> int:
    """Print the corpus as a table and the installed count per split."""
    print("| split | package | file | author | licence | installed |")
    print("|---|---|---|---|---|---|")
    for photo in PHOTOS:
        found = "yes" if photo.resolve() is not None else "no"
        print(f"| {photo.split} | {photo.package} | `{photo.path}` | {photo.author} | {photo.licence} | {found} |")
    for split in ("train", "heldout"):
        paths = clean_photos(split)
        if args.cache:
            for path in paths:
                load_downscaled(path)
        print(f"{split}: {len(paths)} photographs installed" + (" (cached)" if args.cache else ""))
    return 0
