"""Image files: formats, bit depths, layouts, EXIF orientation, metadata, and one-line errors for bad files."""

from __future__ import annotations

import errno
import io
import struct
import zlib
from pathlib import Path

import imagecodecs
import numpy as np
import pytest
import tifffile
from PIL import Image, ImageCms

from smartassign.errors import ImageError
from smartassign.io import read_image, save_picture, write_image

RNG = np.random.default_rng(0)
# Pillow transpose that *stores* an upright image so that EXIF orientation N displays it upright again.
STORE = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_90,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_270,
}


def noise(h: int, w: int, c: int, dtype: type = np.uint8) -> np.ndarray:
    """``(h, w, c)`` random pixels over the dtype's full range."""
    return RNG.integers(0, np.iinfo(dtype).max + 1, (h, w, c), dtype=dtype)


@pytest.mark.parametrize(
    ("suffix", "channels", "dtype"),
    [
        (".png", 1, np.uint8),
        (".png", 2, np.uint8),
        (".png", 3, np.uint8),
        (".png", 4, np.uint8),
        (".png", 1, np.uint16),
        (".png", 2, np.uint16),
        (".png", 3, np.uint16),
        (".png", 4, np.uint16),
        (".tif", 1, np.uint8),
        (".tif", 3, np.uint8),
        (".tif", 4, np.uint8),
        (".tif", 1, np.uint16),
        (".tif", 3, np.uint16),
        (".tif", 4, np.uint16),
    ],
)
def test_lossless_formats_round_trip_exactly(tmp_path: Path, suffix: str, channels: int, dtype: type) -> None:
    pixels = noise(13, 17, channels, dtype)
    write_image(tmp_path / f"x{suffix}", pixels)
    back = read_image(tmp_path / f"x{suffix}").pixels
    assert back.dtype == dtype and back.shape == pixels.shape
    np.testing.assert_array_equal(back, pixels)


@pytest.mark.parametrize(("suffix", "channels"), [(".jpg", 3), (".jpg", 1), (".webp", 3), (".webp", 4)])
def test_lossy_formats_keep_layout_and_are_close(tmp_path: Path, suffix: str, channels: int) -> None:
    pixels = np.repeat(np.linspace(0, 255, 32, dtype=np.uint8)[None, :, None], 24, axis=0).repeat(channels, axis=2)
    write_image(tmp_path / f"x{suffix}", pixels)
    back = read_image(tmp_path / f"x{suffix}").pixels
    assert back.shape == pixels.shape and back.dtype == np.uint8
    assert np.abs(back.astype(int) - pixels).mean() < 3


def test_16_bit_colour_png_from_another_encoder_stays_16_bit(tmp_path: Path) -> None:
    # Pillow alone would decode this file to 8 bits per channel.
    pixels = noise(9, 11, 3, np.uint16)
    (tmp_path / "deep.png").write_bytes(imagecodecs.png_encode(pixels))
    picture = read_image(tmp_path / "deep.png")
    assert picture.format == "PNG"
    np.testing.assert_array_equal(picture.pixels, pixels)


def test_planar_16_bit_tiff_is_read_as_hwc(tmp_path: Path) -> None:
    pixels = noise(6, 10, 3, np.uint16)
    tifffile.imwrite(tmp_path / "planar.tif", np.moveaxis(pixels, -1, 0), photometric="rgb", planarconfig="separate")
    np.testing.assert_array_equal(read_image(tmp_path / "planar.tif").pixels, pixels)


def test_jpeg_and_webp_store_16_bit_as_8_bit_and_jpeg_drops_alpha(tmp_path: Path) -> None:
    pixels = np.full((8, 8, 4), 65535, dtype=np.uint16)
    write_image(tmp_path / "x.jpg", pixels)
    back = read_image(tmp_path / "x.jpg").pixels
    assert back.shape == (8, 8, 3) and back.dtype == np.uint8 and back.min() >= 250


@pytest.mark.parametrize("orientation", sorted(STORE))
def test_exif_orientation_is_applied_and_removed(tmp_path: Path, orientation: int) -> None:
    upright = noise(6, 10, 3)
    exif = Image.Exif()
    exif[0x0112] = orientation
    Image.fromarray(upright).transpose(STORE[orientation]).save(tmp_path / "x.png", exif=exif.tobytes())
    picture = read_image(tmp_path / "x.png")
    np.testing.assert_array_equal(picture.pixels, upright)
    save_picture(tmp_path / "out.png", picture)
    with Image.open(tmp_path / "out.png") as written:
        assert written.getexif().get(0x0112, 1) == 1  # viewers must not rotate the upright pixels again


@pytest.mark.parametrize("orientation", sorted(STORE))
def test_exif_orientation_of_16_bit_colour_tiff(tmp_path: Path, orientation: int) -> None:
    upright = noise(6, 10, 3, np.uint16)
    stored = np.stack(
        [np.asarray(Image.fromarray(upright[..., c]).transpose(STORE[orientation])) for c in range(3)], axis=-1
    )
    tifffile.imwrite(tmp_path / "x.tif", stored, photometric="rgb", extratags=[(274, "H", 1, orientation, True)])
    np.testing.assert_array_equal(read_image(tmp_path / "x.tif").pixels, upright)


def test_palette_with_and_without_transparency(tmp_path: Path) -> None:
    rgb = Image.fromarray(noise(8, 8, 3)).convert("P")
    rgb.save(tmp_path / "p.png")
    rgb.save(tmp_path / "pt.png", transparency=0)
    assert read_image(tmp_path / "p.png").pixels.shape == (8, 8, 3)
    assert read_image(tmp_path / "pt.png").pixels.shape == (8, 8, 4)


def test_cmyk_jpeg_becomes_rgb_without_the_cmyk_profile(tmp_path: Path) -> None:
    Image.new("CMYK", (8, 6), (0, 255, 255, 0)).save(tmp_path / "cmyk.jpg")
    picture = read_image(tmp_path / "cmyk.jpg")
    assert picture.pixels.shape == (6, 8, 3) and picture.icc_profile is None
    assert picture.pixels[..., 0].mean() > 200 and picture.pixels[..., 1:].mean() < 50  # cyan-free magenta+yellow: red


def test_one_bit_image_becomes_gray(tmp_path: Path) -> None:
    Image.fromarray(noise(5, 7, 1)[..., 0] > 127).save(tmp_path / "bw.png")
    pixels = read_image(tmp_path / "bw.png").pixels
    assert pixels.shape == (5, 7, 1) and set(np.unique(pixels)) <= {0, 255}


def test_icc_profile_is_kept(tmp_path: Path) -> None:
    icc = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    Image.fromarray(noise(4, 4, 3)).save(tmp_path / "in.png", icc_profile=icc)
    picture = read_image(tmp_path / "in.png")
    assert picture.icc_profile == icc
    save_picture(tmp_path / "out.jpg", picture)
    with Image.open(tmp_path / "out.jpg") as written:
        assert written.info["icc_profile"] == icc


def png_claiming(width: int, height: int) -> bytes:
    """A tiny PNG whose header claims ``width x height`` pixels (a decompression bomb's shape)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")


def truncated(fmt: str) -> bytes:
    """The first half of a valid encoded noise image."""
    buf = io.BytesIO()
    Image.fromarray(noise(64, 64, 3)).save(buf, format=fmt)
    return buf.getvalue()[: len(buf.getvalue()) // 2]


@pytest.mark.parametrize(
    ("name", "content", "problem"),
    [
        ("empty.jpg", b"", "empty file"),
        ("text.png", b"just some text, not an image\n", "not an image"),
        ("cut.jpg", truncated("JPEG"), "corrupt or truncated"),
        ("cut.png", truncated("PNG"), "corrupt or truncated"),
        ("bomb.png", png_claiming(40_000, 40_000), "too many pixels"),
        ("big.png", png_claiming(12_000, 10_000), "above the limit of 100 MP"),
    ],
)
def test_bad_files_raise_image_error_naming_the_file(tmp_path: Path, name: str, content: bytes, problem: str) -> None:
    (tmp_path / name).write_bytes(content)
    with pytest.raises(ImageError, match=problem) as info:
        read_image(tmp_path / name)
    assert str(info.value).startswith(f"{tmp_path / name}: ")


def test_pixel_limit_is_configurable(tmp_path: Path) -> None:
    write_image(tmp_path / "x.png", noise(100, 100, 3))
    assert read_image(tmp_path / "x.png", max_pixels=10_000).pixels.shape == (100, 100, 3)
    with pytest.raises(ImageError, match="above the limit"):
        read_image(tmp_path / "x.png", max_pixels=9_999)


def test_missing_path_folder_and_float_tiff_are_image_errors(tmp_path: Path) -> None:
    with pytest.raises(ImageError, match="cannot read"):
        read_image(tmp_path / "absent.png")
    with pytest.raises(ImageError, match="not a file"):
        read_image(tmp_path)
    Image.fromarray(np.zeros((4, 4), dtype=np.float32), "F").save(tmp_path / "f.tif")
    with pytest.raises(ImageError, match="32-bit"):
        read_image(tmp_path / "f.tif")


def test_failed_write_leaves_neither_output_nor_temp_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def full_disk(self: Image.Image, fp: Path, *args: object, **kwargs: object) -> None:
        Path(fp).write_bytes(b"partial")
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(Image.Image, "save", full_disk)
    with pytest.raises(OSError, match="No space"):
        write_image(tmp_path / "out.png", noise(4, 4, 3))
    assert list(tmp_path.iterdir()) == []
