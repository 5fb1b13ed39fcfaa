"""Restorer (one pass per tile, TLC, tiling, layouts, loading) and ``smartassign restore``.

Mostly on a random tiny network; the checks that only trained weights can make (tiling no longer changes the
result, recognition on large photos) use the bundled ``small`` weights on held-out photos.
"""

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
from smartassign.data import heldout_photo, weathered
from smartassign.errors import ConfigError, ImageError, WeightsError
from smartassign.io import read_image, write_image
from smartassign.layers import ChannelAttention, ChannelGate
from smartassign.metrics import score, to_uint8
from smartassign.restore import TLC_WINDOW, Restorer, blend_weights, resolve_device, tile_size, tile_starts

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


@pytest.mark.parametrize(
    ("length", "tile", "overlap", "size"),
    [(1024, 512, 32, 368), (512, 512, 32, 512), (513, 512, 32, 280), (300, 512, 32, 300), (6000, 512, 32, 496)],
)
def test_tile_size_takes_the_fewest_tiles_then_shrinks_them(length: int, tile: int, overlap: int, size: int) -> None:
    """``n = ceil((L - o) / (t - o))`` tiles, then the smallest multiple of 8 that n of them cover L with."""
    assert tile_size(length, tile, overlap) == size
    n = len(tile_starts(length, size, overlap))
    assert n == max(1, -(-(length - overlap) // (tile - overlap)))
    assert n * size - (n - 1) * overlap < length + 8 * n  # pixels processed stay close to the image's


def test_blending_is_exact_for_the_identity(restorer: Restorer) -> None:
    identity = random_net()
    for head in identity.heads.values():
        torch.nn.init.zeros_(head.body[-1].weight)
    image = RNG.integers(0, 256, (70, 90, 3), dtype=np.uint8)
    out = Restorer(identity, device="cpu", tile=32, overlap=8).restore(image, "rain").image
    np.testing.assert_array_equal(out, image)


def test_tiled_output_matches_untiled_output(net: smartassign.SmartAssignNet) -> None:
    # Tiles see less context than the whole image (the convolutions' reach past the overlap), so they differ a
    # little: here by about a tenth of a uint8 step on average and two steps at most, while seams without
    # blending are 10x larger, and the network's own change to the image is ~100x larger than the mean difference.
    image = (RNG.random((96, 136, 3), dtype=np.float32) * 0.6 + 0.2).astype(np.float32)
    whole = Restorer(net, device="cpu", tile=None).restore(image, "rain").image
    tiled = Restorer(net, device="cpu", tile=64, overlap=16).restore(image, "rain").image
    seamed = Restorer(net, device="cpu", tile=64, overlap=0).restore(image, "rain").image
    assert np.abs(whole - image).mean() > 0.02
    assert np.abs(tiled - whole).mean() < 1e-3 and np.abs(tiled - whole).max() < 1e-2
    assert np.abs(seamed - whole).max() > 10 * np.abs(tiled - whole).max()


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
def test_detection_is_the_mean_probability_over_tiles_weighted_by_their_pixels(
    net: smartassign.SmartAssignNet,
) -> None:
    """Each tile's recognition probabilities count by the pixels it contributes (its blend weights)."""
    restorer = Restorer(net, device="cpu", tile=32, overlap=8)
    image = RNG.random((50, 70, 3)).astype(np.float32)
    h, w = image.shape[:2]
    expected = np.zeros(2)
    for rows, cols, wy, wx in restorer._tiles(h, w):
        share = float((wy[:, None] * wx[None, :]).sum())  # the pixels the tile contributes
        tile = torch.from_numpy(image[rows, cols]).permute(2, 0, 1)[None]
        with torch.no_grad():
            expected += share * net(tile, tasks=("recognition",)).logits.softmax(-1)[0].numpy()
    expected /= h * w
    task, confidence = restorer.detect(image)
    assert task == TASKS[int(expected.argmax())] and confidence == pytest.approx(float(expected.max()), abs=1e-5)


@pytest.mark.parametrize("shape", [(10, 700, 3), (500, 3, 3), (300, 200, 4)])
def test_detect_any_shape(net: smartassign.SmartAssignNet, shape: tuple[int, ...]) -> None:
    task, confidence = Restorer(net, device="cpu", tile=128).detect(RNG.integers(0, 256, shape, dtype=np.uint8))
    assert task in TASKS and 0.5 <= confidence <= 1


def test_auto_task_is_detected_and_explicit_task_has_no_confidence(restorer: Restorer) -> None:
    image = RNG.integers(0, 256, (20, 20, 3), dtype=np.uint8)
    auto = restorer.restore(image)
    assert (auto.task, auto.confidence) == pytest.approx(restorer.detect(image))
    given = restorer.restore(image, "snow")
    assert given.task == "snow" and given.confidence is None and given.seconds > 0


def test_one_pass_drops_the_losing_head_once_the_tiles_left_cannot_change_the_decision(
    net: smartassign.SmartAssignNet, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every tile is recognised; both heads run until the decision is certain, then only the chosen one, and the
    result is the chosen task's restoration with the confidence :meth:`Restorer.detect` reports."""
    restorer = Restorer(net, device="cpu", tile=32, overlap=8)
    image = RNG.integers(0, 256, (120, 120, 3), dtype=np.uint8)  # 25 tiles
    calls: list[tuple[str, ...]] = []
    forward = net.forward

    def spy(x: torch.Tensor, tasks: tuple[str, ...] | None = None) -> smartassign.Output:
        calls.append(tuple(tasks or ()))
        return forward(x, tasks)

    monkeypatch.setattr(net, "forward", spy)
    auto = restorer.restore(image)
    tiles = len(restorer._tiles(120, 120))
    assert len(calls) == tiles and all("recognition" in c for c in calls)
    assert calls[0] == ("rain", "snow", "recognition") and calls[-1] == (auto.task, "recognition")
    calls.clear()
    given = restorer.restore(image, auto.task)
    assert calls == [(auto.task,)] * tiles  # a chosen task: one head, no recognition
    np.testing.assert_array_equal(auto.image, given.image)
    assert (auto.task, auto.confidence) == pytest.approx(restorer.detect(image))


def test_restore_each_gives_every_heads_picture_and_the_recognised_task_in_one_pass(
    net: smartassign.SmartAssignNet, monkeypatch: pytest.MonkeyPatch
) -> None:
    restorer = Restorer(net, device="cpu", tile=32, overlap=8)
    image = RNG.integers(0, 256, (70, 90, 3), dtype=np.uint8)
    calls: list[tuple[str, ...]] = []
    forward = net.forward
    monkeypatch.setattr(net, "forward", lambda x, tasks=None: calls.append(tuple(tasks or ())) or forward(x, tasks))
    each, task, confidence = restorer.restore_each(image)
    assert calls == [("rain", "snow", "recognition")] * len(restorer._tiles(70, 90))  # nothing dropped
    auto = restorer.restore(image)
    assert (task, confidence) == pytest.approx((auto.task, auto.confidence))
    for t in ("rain", "snow"):
        np.testing.assert_array_equal(to_uint8(each[t]), restorer.restore(image, t).image)


def test_forward_computes_only_the_outputs_asked_for(net: smartassign.SmartAssignNet) -> None:
    x = torch.rand(1, 3, 20, 28)
    with torch.no_grad():
        full = net(x)
        rain = net(x, tasks=("rain",))
        recognition = net(x, tasks=("recognition",))
    assert rain.desnow is None and rain.logits is None and set(rain.atoms) == {"rk", "ck"} and not rain.embeddings
    torch.testing.assert_close(rain.derain, full.derain)
    assert recognition.derain is None and recognition.desnow is None and set(recognition.atoms) == {"rk", "sk"}
    torch.testing.assert_close(recognition.logits, full.logits)
    assert full.embeddings and set(full.atoms) == {"rk", "ck", "sk"}
    with pytest.raises(ValueError, match="not"):
        net(x, tasks=("haze",))


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


# --- test-time local statistics (TLC) ---------------------------------------------------------------------------


def test_tlc_windows_follow_the_scale_of_each_module() -> None:
    net = random_net()
    restorer = Restorer(net, device="cpu", tlc=64)
    modules = [m for m in net.modules() if isinstance(m, ChannelGate | ChannelAttention)]
    assert {m.local_window for m in modules} == {64, 32, 16}  # tiny has three levels: 1, 1/2, 1/4
    assert all(m.local_window == 64 for m in net.gkfm.modules() if isinstance(m, ChannelGate))  # F_wk: full scale
    restorer.tlc = None
    assert all(m.local_window is None for m in modules)
    with pytest.raises(ConfigError, match="TLC window"):
        restorer.tlc = 0


def test_tlc_pools_locally_at_inference_only_and_globally_within_one_window() -> None:
    net = random_net()
    x = torch.rand(1, 3, 96, 136)
    with torch.no_grad():
        plain = net(x).derain
        Restorer(net, device="cpu", tlc=32)
        local = net(x).derain
        training = net.train()(x).derain
        Restorer(net, device="cpu", tlc=136)
        whole = net(x).derain
    assert (local - plain).abs().max() > 1e-5
    torch.testing.assert_close(training, plain, atol=1e-6, rtol=0)
    torch.testing.assert_close(whole, plain, atol=1e-6, rtol=0)


def test_tlc_window_is_the_training_crop_of_the_weights(tmp_path: Path, net: smartassign.SmartAssignNet) -> None:
    save_weights(net, tmp_path / "crop96.safetensors", meta={"experiment": {"data": {"crop": 96}}})
    save_weights(net, tmp_path / "plain.safetensors")
    assert Restorer.from_weights(tmp_path / "crop96.safetensors", device="cpu").tlc == 96
    assert Restorer.from_weights(tmp_path / "plain.safetensors", device="cpu").tlc == TLC_WINDOW
    assert Restorer.from_weights(tmp_path / "crop96.safetensors", device="cpu", tlc=None).tlc is None


# --- the bundled weights on held-out photos -----------------------------------------------------------------------


@pytest.fixture(scope="module")
def bundled() -> smartassign.SmartAssignNet:
    """The bundled ``small`` network."""
    return smartassign.load(device="cpu").model


def test_tiles_no_longer_change_the_result_with_the_bundled_weights(bundled: smartassign.SmartAssignNet) -> None:
    """Whole image against the default tiling (512 / 32: two tiles of 336 here) within half a uint8 level on
    average; with global pools the tiles differ by about 4x that (docs/PERFORMANCE.md)."""
    image = weathered(heldout_photo(3, 640, 320), "rain")
    whole = Restorer(bundled, device="cpu", tile=0).restore(image, "rain").image.astype(np.float32)
    tiled = Restorer(bundled, device="cpu").restore(image, "rain").image.astype(np.float32)
    assert np.abs(whole - image).mean() > 5  # the network really restores the photo
    assert np.abs(tiled - whole).mean() <= 0.5


def test_bf16_restores_the_bundled_weights_like_float32(bundled: smartassign.SmartAssignNet) -> None:
    """What ``--precision auto`` gives on a CPU with native bf16: the same picture to a fraction of a uint8 level."""
    image = weathered(heldout_photo(2, 192, 128), "snow")
    exact = Restorer(bundled, device="cpu", dtype=torch.float32).restore(image, "snow").image.astype(np.float32)
    fast = Restorer(bundled, device="cpu", dtype=torch.bfloat16).restore(image, "snow").image.astype(np.float32)
    assert np.abs(exact - image).mean() > 2  # the network changes the picture ...
    assert np.abs(fast - exact).mean() < 0.25 and np.abs(fast - exact).max() <= 8  # ... and bf16 hardly changes that


def test_precision_auto_is_bf16_only_where_it_is_fast(monkeypatch: pytest.MonkeyPatch) -> None:
    import smartassign.restore as restore

    cpu = torch.device("cpu")
    monkeypatch.setattr(restore, "native_bf16_flags", lambda: ["amx_bf16"])
    assert restore.precision_dtype("auto", cpu) == torch.bfloat16
    assert smartassign.load(device="cpu").dtype == torch.bfloat16  # load() follows auto ...
    assert smartassign.load(device="cpu", precision="float32").dtype == torch.float32  # ... unless told
    monkeypatch.setattr(restore, "native_bf16_flags", lambda: [])
    assert restore.precision_dtype("auto", cpu) == torch.float32
    assert restore.precision_dtype("auto", torch.device("cuda")) == torch.bfloat16
    assert restore.precision_dtype("bf16", cpu) == torch.bfloat16
    assert restore.precision_dtype("float32", torch.device("cuda")) == torch.float32
    assert smartassign.load(device="cpu").dtype == torch.float32
    with pytest.raises(ConfigError, match="unknown precision 'fp8'"):
        restore.precision_dtype("fp8", cpu)


# --- loading ----------------------------------------------------------------------------------------------------


def test_load_from_a_saved_file(weights: Path, net: smartassign.SmartAssignNet) -> None:
    model = smartassign.load(weights, device="cpu", precision="float32", tile=32, overlap=8)
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


def test_precision_option_picks_the_arithmetic(
    tmp_path: Path, weights: Path, net: smartassign.SmartAssignNet, capsys: pytest.CaptureFixture[str]
) -> None:
    pixels = good_image(tmp_path / "a.png")
    exact = Restorer(net, device="cpu", tile=32, overlap=8, dtype=torch.float32).restore(pixels, "rain").image
    for precision in ("float32", "bf16"):
        out = tmp_path / precision
        assert restore_cli(weights, tmp_path / "a.png", "-o", out, "--task", "rain", "--precision", precision) == 0
        got = read_image(out / "a.png").pixels.astype(np.int16)
        if precision == "float32":
            np.testing.assert_array_equal(got, exact)
        else:
            assert np.abs(got - exact).mean() < 1.5
    with pytest.raises(SystemExit) as stop:
        restore_cli(weights, tmp_path / "a.png", "-o", tmp_path / "x", "--precision", "fp8")
    assert stop.value.code == 2 and "--precision: invalid choice: 'fp8'" in capsys.readouterr().err


def test_reference_prints_each_images_psnr_gain_and_refuses_a_mismatched_one(
    tmp_path: Path, weights: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``--reference DIR``: clean originals by stem (any suffix); gains in the lines, the summary and the report;
    a reference of another size fails that image before anything is written; a missing one is only noted."""
    src, ref, out = tmp_path / "in", tmp_path / "clean", tmp_path / "out"
    src.mkdir()
    ref.mkdir()
    clean = RNG.integers(0, 256, (24, 32, 3), dtype=np.uint8)
    noisy = np.clip(clean.astype(int) + RNG.integers(-40, 41, clean.shape), 0, 255).astype(np.uint8)
    write_image(src / "a.png", noisy)
    write_image(ref / "a.tiff", clean)  # another suffix than the input's
    good_image(src / "b.png")
    write_image(ref / "b.png", clean[:20])  # another size
    good_image(src / "c.png")  # no reference
    report = tmp_path / "report.json"
    assert restore_cli(weights, src, "-o", out, "--reference", ref, "--report", report) == 1
    captured = capsys.readouterr()
    rows = {Path(r["input"]).name: r for r in json.loads(report.read_text())["images"]}
    reference = read_image(ref / "a.tiff").pixels
    restored = read_image(out / "a.png").pixels
    assert rows["a.png"]["psnr_y_input"] == pytest.approx(score(noisy, reference).psnr_y)
    assert rows["a.png"]["psnr_y_restored"] == pytest.approx(score(restored, reference).psnr_y)
    gain = rows["a.png"]["psnr_y_restored"] - rows["a.png"]["psnr_y_input"]
    assert f"({gain:+.2f})" in captured.out and "mean of 1:" in captured.out
    assert rows["b.png"]["status"] == "failed" and "the reference is 32x20, the input 32x24" in rows["b.png"]["error"]
    assert not (out / "b.png").exists()
    assert rows["c.png"]["status"] == "restored" and rows["c.png"]["psnr_y_input"] is None
    assert "no clean original for c.png" in captured.out
    assert restore_cli(weights, src, "-o", out, "--reference", tmp_path / "absent") == 2
    assert "--reference" in capsys.readouterr().err


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


def test_threads_and_no_tlc(
    tmp_path: Path, weights: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    good_image(tmp_path / "a.png")
    made: list[dict[str, object]] = []
    load = Restorer.from_weights.__func__  # type: ignore[attr-defined]

    def spy(cls: type[Restorer], path: Path, device: str, **kw: object) -> Restorer:
        made.append(kw)
        return load(cls, path, device, **kw)

    monkeypatch.setattr(Restorer, "from_weights", classmethod(spy))
    threads = torch.get_num_threads()
    try:
        assert restore_cli(weights, tmp_path / "a.png", "-o", tmp_path / "out", "--threads", "1", "--no-tlc") == 0
        assert torch.get_num_threads() == 1 and made[-1]["tlc"] is None
    finally:
        torch.set_num_threads(threads)
    assert restore_cli(weights, tmp_path / "a.png", "-o", tmp_path / "out2") == 0
    assert "tlc" not in made[-1]  # the weights' training crop
    assert restore_cli(weights, tmp_path / "a.png", "-o", tmp_path / "out3", "--threads", "0") == 2
    assert main(["serve", "--threads", "0", "--weights", str(weights)]) == 2
    assert capsys.readouterr().err.count("--threads must be at least 1") == 2


def test_usage_errors_exit_2(tmp_path: Path, weights: Path, capsys: pytest.CaptureFixture[str]) -> None:
    good_image(tmp_path / "a.png")
    (tmp_path / "bad.safetensors").write_bytes(b"garbage")
    (tmp_path / "bad.json").write_text(json.dumps({"model": {}}))
    assert restore_cli(tmp_path / "bad.safetensors", tmp_path / "a.png", "-o", tmp_path / "out") == 2
    assert "bad.safetensors" in capsys.readouterr().err
    (tmp_path / "empty").mkdir()
    assert restore_cli(weights, tmp_path / "empty", "-o", tmp_path / "out") == 2
    assert "no images found" in capsys.readouterr().err
