"""Restorer (tiling, layouts, detection, loading) and ``smartassign restore`` on a random tiny network."""

from __future__ import annotations

import errno
import itertools
import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import smartassign
from smartassign import build_model, model_config
from smartassign.checkpoint import save_weights
from smartassign.cli import main
from smartassign.config import TASKS
from smartassign.errors import ConfigError, ImageError, WeightsError
from smartassign.io import read_image, write_image
from smartassign.restore import Restorer, blend_weights, resolve_device, tile_starts

RNG = np.random.default_rng(0)


def random_net(seed: int = 0, **overrides: object) -> smartassign.SmartAssignNet:
    """A tiny network whose heads visibly change the image (the heads start as the identity)."""
    torch.manual_seed(seed)
    net = build_model(model_config("tiny", **overrides))
    for head in net.heads.values():
        torch.nn.init.normal_(head.body[-1].weight, std=0.3)
    return net.eval()


@pytest.fixture(scope="module")
def net() -> smartassign.SmartAssignNet:
    """The shared random tiny network."""
    return random_net()


@pytest.fixture(scope="module")
def restorer(net: smartassign.SmartAssignNet) -> Restorer:
    """Small tiles, so that even test images are split."""
    return Restorer(net, device="cpu", tile=32, overlap=8)


@pytest.fixture(scope="module")
def weights(tmp_path_factory: pytest.TempPathFactory, net: smartassign.SmartAssignNet) -> Path:
    """The network saved as safetensors + JSON sidecar."""
    path = tmp_path_factory.mktemp("weights") / "tiny.safetensors"
    save_weights(net, path)
    return path


# --- tiling -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("length", "tile", "overlap"), [(1, 32, 8), (32, 32, 8), (33, 32, 8), (100, 32, 8), (97, 40, 0)]
)
def test_tiles_cover_everything_with_the_overlap_and_positive_weights(length: int, tile: int, overlap: int) -> None:
    starts = tile_starts(length, tile, overlap)
    size = min(tile, length)
    covered = np.zeros(length)
    for s in starts:
        w = blend_weights(s, size, length, overlap)
        assert (w > 0).all()
        covered[s : s + size] += w
    assert starts[0] == 0 and starts[-1] + size == length
    assert all(b - a <= tile - overlap for a, b in itertools.pairwise(starts))
    assert (covered > 0).all()


def test_blending_is_exact_for_the_identity(restorer: Restorer) -> None:
    identity = random_net()
    for head in identity.heads.values():
        torch.nn.init.zeros_(head.body[-1].weight)
    image = RNG.integers(0, 256, (70, 90, 3), dtype=np.uint8)
    out = Restorer(identity, device="cpu", tile=32, overlap=8).restore(image, "rain").image
    np.testing.assert_array_equal(out, image)


def test_tiled_output_matches_untiled_output(net: smartassign.SmartAssignNet) -> None:
    # The network has global pooling (channel gates, channel attention), so tiles see slightly different
    # statistics than the whole image: we allow 2e-3 (half a uint8 step) per pixel, while seams without
    # blending are ~100x larger, and the network's own change to the image is ~50x larger.
    image = (RNG.random((96, 136, 3), dtype=np.float32) * 0.6 + 0.2).astype(np.float32)
    whole = Restorer(net, device="cpu", tile=None).restore(image, "rain").image
    tiled = Restorer(net, device="cpu", tile=64, overlap=16).restore(image, "rain").image
    seamed = Restorer(net, device="cpu", tile=64, overlap=0).restore(image, "rain").image
    assert np.abs(whole - image).mean() > 0.02
    assert np.abs(tiled - whole).max() < 2e-3
    assert np.abs(seamed - whole).max() > 20 * np.abs(tiled - whole).max()


def test_tile_must_exceed_twice_the_overlap(net: smartassign.SmartAssignNet) -> None:
    with pytest.raises(ConfigError, match="twice the overlap"):
        Restorer(net, device="cpu", tile=32, overlap=16)


# --- layouts --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("shape", "dtype"),
    [
        ((40, 50), np.uint8),
        ((40, 50, 1), np.uint8),
        ((40, 50, 2), np.uint8),
        ((40, 50, 3), np.uint8),
        ((40, 50, 4), np.uint8),
        ((40, 50, 3), np.uint16),
        ((40, 50), np.uint16),
        ((40, 50, 4), np.uint16),
        ((40, 50, 3), np.float32),
        ((40, 50, 4), np.float64),
        ((1, 1, 3), np.uint8),
        ((3, 200, 3), np.uint8),
    ],
)
def test_numpy_output_keeps_shape_dtype_and_alpha(restorer: Restorer, shape: tuple[int, ...], dtype: type) -> None:
    if np.issubdtype(dtype, np.integer):
        image = RNG.integers(0, np.iinfo(dtype).max + 1, shape, dtype=dtype)
    else:
        image = RNG.random(shape).astype(dtype)
    out = restorer.restore(image).image
    assert isinstance(out, np.ndarray) and out.shape == image.shape and out.dtype == image.dtype
    if len(shape) == 3 and shape[2] in (2, 4):
        np.testing.assert_array_equal(out[..., -1], image[..., -1])
    if np.issubdtype(dtype, np.floating):
        assert 0 <= out.min() and out.max() <= 1
    if shape[:2] != (1, 1):
        assert not np.array_equal(out, image)


def test_gray_is_restored_as_luma_of_three_equal_channels(restorer: Restorer) -> None:
    gray = RNG.integers(0, 256, (30, 40), dtype=np.uint8)
    rgb = restorer.restore(np.repeat(gray[..., None], 3, axis=2), "snow").image.astype(np.float32)
    luma = rgb @ np.array([0.299, 0.587, 0.114], dtype=np.float32)
    assert np.abs(restorer.restore(gray, "snow").image - luma).max() <= 1


@pytest.mark.parametrize(
    ("mode", "out_mode"), [("RGB", "RGB"), ("RGBA", "RGBA"), ("L", "L"), ("LA", "LA"), ("P", "RGB")]
)
def test_pil_in_pil_out(restorer: Restorer, mode: str, out_mode: str) -> None:
    image = Image.fromarray(RNG.integers(0, 256, (24, 36, 3), dtype=np.uint8)).convert(mode)
    out = restorer.restore(image).image
    assert isinstance(out, Image.Image) and out.mode == out_mode and out.size == image.size


def test_pil_16_bit_gray_stays_16_bit(restorer: Restorer) -> None:
    image = Image.fromarray(RNG.integers(0, 65536, (24, 36), dtype=np.uint16))
    out = restorer.restore(image).image
    assert out.mode == "I;16" and np.asarray(out).max() > 255


@pytest.mark.parametrize(
    ("image", "problem"),
    [
        (np.full((8, 8, 3), np.nan, dtype=np.float32), "NaN"),
        (np.zeros((8, 8, 3), dtype=np.int32), "dtype int32"),
        (np.zeros((8, 8, 5), dtype=np.uint8), "shape"),
        (np.zeros((0, 8, 3), dtype=np.uint8), "zero size"),
    ],
)
def test_bad_arrays_raise_image_error(restorer: Restorer, image: np.ndarray, problem: str) -> None:
    with pytest.raises(ImageError, match=problem):
        restorer.restore(image)


def test_float_values_outside_range_are_clipped(restorer: Restorer) -> None:
    image = RNG.random((16, 16, 3)).astype(np.float32) * 3 - 1
    out = restorer.restore(image, "rain").image
    np.testing.assert_allclose(out, restorer.restore(np.clip(image, 0, 1), "rain").image)


# --- tasks and detection ------------------------------------------------------------------------------------


def test_detect_reports_the_recognition_heads_probability(net: smartassign.SmartAssignNet) -> None:
    image = RNG.random((40, 60, 3)).astype(np.float32)
    with torch.no_grad():
        probs = net(torch.from_numpy(image).permute(2, 0, 1)[None]).logits.softmax(-1)[0]
    task, confidence = Restorer(net, device="cpu").detect(image)
    assert task == TASKS[int(probs.argmax())]
    assert confidence == pytest.approx(float(probs.max()), abs=1e-5)


@pytest.mark.usefixtures("one_thread")
@pytest.mark.parametrize(
    ("shape", "factor"), [((10, 2000, 3), (10, 32)), ((1500, 3, 3), (24, 3)), ((700, 900, 4), (15, 15))]
)
def test_detect_downscales_any_shape(
    net: smartassign.SmartAssignNet, shape: tuple[int, ...], factor: tuple[int, int]
) -> None:
    """A large image made of ``factor``-sized blocks of a small one is detected exactly as the small one is.

    Detection box-filters an image whose longest side exceeds ``detect_size`` by ``k = ceil(side / 64)`` (at
    most the image's own height or width), dropping the rows and columns left over. Each block averages to its
    own value, so the network must see the small image itself and give its native-scale decision.
    """
    restorer = Restorer(net, device="cpu", detect_size=64)
    seen: list[torch.Tensor] = []
    forward = restorer._forward
    restorer._forward = lambda x: forward(seen.append(x.clone()) or x)  # type: ignore[method-assign]
    (h, w), (ky, kx) = shape[:2], factor
    small = RNG.integers(0, 256, (h // ky, w // kx, 3), dtype=np.uint8)
    native = restorer.detect(small)
    image = RNG.integers(0, 256, shape, dtype=np.uint8)  # noise in the left-over rows and columns, and in alpha
    image[: h // ky * ky, : w // kx * kx, :3] = small.repeat(ky, axis=0).repeat(kx, axis=1)
    assert restorer.detect(image) == native
    assert len(seen) == 2 and seen[1].shape == (1, 3, h // ky, w // kx) and torch.equal(seen[1], seen[0])


def test_auto_task_is_detected_and_explicit_task_has_no_confidence(restorer: Restorer) -> None:
    image = RNG.integers(0, 256, (20, 20, 3), dtype=np.uint8)
    auto = restorer.restore(image)
    assert (auto.task, auto.confidence) == pytest.approx(restorer.detect(image))
    given = restorer.restore(image, "snow")
    assert given.task == "snow" and given.confidence is None and given.seconds > 0


def test_single_task_model() -> None:
    restorer = Restorer(random_net(tasks=("snow",)), device="cpu")
    image = RNG.integers(0, 256, (16, 16, 3), dtype=np.uint8)
    assert restorer.detect(image) == ("snow", 1.0)
    with pytest.raises(ConfigError, match="not one of this model's tasks"):
        restorer.restore(image, "rain")


def test_model_without_recognition_needs_a_task() -> None:
    restorer = Restorer(random_net(recognition=False), device="cpu")
    with pytest.raises(ConfigError, match="no recognition head"):
        restorer.restore(np.zeros((8, 8, 3), dtype=np.uint8))
    assert restorer.restore(np.zeros((8, 8, 3), dtype=np.uint8), "rain").task == "rain"


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the error raised when no GPU is present")
def test_cuda_without_gpu_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="no GPU"):
        resolve_device("cuda")


# --- loading ----------------------------------------------------------------------------------------------------


def test_load_from_a_saved_file(weights: Path, net: smartassign.SmartAssignNet) -> None:
    model = smartassign.load(weights, device="cpu", tile=32, overlap=8)
    assert model.tasks == ("rain", "snow")
    image = RNG.integers(0, 256, (20, 30, 3), dtype=np.uint8)
    ref = Restorer(net, device="cpu", tile=32, overlap=8).restore(image, "rain").image
    np.testing.assert_array_equal(model.restore(image, "rain").image, ref)
    assert smartassign.load(str(weights), device="cpu").tasks == ("rain", "snow")


def test_unknown_bundled_name_and_missing_file_are_weights_errors(tmp_path: Path) -> None:
    with pytest.raises(WeightsError, match="no bundled weights named 'nonexistent'"):
        smartassign.load("nonexistent")
    with pytest.raises(WeightsError, match="absent"):
        smartassign.load(tmp_path / "absent.safetensors")


# --- command line ---------------------------------------------------------------------------------------------


def good_image(path: Path, shape: tuple[int, ...] = (24, 32, 3), dtype: type = np.uint8) -> np.ndarray:
    """Write a noise image to ``path`` and return its pixels."""
    pixels = RNG.integers(0, np.iinfo(dtype).max + 1, shape, dtype=dtype)
    write_image(path, pixels)
    return pixels


def restore_cli(weights: Path, *args: str | Path) -> int:
    """``smartassign restore ... --weights WEIGHTS --device cpu`` with small tiles."""
    options = ["--weights", str(weights), "--device", "cpu", "--tile", "32", "--overlap", "8"]
    return main(["restore", *map(str, args), *options])


def test_mixed_folder_restores_good_lists_bad_and_exits_1(
    tmp_path: Path, weights: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    src, out = tmp_path / "in", tmp_path / "out"
    src.mkdir()
    good_image(src / "a.jpg")
    good_image(src / "b.png", (20, 30, 4))
    good_image(src / "c.png", (20, 30, 1), np.uint16)
    (src / "empty.jpg").write_bytes(b"")
    (src / "text.png").write_text("not an image")
    (src / "cut.png").write_bytes((src / "b.png").read_bytes()[:80])
    (src / "notes.txt").write_text("ignored: not an image suffix")
    assert restore_cli(weights, src, "-o", out, "--report", tmp_path / "report.json") == 1
    err = capsys.readouterr().err
    for bad in ("empty.jpg", "text.png", "cut.png"):
        assert sum(f"{src / bad}: " in line for line in err.splitlines()) >= 1
    assert "notes.txt" not in err
    assert sorted(p.name for p in out.iterdir()) == ["a.jpg", "b.png", "c.png"]
    assert read_image(out / "b.png").pixels.shape == (20, 30, 4)
    c = read_image(out / "c.png").pixels
    assert c.shape == (20, 30, 1) and c.dtype == np.uint16
    report = json.loads((tmp_path / "report.json").read_text())
    assert (report["restored"], report["failed"]) == (3, 3)
    statuses = {Path(r["input"]).name: r["status"] for r in report["images"]}
    assert statuses["a.jpg"] == "restored" and statuses["text.png"] == "failed"
    assert all(r["task"] in TASKS for r in report["images"] if r["status"] == "restored")


def test_all_good_exits_0_and_prints_task_and_confidence(
    tmp_path: Path, weights: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    good_image(tmp_path / "a.png")
    assert restore_cli(weights, tmp_path / "a.png", "-o", tmp_path / "out") == 0
    assert re.search(r"a\.png  (rain|snow) \(\d+%\)", capsys.readouterr().out)


def test_never_overwrites_an_input(tmp_path: Path, weights: Path, capsys: pytest.CaptureFixture[str]) -> None:
    good_image(tmp_path / "a.png")
    before = (tmp_path / "a.png").read_bytes()
    for extra in ([], ["--overwrite"]):
        assert restore_cli(weights, tmp_path / "a.png", "-o", tmp_path, *extra) == 1
        assert "refusing to write" in capsys.readouterr().err
        assert (tmp_path / "a.png").read_bytes() == before
    assert restore_cli(weights, tmp_path / "a.png", "-o", tmp_path, "--suffix", "_clean") == 0
    assert (tmp_path / "a_clean.png").is_file() and (tmp_path / "a.png").read_bytes() == before


def test_existing_outputs_are_skipped_unless_overwrite(tmp_path: Path, weights: Path) -> None:
    good_image(tmp_path / "a.png")
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "a.png").write_bytes(b"old")
    assert restore_cli(weights, tmp_path / "a.png", "-o", tmp_path / "out") == 0
    assert (tmp_path / "out" / "a.png").read_bytes() == b"old"
    assert restore_cli(weights, tmp_path / "a.png", "-o", tmp_path / "out", "--overwrite") == 0
    assert read_image(tmp_path / "out" / "a.png").pixels.shape == (24, 32, 3)


def test_failed_write_leaves_no_partial_or_temp_file(
    tmp_path: Path, weights: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    good_image(tmp_path / "a.png")

    def full_disk(self: Image.Image, fp: Path, *args: object, **kwargs: object) -> None:
        Path(fp).write_bytes(b"partial")
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(Image.Image, "save", full_disk)
    assert restore_cli(weights, tmp_path / "a.png", "-o", tmp_path / "out") == 1
    assert list((tmp_path / "out").iterdir()) == []


def test_exif_orientation_side_by_side_and_format(tmp_path: Path, weights: Path) -> None:
    exif = Image.Exif()
    exif[0x0112] = 6  # stored landscape, displayed portrait
    Image.fromarray(RNG.integers(0, 256, (20, 36, 3), dtype=np.uint8)).save(tmp_path / "p.jpg", exif=exif.tobytes())
    assert restore_cli(weights, tmp_path / "p.jpg", "-o", tmp_path / "out", "--side-by-side", "--format", "png") == 0
    assert read_image(tmp_path / "out" / "p.png").pixels.shape == (36, 20, 3)
    assert read_image(tmp_path / "out" / "p_compare.png").pixels.shape == (36, 40, 3)


def test_recursive_folders_keep_structure_and_skip_the_output_inside(tmp_path: Path, weights: Path) -> None:
    good_image(tmp_path / "a.png")
    (tmp_path / "sub").mkdir()
    good_image(tmp_path / "sub" / "b.webp")
    assert restore_cli(weights, tmp_path, "-o", tmp_path / "restored", "--recursive") == 0
    assert (tmp_path / "restored" / "a.png").is_file() and (tmp_path / "restored" / "sub" / "b.webp").is_file()
    assert restore_cli(weights, tmp_path, "-o", tmp_path / "restored", "--recursive") == 0
    assert not (tmp_path / "restored" / "restored").exists()


def test_globs_and_missing_inputs(tmp_path: Path, weights: Path, capsys: pytest.CaptureFixture[str]) -> None:
    good_image(tmp_path / "a.png")
    good_image(tmp_path / "b.png")
    assert restore_cli(weights, tmp_path / "*.png", tmp_path / "nope.jpg", "-o", tmp_path / "out") == 1
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["a.png", "b.png"]
    assert f"{tmp_path / 'nope.jpg'}: no such file" in capsys.readouterr().err


def test_usage_errors_exit_2(tmp_path: Path, weights: Path, capsys: pytest.CaptureFixture[str]) -> None:
    good_image(tmp_path / "a.png")
    (tmp_path / "bad.safetensors").write_bytes(b"garbage")
    (tmp_path / "bad.json").write_text(json.dumps({"model": {}}))
    assert restore_cli(tmp_path / "bad.safetensors", tmp_path / "a.png", "-o", tmp_path / "out") == 2
    assert "bad.safetensors" in capsys.readouterr().err
    (tmp_path / "empty").mkdir()
    assert restore_cli(weights, tmp_path / "empty", "-o", tmp_path / "out") == 2
    assert "no images found" in capsys.readouterr().err
