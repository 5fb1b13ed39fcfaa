"""Property-based tests (Hypothesis): any size, dtype, layout and tiling keeps the image's shape and range.

Images are 1..80 pixels a side; the network is the random ``tiny`` preset, either as built (its heads start
as the identity, so the output must equal the input exactly) or with its heads scrambled (so the output leaves
[0, 1] before clipping). Damaged files may only ever raise :class:`ImageError`.
"""

from __future__ import annotations

import io
import warnings

import imagecodecs
import numpy as np
import pytest
import tifffile
import torch
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from PIL import Image

import smartassign
from smartassign.errors import ConfigError, ImageError
from smartassign.io import read_image, write_image
from smartassign.restore import Restorer, blend_weights, tile_starts

SETTINGS = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
DTYPES = (np.uint8, np.uint16, np.float32)
LAYOUTS = ((), (1,), (2,), (3,), (4,))  # gray (H, W), then (H, W, C)


pytestmark = pytest.mark.usefixtures("one_thread")


def _tiny(scrambled: bool) -> smartassign.SmartAssignNet:
    torch.manual_seed(0)
    net = smartassign.build_model("tiny")
    if scrambled:  # large residuals: restored values overshoot [0, 1] by far before the clamp
        for head in net.heads.values():
            torch.nn.init.normal_(head.body[-1].weight, std=2.0)
            torch.nn.init.normal_(head.body[-1].bias, std=1.0)
    return net.eval()


IDENTITY, SCRAMBLED = _tiny(False), _tiny(True)


@st.composite
def images(draw: st.DrawFn, max_side: int = 80) -> np.ndarray:
    """An ``(H, W)`` or ``(H, W, C)`` image of uint8, uint16 or float32 pixels (floats also outside [0, 1])."""
    h, w = draw(st.integers(1, max_side)), draw(st.integers(1, max_side))
    dtype = draw(st.sampled_from(DTYPES))
    shape = (h, w, *draw(st.sampled_from(LAYOUTS)))
    if dtype == np.float32:
        elements = st.floats(-0.5, 1.5, width=32)
        return draw(hnp.arrays(dtype, shape, elements=elements))
    info = np.iinfo(dtype)
    return draw(hnp.arrays(dtype, shape, elements=st.integers(0, info.max)))


@st.composite
def tilings(draw: st.DrawFn) -> tuple[int, int]:
    """``(tile, overlap)`` with tile 0 (the whole image) or 1..96 and any overlap a valid tile allows."""
    tile = draw(st.sampled_from([0, 1, 2, 3, 4, 5, 7, 8, 16]) | st.integers(1, 96))
    overlap = draw(st.integers(0, max(0, (tile - 1) // 2)))
    return tile, overlap


def _few_tiles(image: np.ndarray, tile: int, overlap: int) -> np.ndarray:
    """Crop ``image`` to at most 5 x 5 tiles, so tiny tiles do not run hundreds of forward passes."""
    if not tile:
        return image
    limit = tile + 4 * (tile - overlap)
    return image[:limit, :limit]


@SETTINGS
@given(image=images(), tiling=tilings(), task=st.sampled_from(["auto", "rain", "snow"]))
@example(image=np.array([[[-0.5, 1.5]]], dtype=np.float32), tiling=(0, 0), task="auto")  # float alpha
def test_output_keeps_size_channels_dtype_and_range(image: np.ndarray, tiling: tuple[int, int], task: str) -> None:
    image = _few_tiles(image, *tiling)
    result = Restorer(SCRAMBLED, device="cpu", tile=tiling[0], overlap=tiling[1]).restore(image, task)
    out = result.image
    assert out.shape == image.shape and out.dtype == image.dtype
    assert result.task in ("rain", "snow") and (task == "auto" or result.task == task)
    if out.dtype == np.float32:
        assert np.isfinite(out).all() and out.min() >= 0 and out.max() <= 1
    if image.ndim == 3 and image.shape[2] in (2, 4):  # alpha passes through (float alpha clipped like colour)
        alpha = np.clip(image[..., -1], 0, 1) if image.dtype == np.float32 else image[..., -1]
        np.testing.assert_array_equal(out[..., -1], alpha)


@SETTINGS
@given(image=images(), tiling=tilings())
def test_identity_network_returns_the_input_whatever_the_tiling(image: np.ndarray, tiling: tuple[int, int]) -> None:
    # Blending weights sum to one and gray goes through three equal channels and back: any seam, shift,
    # rounding or wrap-around error in tiling, scaling or layout handling shows up as a difference here.
    image = _few_tiles(image, *tiling)
    out = Restorer(IDENTITY, device="cpu", tile=tiling[0], overlap=tiling[1]).restore(image, "rain").image
    if image.dtype == np.float32:
        np.testing.assert_allclose(out, np.clip(image, 0, 1), atol=2e-6)
    else:
        np.testing.assert_array_equal(out, image)


@SETTINGS
@given(tile=st.integers(0, 40), overlap=st.integers(-4, 40))
def test_tile_and_overlap_are_either_accepted_or_a_config_error(tile: int, overlap: int) -> None:
    valid = overlap >= 0 and (tile == 0 or tile > 2 * overlap)
    if valid:
        restorer = Restorer(IDENTITY, device="cpu", tile=tile, overlap=overlap)
        assert restorer.restore(np.zeros((9, 13, 3), np.uint8), "snow").image.shape == (9, 13, 3)
    else:
        with pytest.raises(ConfigError, match="twice the overlap"):
            Restorer(IDENTITY, device="cpu", tile=tile, overlap=overlap)


@settings(max_examples=200, deadline=None)
@given(length=st.integers(1, 2000), tiling=tilings())
def test_tiles_cover_every_pixel_with_weights_summing_to_one(length: int, tiling: tuple[int, int]) -> None:
    tile, overlap = tiling
    tile = tile or length
    starts = tile_starts(length, tile, overlap)
    size = min(tile, length)
    total = np.zeros(length)
    for start in starts:
        weights = blend_weights(start, size, length, overlap)
        assert (weights > 0).all() and (weights <= 1).all()
        total[start : start + size] += weights
    assert starts == sorted(set(starts)) and starts[0] == 0 and starts[-1] + size == length
    assert all(b - a <= tile - overlap for a, b in zip(starts, starts[1:], strict=False))
    # Evenly spaced tiles blend to exactly 1; the last tile, flush with the end, may overlap more (sum >= 1).
    np.testing.assert_allclose(total[: starts[-1]], 1, atol=1e-6)
    assert (total >= 1 - 1e-6).all()


@SETTINGS
@given(
    image=images(max_side=12),
    where=st.tuples(st.integers(0, 11), st.integers(0, 11), st.integers(0, 3)),
    value=st.sampled_from([np.nan, np.inf, -np.inf]),
)
def test_non_finite_floats_are_always_an_image_error(image: np.ndarray, where: tuple[int, ...], value: float) -> None:
    image = image.astype(np.float32)
    index = tuple(min(i, n - 1) for i, n in zip(where, image.shape, strict=False))
    image[index] = value
    with pytest.raises(ImageError, match="NaN or infinite"):
        Restorer(IDENTITY, device="cpu").restore(image)


# --- files ------------------------------------------------------------------------------------------------------


def _seed_files() -> dict[str, bytes]:
    """One small valid file per decoder path: Pillow formats, 16-bit colour PNG (imagecodecs), TIFF (tifffile)."""
    rng = np.random.default_rng(0)
    rgb = Image.fromarray(rng.integers(0, 256, (12, 16, 3), dtype=np.uint8))
    files = {}
    for name, image, fmt in [
        ("png", rgb, "PNG"), ("jpg", rgb, "JPEG"), ("webp", rgb, "WEBP"), ("gif", rgb.quantize(8), "GIF"),
        ("bmp", rgb, "BMP"), ("cmyk.jpg", rgb.convert("CMYK"), "JPEG"), ("la.png", rgb.convert("LA"), "PNG"),
    ]:  # fmt: skip
        buf = io.BytesIO()
        image.save(buf, format=fmt)
        files[name] = buf.getvalue()
    files["16.png"] = imagecodecs.png_encode(rng.integers(0, 65536, (12, 16, 3), dtype=np.uint16))
    buf = io.BytesIO()
    tifffile.imwrite(buf, rng.integers(0, 65536, (12, 16, 4), dtype=np.uint16), photometric="rgb",
                     extrasamples=["unassalpha"])  # fmt: skip
    files["16.tif"] = buf.getvalue()
    buf = io.BytesIO()  # 16-bit gray + alpha: Pillow cannot open it, tifffile reads it
    tifffile.imwrite(buf, rng.integers(0, 65536, (12, 16, 2), dtype=np.uint16), photometric="minisblack",
                     extrasamples=["unassalpha"])  # fmt: skip
    files["la16.tif"] = buf.getvalue()
    return files


SEEDS = _seed_files()


@st.composite
def damaged_files(draw: st.DrawFn) -> tuple[str, bytes]:
    """A seed file cut short, with bytes overwritten, or both."""
    name = draw(st.sampled_from(sorted(SEEDS)))
    data = bytearray(SEEDS[name])
    for _ in range(draw(st.integers(0, 6))):
        data[draw(st.integers(0, len(data) - 1))] = draw(st.integers(0, 255))
    if draw(st.booleans()):
        data = data[: draw(st.integers(0, len(data)))]
    return name, bytes(data)


@settings(max_examples=300, deadline=None)
@given(file=damaged_files())
def test_damaged_files_decode_to_a_valid_layout_or_raise_image_error(
    tmp_path_factory: pytest.TempPathFactory, file: tuple[str, bytes]
) -> None:
    name, data = file
    path = tmp_path_factory.getbasetemp() / f"damaged.{name}"
    path.write_bytes(data)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # decoders warn about what they repaired
            pixels = read_image(path).pixels
    except ImageError as exc:
        assert str(exc).startswith(f"{path}: ") and "\n" not in str(exc)
        return
    assert pixels.ndim == 3 and pixels.shape[2] in (1, 2, 3, 4) and pixels.dtype in (np.uint8, np.uint16)
    assert min(pixels.shape[:2]) >= 1


@SETTINGS
@given(image=images(), suffix=st.sampled_from([".png", ".tif"]))
def test_lossless_files_round_trip_any_size_and_layout(
    tmp_path_factory: pytest.TempPathFactory, image: np.ndarray, suffix: str
) -> None:
    if image.dtype == np.float32:
        image = (np.clip(image, 0, 1) * 255).astype(np.uint8)
    if image.ndim == 2:
        image = image[..., None]
    path = tmp_path_factory.getbasetemp() / f"round{suffix}"
    write_image(path, image)
    back = read_image(path).pixels
    assert back.dtype == image.dtype
    np.testing.assert_array_equal(back, image)
