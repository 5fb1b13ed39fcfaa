"""Paired rain/snow datasets as the public archives unpack, a generic paired folder, and a layout check.

A layout says which folders hold degraded and clean images and how a degraded file names its clean partner.
Folders are found anywhere under the root (case-insensitive names), so a split folder (``train/``, ``test/``,
``Snow100K-L/``) or the whole unpacked archive can be passed. ``docs/datasets.md`` shows each tree.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset
from tqdm import tqdm

from smartassign.data.corpus import load_rgb
from smartassign.errors import DataError, ImageError

IMAGE_EXTENSIONS = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp", ".ppm"})


def _same(stem: str) -> list[str]:
    return [stem]


def _drop_index(stem: str) -> list[str]:
    """DDN/DetailsNet naming: many rainy ``12_3`` share the clean ``12``."""
    return [stem, stem.rsplit("_", 1)[0]] if "_" in stem else [stem]


def _spa(stem: str) -> list[str]:
    """SPA-Data: rainy ``123`` pairs with ``123gt`` (test set) or the same name (repackaged copies)."""
    return [f"{stem}gt", f"{stem}_gt", stem]


@dataclass(frozen=True)
class Layout:
    """Where a dataset keeps its degraded and clean images and how their names pair up."""

    name: str
    inputs: tuple[str, ...]  # folder names holding degraded images
    targets: tuple[str, ...]  # sibling folder names holding clean images
    partner: Callable[[str], list[str]] = _same  # candidate clean stems for a degraded stem, tried in order
    side_by_side: bool = False  # one file per pair: degraded left half, clean right half
    description: str = ""


LAYOUTS: dict[str, Layout] = {
    layout.name: layout
    for layout in (
        Layout("generic", ("input",), ("target",), description="input/ and target/, same file names"),
        Layout(
            "rain1200",
            (),
            (),
            side_by_side=True,
            description="DID-MDN: every image is [rainy | clean] side by side (Rain_*/train2018new, DID-MDN-test)",
        ),
        Layout(
            "rain_streak",
            ("rainy_image", "rain", "input"),
            ("ground_truth", "norain", "gt", "target"),
            _drop_index,
            description="rainy_image/<n>_<k>.ext pairs with ground_truth/<n>.ext",
        ),
        Layout(
            "spa",
            ("rain", "rainy", "input"),
            ("gt", "norain", "target"),
            _spa,
            description="real_test_1000/rain/<n>.png pairs with real_test_1000/gt/<n>gt.png",
        ),
        Layout("snow100k", ("synthetic",), ("gt",), description="<split>/synthetic/<x>.jpg pairs with gt/<x>.jpg"),
        Layout("srrs", ("syn", "snow"), ("gt",), description="Syn/ (or Snow/) pairs with gt/ by file name"),
        Layout("csd", ("snow",), ("gt",), description="{Train,Test}/Snow/<x> pairs with Gt/<x>"),
    )
}


def get_layout(name: str) -> Layout:
    """The layout called ``name``; DataError listing the known ones otherwise."""
    try:
        return LAYOUTS[name]
    except KeyError:
        raise DataError(f"unknown dataset layout {name!r}; choose one of {', '.join(LAYOUTS)}") from None


def _images(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS)


def _dirs_named(root: Path, names: tuple[str, ...]) -> Iterator[Path]:
    wanted = {n.lower() for n in names}
    if root.name.lower() in wanted:
        yield root
    # os.walk lists folders without a stat per file: cheap even under a 100k-image archive.
    for parent, dirs, _ in os.walk(root):
        dirs.sort()
        for d in dirs:
            if d.lower() in wanted:
                yield Path(parent) / d


@dataclass(frozen=True)
class Pair:
    """One degraded/clean pair; ``target`` is None for side-by-side files (the input holds both).

    ``name`` is unique within the dataset: the input's stem, or its path below the root (without suffix) when
    stems repeat, as Rain1200's ``Rain_Heavy``/``Rain_Light`` folders and Snow100K's splits do.
    """

    input: Path
    target: Path | None
    name: str = ""


def _named(pairs: list[Pair], root: Path) -> list[Pair]:
    stems = [p.input.stem for p in pairs]
    if len(set(stems)) == len(stems):
        return [Pair(p.input, p.target, p.input.stem) for p in pairs]
    return [Pair(p.input, p.target, p.input.relative_to(root).with_suffix("").as_posix()) for p in pairs]


@dataclass
class Discovery:
    """Pairs found by name alone, and files whose partner is missing."""

    pairs: list[Pair] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)


def discover(root: str | Path, layout: str | Layout) -> Discovery:
    """Find every pair under ``root`` by file name (nothing is decoded)."""
    root = Path(root)
    lay = layout if isinstance(layout, Layout) else get_layout(layout)
    if not root.is_dir():
        raise DataError(f"{root}: dataset folder does not exist")
    found = Discovery()
    if lay.side_by_side:
        files = sorted(p for p in root.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS)
        found.pairs = _named([Pair(p, None) for p in files], root)
        return found
    for in_dir in _dirs_named(root, lay.inputs):
        siblings = {p.name.lower(): p for p in in_dir.parent.iterdir() if p.is_dir()}
        tgt_dir = next((siblings[t.lower()] for t in lay.targets if siblings.get(t.lower(), in_dir) != in_dir), None)
        if tgt_dir is None:
            found.missing.append(f"{in_dir}: no clean folder ({' or '.join(lay.targets)}) beside it")
            continue
        targets = {p.stem: p for p in _images(tgt_dir)}
        used: set[str] = set()
        for src in _images(in_dir):
            candidates = lay.partner(src.stem)
            stem = next((s for s in candidates if s in targets), None)
            if stem is None:
                found.missing.append(f"{src}: no clean partner ({_expected(tgt_dir, candidates)})")
                continue
            used.add(stem)
            found.pairs.append(Pair(src, targets[stem]))
        for s, p in targets.items():
            if s not in used:  # a clean file's degraded name is only known where names are the same
                where = f"({_expected(in_dir, [s])})" if lay.partner is _same else f"in {in_dir}"
                found.missing.append(f"{p}: no degraded partner {where}")
    found.pairs = _named(found.pairs, root)
    return found


def _expected(folder: Path, stems: list[str]) -> str:
    """The file(s) a partner would be, any image suffix: ``folder/00002.*`` or ``folder/{12gt,12_gt,12}.*``."""
    return str(folder / (stems[0] if len(stems) == 1 else "{" + ",".join(stems) + "}")) + ".*"


@dataclass
class LayoutReport:
    """What ``check_layout`` found: the pair count and every problem with its path."""

    root: Path
    layout: str
    pairs: int
    missing: list[str] = field(default_factory=list)
    unreadable: list[str] = field(default_factory=list)
    size_mismatch: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """True when at least one pair exists and nothing is wrong."""
        return self.pairs > 0 and not (self.missing or self.unreadable or self.size_mismatch)

    @property
    def problems(self) -> list[str]:
        """Every problem as one line, grouped by kind."""
        return (
            [f"missing partner: {m}" for m in self.missing]
            + [f"unreadable: {m}" for m in self.unreadable]
            + [f"size mismatch: {m}" for m in self.size_mismatch]
        )

    def summary(self) -> str:
        """One line: pairs and problem counts."""
        return (
            f"{self.root} ({self.layout}): {self.pairs} pairs, {len(self.missing)} missing partners, "
            f"{len(self.unreadable)} unreadable, {len(self.size_mismatch)} size mismatches"
        )


def _readable(path: Path) -> tuple[int, int] | str:
    try:
        with Image.open(path) as im:
            im.load()  # decode fully: a truncated file opens fine and fails only here
            return im.size
    except Exception as exc:  # any decoder failure means the same thing to the user: re-download the file
        return f"{path}: {exc}"


def check_layout(root: str | Path, layout: str, progress: bool = False) -> LayoutReport:
    """Decode every file under ``root`` and report pairs, missing partners, unreadable files and size mismatches."""
    lay = get_layout(layout)
    found = discover(root, lay)
    report = LayoutReport(Path(root), lay.name, 0, missing=list(found.missing))
    sizes: dict[Path, tuple[int, int] | str] = {}
    pairs: Any = found.pairs
    if progress:
        pairs = tqdm(found.pairs, desc="checking", unit="pair")
    for pair in pairs:
        files = [pair.input] if pair.target is None else [pair.input, pair.target]
        for f in files:
            if f not in sizes:
                sizes[f] = _readable(f)
                if isinstance(sizes[f], str):
                    report.unreadable.append(str(sizes[f]))
        got = [sizes[f] for f in files]
        if any(isinstance(g, str) for g in got):
            continue
        if pair.target is None:
            w, h = got[0]
            if w % 2:
                report.size_mismatch.append(f"{pair.input}: side-by-side width {w} is odd, halves differ")
                continue
        elif got[0] != got[1]:
            (w0, h0), (w1, h1) = got
            report.size_mismatch.append(f"{pair.input} is {w0}x{h0} but {pair.target} is {w1}x{h1}")
            continue
        report.pairs += 1
    return report


def to_tensor(image: np.ndarray) -> torch.Tensor:
    """float32 (H, W, 3) numpy -> contiguous (3, H, W) tensor."""
    return torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1)))


def augment_pair(
    a: np.ndarray, b: np.ndarray, rng: np.random.Generator, crop: int | None, flips: bool, rot90: bool
) -> tuple[np.ndarray, np.ndarray]:
    """Same random crop (padding reflectively if smaller), flips and 90° turns applied to both (H, W, 3) arrays."""
    if crop is not None:
        h, w = a.shape[:2]
        if h < crop or w < crop:
            pad = ((0, max(crop - h, 0)), (0, max(crop - w, 0)), (0, 0))
            a, b = np.pad(a, pad, mode="reflect"), np.pad(b, pad, mode="reflect")
            h, w = a.shape[:2]
        y = int(rng.integers(0, h - crop + 1))
        x = int(rng.integers(0, w - crop + 1))
        a, b = a[y : y + crop, x : x + crop], b[y : y + crop, x : x + crop]
    if flips:
        if rng.random() < 0.5:
            a, b = a[:, ::-1], b[:, ::-1]
        if rng.random() < 0.5:
            a, b = a[::-1], b[::-1]
    if rot90:
        k = int(rng.integers(0, 4))
        a, b = np.rot90(a, k), np.rot90(b, k)
    return a, b


def sample(input_: np.ndarray, target: np.ndarray, label: int, name: str, weather: bool = True) -> dict[str, Any]:
    """The sample dict every dataset returns: input/target (3, H, W) float32, label () int64, name, and weather
    () bool: False for a synthetic sample the engine left clear (``clear_p``), whose label the recognition loss
    ignores — it names the head that restores it, not weather it shows."""
    return {
        "input": to_tensor(input_),
        "target": to_tensor(target),
        "label": torch.tensor(label, dtype=torch.long),
        "name": name,
        "weather": torch.tensor(weather),
    }


class PairedDataset(Dataset):
    """Degraded/clean pairs of one public layout, labelled 0 (rain) or 1 (snow); full images when ``crop`` is None.

    With ``augment`` each read draws a fresh crop, flips (and 90° turns with ``rot90``) from ``(seed, index)`` and
    one draw of torch's RNG, which DataLoader seeds per worker and epoch: crops vary between epochs, and a run
    seeded with ``torch.manual_seed`` repeats exactly. Without ``augment`` a crop is the centre crop.
    """

    def __init__(
        self,
        root: str | Path,
        layout: str,
        label: int,
        crop: int | None = None,
        augment: bool = False,
        rot90: bool = False,
        seed: int = 0,
    ) -> None:
        if label not in (0, 1):
            raise DataError(f"label must be 0 (rain) or 1 (snow), got {label}")
        self.root = Path(root)
        self.layout = get_layout(layout)
        self.label, self.crop, self.augment, self.rot90, self.seed = label, crop, augment, rot90, seed
        found = discover(self.root, self.layout)
        self.pairs = found.pairs
        self.missing = found.missing  # files without a partner, left out of ``pairs`` (one line each)
        if not self.pairs:
            raise DataError(
                f"{self.root}: no {layout} pairs found; run `smartassign data check {self.root} --layout {layout}`"
            )

    def __len__(self) -> int:
        return len(self.pairs)

    def load_pair(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        """Decode pair ``index`` as float32 (H, W, 3) degraded and clean images."""
        pair = self.pairs[index]
        if pair.target is None:
            both = load_rgb(pair.input)
            half = both.shape[1] // 2
            return both[:, :half], both[:, half : 2 * half]
        degraded, clean = load_rgb(pair.input), load_rgb(pair.target)
        if degraded.shape != clean.shape:
            raise ImageError(
                f"{pair.input} is {degraded.shape[1]}x{degraded.shape[0]} but {pair.target} is "
                f"{clean.shape[1]}x{clean.shape[0]}; run `smartassign data check`"
            )
        return degraded, clean

    def __getitem__(self, index: int) -> dict[str, Any]:
        degraded, clean = self.load_pair(index)
        if self.augment:
            draw = int(torch.randint(0, 2**62, ()).item())
            rng = np.random.default_rng((self.seed, index, draw))
            degraded, clean = augment_pair(degraded, clean, rng, self.crop, True, self.rot90)
        elif self.crop is not None:
            degraded, clean = _center_crop(degraded, self.crop), _center_crop(clean, self.crop)
        return sample(degraded, clean, self.label, self.pairs[index].name)


def _center_crop(a: np.ndarray, crop: int) -> np.ndarray:
    h, w = a.shape[:2]
    if h < crop or w < crop:
        a = np.pad(a, ((0, max(crop - h, 0)), (0, max(crop - w, 0)), (0, 0)), mode="reflect")
        h, w = a.shape[:2]
    y, x = (h - crop) // 2, (w - crop) // 2
    return a[y : y + crop, x : x + crop]
