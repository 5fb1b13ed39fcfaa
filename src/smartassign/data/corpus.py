"""Clean natural photographs that installed packages ship: the offline corpus for synthetic rain and snow.

Two splits, fixed by file and never by chance:

* ``heldout`` — reserved for evaluation, never trained on: the photos that scikit-learn, matplotlib, imgaug,
  PyWavelets and mahotas ship, plus scikit-image's coffee, rocket, motorcycle left/right, coins and gravel.
* ``train`` — photographs from Debian wallpaper and artwork packages (``scripts/install_photos.sh``) plus the
  other scikit-image photographs.

Each entry names its package and licence; ``docs/datasets.md`` lists them. Only files that exist are returned, so
the corpus shrinks gracefully when optional packages are missing; nothing is ever downloaded.
"""

from __future__ import annotations

import hashlib
import importlib.util
import io
import logging
import os
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from smartassign.errors import DataError, ImageError

log = logging.getLogger(__name__)

Split = Literal["train", "heldout"]


@dataclass(frozen=True)
class Photo:
    """One corpus photograph: where it lives, which package ships it, and under which licence."""

    package: str  # Debian package or Python distribution that ships the file
    path: str  # absolute for Debian files, relative to the Python package directory otherwise
    licence: str
    author: str
    split: Split

    def resolve(self) -> Path | None:
        """The file on this machine, or None when its package is not installed."""
        if self.path.startswith("/"):
            p = Path(self.path)
        else:
            root = _python_package_dir(self.package)
            if root is None:
                return None
            p = root / self.path
        return p if p.is_file() else None


# Import names of the Python distributions; found without importing them (imgaug, for one, fails to import
# with current NumPy, but its bundled photo is still a file on disk).
_MODULES = {
    "scikit-image": "skimage",
    "scikit-learn": "sklearn",
    "matplotlib": "matplotlib",
    "imgaug": "imgaug",
    "PyWavelets": "pywt",
    "mahotas": "mahotas",
}


def _python_package_dir(distribution: str) -> Path | None:
    spec = importlib.util.find_spec(_MODULES[distribution])
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations)))


def _debian(package: str, folder: str, names: str, licence: str, author: str) -> list[Photo]:
    return [Photo(package, f"{folder}/{n}", licence, author, "train") for n in names.split()]


def _plasma(names: str, licence: str, author: str, size: str = "2560x1600") -> list[Photo]:
    paths = [f"/usr/share/wallpapers/{n}/contents/images/{size}.jpg" for n in names.split()]
    return [Photo("plasma-workspace-wallpapers", p, licence, author, "train") for p in paths]


_MIDDLEBURY = "Middlebury 2014 stereo (research use)"
_MATE = "/usr/share/backgrounds/mate/nature"
_LOMIRI = "/usr/share/backgrounds"
_TUXPAINT = "/usr/share/tuxpaint/templates"

# Curated by looking at every image the packages ship: only photographs, no renders, drawings or gradients.
# Where a wallpaper comes in several sizes, the largest landscape one is listed.
PHOTOS: tuple[Photo, ...] = (
    # --- held out: never trained on ---
    Photo("scikit-learn", "datasets/images/china.jpg", "CC-BY-2.0", "danielbuechele (Flickr)", "heldout"),
    Photo("scikit-learn", "datasets/images/flower.jpg", "CC-BY-2.0", "vultilion (Flickr)", "heldout"),
    Photo("matplotlib", "mpl-data/sample_data/grace_hopper.jpg", "public domain", "US Navy", "heldout"),
    Photo("imgaug", "quokka.jpg", "as shipped in imgaug (MIT package)", "imgaug authors", "heldout"),
    Photo("PyWavelets", "data/aero.npz", "as shipped in PyWavelets (MIT package)", "unknown", "heldout"),
    Photo("PyWavelets", "data/ascent.npz", "public domain", "public-domain-image.com via SciPy", "heldout"),
    Photo("PyWavelets", "data/camera.npz", "CC0", "Lav Varshney", "heldout"),
    Photo("mahotas", "demos/data/DepartmentStore.jpg", "as shipped in mahotas (MIT package)", "mahotas", "heldout"),
    Photo("mahotas", "demos/data/luispedro.jpg", "as shipped in mahotas (MIT package)", "Luis Pedro Coelho", "heldout"),
    Photo("scikit-image", "data/coffee.png", "CC0", "Rachel Michetti", "heldout"),
    Photo("scikit-image", "data/rocket.jpg", "public domain", "SpaceX", "heldout"),
    Photo("scikit-image", "data/motorcycle_left.png", _MIDDLEBURY, "Scharstein et al.", "heldout"),
    Photo("scikit-image", "data/motorcycle_right.png", _MIDDLEBURY, "Scharstein et al.", "heldout"),
    Photo("scikit-image", "data/coins.png", "no known copyright restrictions", "Brooklyn Museum", "heldout"),
    Photo("scikit-image", "data/gravel.png", "CC0", "CC0Textures", "heldout"),
    # --- train: scikit-image photos not reserved (its camera.png is the same picture as PyWavelets' camera.npz) ---
    Photo("scikit-image", "data/astronaut.png", "public domain", "NASA", "train"),
    Photo("scikit-image", "data/brick.png", "CC0", "CC0Textures", "train"),
    Photo("scikit-image", "data/chelsea.png", "CC0", "Stefan van der Walt", "train"),
    Photo("scikit-image", "data/grass.png", "CC0", "CC0Textures", "train"),
    Photo("scikit-image", "data/moon.png", "no known copyright restrictions", "NASA", "train"),
    # --- train: Debian packages ---
    *_debian(
        "mate-backgrounds", _MATE,
        "Aqua.jpg LadyBird.jpg YellowFlower.jpg Garden.jpg TwoWings.jpg",
        "GPL-2+", "Charles Barbin",
    ),
    *_debian("mate-backgrounds", _MATE, "Blinds.jpg", "GPL-2+", "Lennart Poettering"),
    *_debian("mate-backgrounds", _MATE, "Dune.jpg", "GPL-2+", "Marco Cogoni"),
    *_debian("mate-backgrounds", _MATE, "FreshFlower.jpg", "GPL-2+", "Jens Ansorg"),
    *_debian("mate-backgrounds", _MATE, "GreenMeadow.jpg", "GPL-2+", "Timothy Schellhase"),
    *_debian("mate-backgrounds", _MATE, "RainDrops.jpg", "GPL-2+", "blackcombwhistler07"),
    *_debian("mate-backgrounds", _MATE, "Storm.jpg", "GPL-2+", "Sergey Nazarov"),
    *_debian("mate-backgrounds", _MATE, "Wood.jpg", "GPL-2+", "Jean-François Fortin Tam"),
    *_plasma("BytheWater", "LGPL-3", "Maciej Wiklo"),
    *_plasma("ColdRipple DarkestHour Kite OneStandsOut Path summer_1am", "LGPL-3", "Risto Saukonpää"),
    *_plasma("ColorfulCups", "LGPL-3", "Dmitri Popov"),
    *_plasma("EveningGlow", "LGPL-3", "Ian Hex"),
    *_plasma("FallenLeaf", "LGPL-3", "Martin Klapetek"),
    *_plasma("Grey", "LGPL-3", "Sigi Sagi"),
    *_plasma("Volna", "CC-BY-SA-4.0", "Nikita Babin", size="5120x2880"),
    *_debian(
        "lomiri-wallpapers-16.04", _LOMIRI,
        "aitzgorri_by_Aitzol_Berasategi.jpg friends_by_Aitzol_Berasategi.jpg life_by_Aitzol_Berasategi.jpg "
        "picosdeeuropa_by_Aitzol_Berasategi.jpg sunset_by_Aitzol_Berasategi.jpg",
        "CC-BY-4.0", "Aitzol Berasategi",
    ),
    *_debian(
        "lomiri-wallpapers-16.04", _LOMIRI,
        "analogpattern_by_Peter_Nerlich.jpg free_by_Peter_Nerlich.jpg greentock_by_Peter_Nerlich.jpg",
        "CC-BY-SA-4.0", "Peter Nerlich",
    ),
    *_debian("lomiri-wallpapers-16.04", _LOMIRI, "Bridge_by_Sander_Klootwijk.jpg", "CC-BY-SA-4.0", "Sander Klootwijk"),
    *_debian("lomiri-wallpapers-16.04", _LOMIRI, "Dragonfly_by_Bolly.jpg", "CC-BY-SA-4.0", "Bolly"),
    *_debian(
        "lomiri-wallpapers-16.04", _LOMIRI,
        "Picture_0B_by_freespace.jpg Picture_1A_by_freespace.jpg", "CC-BY-4.0", "Trevor 'Freespace'",
    ),
    *_debian("lomiri-wallpapers-16.04", _LOMIRI, "seeding_by_Clements_Engelhardt.jpg", "CC0-1.0", "Clemens Engelhardt"),
    *_debian("lomiri-wallpapers-16.04", _LOMIRI, "Wine_by_Jakkub_Mede.jpg", "CC-BY-4.0", "Jakub Mede"),
    *_debian("lomiri-wallpapers-20.04", _LOMIRI, "Kleiber_by_Lukas_Baubkus.jpg", "CC-BY-SA-3.0", "Lukas Baubkus"),
    *_debian(
        "tuxpaint-data", _TUXPAINT,
        "burnt_bark.jpg cliff.jpg corn_maze.jpg jellyfish.jpg lighthouse.jpg mossy_bark.jpg mossy_log.jpg "
        "mudstone.jpg ocean_splash.jpg ocean_waves.jpg redwoods_above.jpg rocks.jpg sheep.jpg spiders_web.jpg "
        "sun_behind_clouds.jpg sun_behind_leaves.jpg trees_above.jpg trees_at_dusk.jpg wool_mill_machine.jpg",
        "GPL-2+", "Bill Kendrick",
    ),
)


def clean_photos(split: Split) -> list[Path]:
    """Installed photographs of one split, in a fixed order (``train`` or ``heldout``)."""
    if split not in ("train", "heldout"):
        raise DataError(f"unknown photo split {split!r}; use 'train' or 'heldout'")
    found = [p for p in (photo.resolve() for photo in PHOTOS if photo.split == split) if p is not None]
    if not found:
        raise DataError(f"no {split} photographs found; install scikit-image (scripts/install_photos.sh adds more)")
    return found


def photo_info(path: Path) -> Photo | None:
    """The corpus entry of an installed file, or None if it is not a corpus photograph."""
    for photo in PHOTOS:
        if photo.resolve() == Path(path):
            return photo
    return None


def _to_float_rgb(arr: np.ndarray) -> np.ndarray:
    """uint8/uint16/float array, gray or RGB(A) -> float32 (H, W, 3) in [0, 1]."""
    if arr.dtype == np.uint8:
        out = arr.astype(np.float32) / 255.0
    elif arr.dtype == np.uint16:
        out = arr.astype(np.float32) / 65535.0
    else:
        out = arr.astype(np.float32)
        if out.max(initial=0.0) > 1.0:  # float arrays stored on a 0..255 scale (PyWavelets' npz)
            out /= 255.0
    if out.ndim == 2:
        out = np.repeat(out[..., None], 3, axis=2)
    return np.ascontiguousarray(np.clip(out[..., :3], 0.0, 1.0))


def _open_pil(path: Path, draft_side: int | None = None) -> Image.Image:
    try:
        im = Image.open(path)
        if draft_side is not None and im.format == "JPEG" and max(im.size) > draft_side:
            # JPEG decodes straight to a power-of-two reduction: a 5K wallpaper then costs a fraction of a full decode.
            scale = draft_side / max(im.size)
            im.draft("RGB", (int(im.width * scale) + 1, int(im.height * scale) + 1))
        im = ImageOps.exif_transpose(im)
        im.load()
    except FileNotFoundError as exc:
        raise ImageError(f"{path}: no such file") from exc
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
        raise ImageError(f"{path}: cannot read image ({exc})") from exc
    if im.width == 0 or im.height == 0:
        raise ImageError(f"{path}: image has zero size")
    return im


def _pil_to_array(im: Image.Image) -> np.ndarray:
    if im.mode in ("I;16", "I;16B", "I;16L", "I"):
        return np.asarray(im, dtype=np.uint16 if im.mode.startswith("I;16") else np.int32).astype(np.uint16)
    return np.asarray(im.convert("RGB"))


def _load_npz(path: Path) -> np.ndarray:
    try:
        with np.load(path) as npz:
            return np.asarray(npz[npz.files[0]])
    except (OSError, ValueError, zipfile.BadZipFile, IndexError) as exc:
        raise ImageError(f"{path}: cannot read array image ({exc})") from exc


def load_rgb(path: str | Path) -> np.ndarray:
    """Read an image file (any Pillow format, EXIF-rotated, or a PyWavelets ``.npz``) as float32 (H, W, 3) in [0, 1]."""
    path = Path(path)
    if path.suffix.lower() == ".npz":
        return _to_float_rgb(_load_npz(path))
    return _to_float_rgb(_pil_to_array(_open_pil(path)))


def _cache_dir() -> Path:
    env = os.environ.get("SMARTASSIGN_CACHE")
    if env:
        return Path(env) / "photos"
    base = os.environ.get("XDG_CACHE_HOME") or (Path.home() / ".cache")
    return Path(base) / "smartassign" / "photos"


def _downscaled(path: Path, max_side: int) -> np.ndarray:
    if path.suffix.lower() == ".npz":
        im = Image.fromarray((_to_float_rgb(_load_npz(path)) * 255.0 + 0.5).astype(np.uint8))
    else:
        im = _open_pil(path, draft_side=max_side)
        if im.mode.startswith("I"):  # 16-bit: scale to 8 bits by value, not by Pillow's clipping convert()
            im = Image.fromarray((_to_float_rgb(_pil_to_array(im)) * 255.0 + 0.5).astype(np.uint8))
    im = im.convert("RGB")
    if max(im.size) > max_side:
        im.thumbnail((max_side, max_side), Image.Resampling.LANCZOS)
    return np.asarray(im, dtype=np.uint8)


def load_downscaled(path: str | Path, max_side: int = 768) -> np.ndarray:
    """A photo as uint8 (H, W, 3) with its longest side at most ``max_side``, decoded once and cached on disk."""
    path = Path(path)
    try:
        st = path.stat()
    except OSError as exc:
        raise ImageError(f"{path}: no such file") from exc
    key = hashlib.sha1(f"{path.resolve()}|{st.st_mtime_ns}|{st.st_size}|{max_side}".encode()).hexdigest()[:20]
    cached = _cache_dir() / f"{path.stem[:40]}-{key}.npy"
    if cached.is_file():
        try:
            return np.load(cached)
        except (OSError, ValueError):
            log.debug("ignoring damaged cache file %s", cached)
    arr = _downscaled(path, max_side)
    try:
        cached.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=cached.parent, suffix=".tmp", delete=False) as tmp:
            buf = io.BytesIO()
            np.save(buf, arr)
            tmp.write(buf.getvalue())
        os.replace(tmp.name, cached)
    except OSError as exc:  # a read-only home must not stop training; it only costs decode time
        log.debug("photo cache not written (%s)", exc)
    return arr
