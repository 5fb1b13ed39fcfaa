"""Image files and arrays: reading, writing and the pixel layouts the restorer accepts.

Every decoded image becomes a :class:`Picture` whose ``pixels`` are ``(H, W, C)``
``uint8`` or ``uint16`` with ``C`` = 1 (gray), 2 (gray + alpha), 3 (RGB) or 4
(RGBA). Pillow decodes and encodes everything except colour images with 16 bits
per channel, which Pillow silently reduces to 8 bits: those go through
``imagecodecs`` (PNG) and ``tifffile`` (TIFF), so a 16-bit file stays 16-bit.

Reading applies the EXIF orientation, converts palette images to RGB(A) and
CMYK / YCbCr / LAB / HSV to RGB (CMYK through its embedded ICC profile when it
has one), and rejects images above a pixel limit before decoding them. Every
failure is an :class:`ImageError` that names the file. Writing is atomic.
"""

from __future__ import annotations

import io
import struct
import warnings
import zlib
from dataclasses import dataclass
from pathlib import Path

import imagecodecs
import numpy as np
import tifffile
from PIL import Image, ImageCms, ImageOps, UnidentifiedImageError

from smartassign.checkpoint import atomic_write
from smartassign.errors import ImageError

MAX_PIXELS = 100_000_000
# What Pillow's decoders raise on damaged data (the exceptions its own fuzzers accept).
DECODE_ERRORS = (OSError, SyntaxError, ValueError, EOFError, TypeError, IndexError, struct.error, zlib.error)
# Formats written as they came; anything else Pillow reads (BMP, GIF, ...) is written as PNG.
WRITABLE = {"JPEG": ".jpg", "PNG": ".png", "WEBP": ".webp", "TIFF": ".tif"}
SUFFIX_FORMAT = {".jpg": "JPEG", ".jpeg": "JPEG", ".png": "PNG", ".webp": "WEBP", ".tif": "TIFF", ".tiff": "TIFF"}
# Pillow modes that convert without losing anything the restorer keeps.
_CONVERT = {"1": "L", "La": "LA", "RGBa": "RGBA", "RGBX": "RGB", "YCbCr": "RGB", "LAB": "RGB", "HSV": "RGB"}
_MODE_OF_CHANNELS = {1: "L", 2: "LA", 3: "RGB", 4: "RGBA"}
# EXIF orientation (tag 274) -> the numpy view that undoes it, as ImageOps.exif_transpose does.
_ORIENT = {
    2: lambda a: a[:, ::-1],
    3: lambda a: a[::-1, ::-1],
    4: lambda a: a[::-1],
    5: lambda a: a.swapaxes(0, 1),
    6: lambda a: np.rot90(a, -1),
    7: lambda a: np.rot90(a, 2).swapaxes(0, 1),
    8: lambda a: np.rot90(a, 1),
}
_JPEG_QUALITY = 95


@dataclass
class Picture:
    """A decoded image: ``pixels`` ``(H, W, C)`` uint8/uint16 plus what is needed to write it back alike."""

    pixels: np.ndarray
    format: str  # Pillow's name of the file format, e.g. "JPEG"
    icc_profile: bytes | None = None
    exif: bytes | None = None  # orientation already applied and removed


def pil_to_array(image: Image.Image, name: str = "image") -> np.ndarray:
    """Pixels of a Pillow image as ``(H, W, C)`` uint8 (or uint16 for 16-bit gray), converting palette/CMYK/etc."""
    mode = image.mode
    if mode.startswith("I;16"):
        return np.asarray(image).astype(np.uint16)[..., None]
    if mode in ("I", "F"):
        raise ImageError(f"{name}: 32-bit pixel mode {mode!r} is not supported; save it with 8 or 16 bits per channel")
    if mode in ("P", "PA"):
        mode = "RGBA" if mode == "PA" or "transparency" in image.info else "RGB"
    elif mode == "CMYK":
        image = _cmyk_to_rgb(image)
        mode = "RGB"
    mode = _CONVERT.get(mode, mode)
    if mode not in _MODE_OF_CHANNELS.values():
        raise ImageError(f"{name}: unsupported pixel mode {image.mode!r}")
    pixels = np.asarray(image if image.mode == mode else image.convert(mode))
    return pixels if pixels.ndim == 3 else pixels[..., None]


def array_to_pil(pixels: np.ndarray) -> Image.Image:
    """A Pillow image of ``(H, W, C)`` uint8 pixels, or of ``(H, W, 1)`` uint16 gray (mode ``I;16``)."""
    c = pixels.shape[2]
    if pixels.dtype == np.uint16 and c != 1:
        raise ImageError(f"Pillow cannot hold {c}-channel 16-bit pixels")
    # Pillow infers the mode from the array: uint16 (H, W) -> I;16; uint8 1..4 channels -> L, LA, RGB, RGBA.
    return Image.fromarray(np.ascontiguousarray(pixels[..., 0] if c == 1 else pixels))


def _cmyk_to_rgb(image: Image.Image) -> Image.Image:
    """CMYK to RGB through the embedded ICC profile (sRGB out), or Pillow's formula without one."""
    icc = image.info.get("icc_profile")
    if icc:
        try:
            source = ImageCms.ImageCmsProfile(io.BytesIO(icc))
            return ImageCms.profileToProfile(image, source, ImageCms.createProfile("sRGB"), outputMode="RGB")
        except (ImageCms.PyCMSError, OSError):
            pass  # a broken profile: the plain formula below still gives a usable image
    return image.convert("RGB")


def _bits_per_channel(path: Path, image: Image.Image) -> int:
    """Bits per sample as stored in the file (Pillow reports 16-bit colour as 8-bit modes)."""
    if image.format == "PNG":
        with open(path, "rb") as fh:
            header = fh.read(26)  # signature (8) + IHDR length/type (8) + width/height (8) + depth
        return header[24] if len(header) == 26 else 8
    if image.format == "TIFF":
        bits = image.tag_v2.get(258, (8,))
        return max(bits) if isinstance(bits, tuple) else int(bits)
    return 8


def _read_deep_colour(path: Path, image: Image.Image) -> np.ndarray:
    """``(H, W, C)`` uint16 pixels of a 16-bit colour PNG or TIFF, EXIF orientation applied."""
    if image.format == "PNG":
        pixels = imagecodecs.png_decode(path.read_bytes())
    else:
        with tifffile.TiffFile(path) as tif:
            page = tif.pages[0]
            pixels = page.asarray()
            if page.axes.startswith("S"):  # planar configuration: samples first
                pixels = np.moveaxis(pixels, 0, -1)
    if pixels.dtype != np.uint16 or pixels.ndim != 3 or pixels.shape[2] not in (2, 3, 4):
        raise ImageError(f"{path}: unsupported {pixels.dtype} image of shape {pixels.shape}")
    orientation = image.getexif().get(0x0112, 1)
    return np.ascontiguousarray(_ORIENT[orientation](pixels)) if orientation in _ORIENT else pixels


def _check_size(path: Path, w: int, h: int, max_pixels: int) -> None:
    """:class:`ImageError` for an image above the pixel limit or without pixels, before it is decoded."""
    if w * h > max_pixels:
        raise ImageError(
            f"{path}: {w}x{h} is {w * h / 1e6:.0f} MP, above the limit of {max_pixels / 1e6:.0f} MP "
            "(raise it with --max-megapixels if the image is genuine)"
        )
    if w * h == 0:
        raise ImageError(f"{path}: image has zero size ({w}x{h})")


def _read_tiff(path: Path, max_pixels: int) -> Picture:
    """A TIFF that Pillow cannot open (16-bit gray + alpha, as :func:`write_image` writes it), read by tifffile."""
    try:
        with tifffile.TiffFile(path) as tif:
            page = tif.pages[0]
            _check_size(path, page.imagewidth, page.imagelength, max_pixels)
            pixels = page.asarray()
            planar = page.axes.startswith("S")
            orientation = page.tags.valueof(274, 1)
            icc = page.tags.valueof(34675)
    except ImageError:
        raise
    except (*DECODE_ERRORS, tifffile.TiffFileError) as exc:
        raise ImageError(f"{path}: corrupt or truncated image ({exc})") from None
    pixels = np.moveaxis(pixels, 0, -1) if planar else pixels
    pixels = pixels[..., None] if pixels.ndim == 2 else pixels
    if pixels.dtype not in (np.uint8, np.uint16) or pixels.ndim != 3 or pixels.shape[2] not in (1, 2, 3, 4):
        raise ImageError(f"{path}: unsupported {pixels.dtype} image of shape {pixels.shape}; use 8 or 16 bits")
    pixels = np.ascontiguousarray(_ORIENT[orientation](pixels)) if orientation in _ORIENT else pixels
    return Picture(pixels, "TIFF", icc if isinstance(icc, bytes) else None, None)


def read_image(path: str | Path, max_pixels: int = MAX_PIXELS) -> Picture:
    """Decode an image file to a :class:`Picture`; :class:`ImageError` naming the file on any problem."""
    path = Path(path)
    try:
        size = path.stat().st_size
    except OSError as exc:
        raise ImageError(f"{path}: cannot read ({exc.strerror or exc})") from None
    if not path.is_file():
        raise ImageError(f"{path}: not a file")
    if size == 0:
        raise ImageError(f"{path}: empty file (0 bytes)")
    try:
        with warnings.catch_warnings():
            # The pixel limit below is ours; Pillow's softer warning for large images is noise here.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(path) as image:
                _check_size(path, *image.size, max_pixels)
                fmt = image.format or "PNG"
                icc = image.info.get("icc_profile") or None
                if image.mode in ("RGB", "RGBA", "LA") and _bits_per_channel(path, image) > 8:
                    return Picture(_read_deep_colour(path, image), fmt, icc, None)
                upright = ImageOps.exif_transpose(image)
                exif = upright.info.get("exif") or None
                if upright.mode in ("CMYK", "YCbCr", "LAB", "HSV"):
                    icc = None  # the profile describes the old colour space, not the RGB written out
                return Picture(pil_to_array(upright, str(path)), fmt, icc, exif)
    except ImageError:
        raise
    except UnidentifiedImageError:
        with open(path, "rb") as fh:
            if fh.read(4) in (b"II*\0", b"MM\0*", b"II+\0", b"MM\0+"):  # TIFF or BigTIFF
                return _read_tiff(path, max_pixels)
        raise ImageError(f"{path}: not an image file Pillow can read") from None
    except Image.DecompressionBombError:
        raise ImageError(f"{path}: too many pixels for Pillow's decompression-bomb limit") from None
    except (*DECODE_ERRORS, tifffile.TiffFileError, imagecodecs.PngError) as exc:
        raise ImageError(f"{path}: corrupt or truncated image ({exc})") from None


def output_format(path: Path, fallback: str) -> str:
    """The Pillow format name for ``path``'s suffix, or ``fallback`` for an unknown suffix."""
    return SUFFIX_FORMAT.get(path.suffix.lower(), fallback)


def _fit_format(pixels: np.ndarray, fmt: str) -> np.ndarray:
    """Pixels the format can store: JPEG and WebP have 8 bits, JPEG has no alpha."""
    if fmt in ("JPEG", "WEBP") and pixels.dtype == np.uint16:
        pixels = ((pixels.astype(np.uint32) * 255 + 32767) // 65535).astype(np.uint8)
    if fmt == "JPEG" and pixels.shape[2] in (2, 4):
        pixels = pixels[..., :-1]
    return pixels


def write_image(
    path: str | Path, pixels: np.ndarray, fmt: str | None = None, icc_profile: bytes | None = None,
    exif: bytes | None = None,
) -> None:
    """Write ``(H, W, C)`` uint8/uint16 pixels atomically as ``fmt`` (default: from the suffix)."""
    path = Path(path)
    fmt = fmt or output_format(path, "PNG")
    if fmt not in WRITABLE:
        raise ImageError(f"{path}: cannot write format {fmt}; choose one of {', '.join(WRITABLE)}")
    pixels = _fit_format(pixels, fmt)
    if pixels.dtype == np.uint16 and pixels.shape[2] > 1:
        if fmt == "PNG":
            atomic_write(path, lambda tmp: tmp.write_bytes(imagecodecs.png_encode(pixels)))
        else:
            photometric = "minisblack" if pixels.shape[2] == 2 else "rgb"
            extras = ["unassalpha"] if pixels.shape[2] in (2, 4) else None
            atomic_write(
                path,
                lambda tmp: tifffile.imwrite(tmp, pixels, photometric=photometric, extrasamples=extras,
                                             iccprofile=icc_profile),
            )
        return
    image = array_to_pil(pixels)
    options: dict[str, object] = {}
    if icc_profile:
        options["icc_profile"] = icc_profile
    if exif:
        options["exif"] = exif
    if fmt in ("JPEG", "WEBP"):
        options["quality"] = _JPEG_QUALITY
    atomic_write(path, lambda tmp: image.save(tmp, format=fmt, **options))


def save_picture(path: str | Path, picture: Picture, fmt: str | None = None) -> None:
    """Write a :class:`Picture` atomically, keeping its ICC profile and EXIF."""
    write_image(path, picture.pixels, fmt, picture.icc_profile, picture.exif)


__all__ = [
    "MAX_PIXELS",
    "Picture",
    "WRITABLE",
    "array_to_pil",
    "output_format",
    "pil_to_array",
    "read_image",
    "save_picture",
    "write_image",
]
