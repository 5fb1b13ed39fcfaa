"""Readers for every public layout on tiny fixture trees, and the layout check's three fault kinds."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from smartassign.data.datasets import LAYOUTS, PairedDataset, check_layout, discover
from smartassign.errors import DataError, ImageError


def _img(path: Path, value: int, size: tuple[int, int] = (24, 16)) -> None:
    """A flat RGB image of ``size`` (w, h) whose pixels all equal ``value``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((size[1], size[0], 3), value, np.uint8)).save(path)


def _pairs(root: Path, inp: str, tgt: str, names: list[tuple[str, str]], ext: str = ".png") -> None:
    for i, (a, b) in enumerate(names):
        _img(root / inp / f"{a}{ext}", 200 - i)
        _img(root / tgt / f"{b}{ext}", 50 + i)


def make_tree(root: Path, layout: str) -> int:
    """Build a miniature of ``layout`` as its archive unpacks; return the expected pair count."""
    if layout == "generic":
        _pairs(root, "input", "target", [("a", "a"), ("b", "b"), ("c", "c")])
        return 3
    if layout == "rain1200":
        for sub, n in (("DID-MDN-training/Rain_Heavy/train2018new", 2), ("DID-MDN-test", 1)):
            for i in range(n):
                both = np.concatenate([np.full((16, 12, 3), 220, np.uint8), np.full((16, 12, 3), 30, np.uint8)], 1)
                (root / sub).mkdir(parents=True, exist_ok=True)
                Image.fromarray(both).save(root / sub / f"{i}.jpg", quality=100)
        return 3
    if layout == "rain_streak":
        _pairs(root / "train", "rainy_image", "ground_truth", [("1_1", "1"), ("2_1", "2")], ".jpg")
        _img(root / "train" / "rainy_image" / "1_2.jpg", 180)  # many rainy versions share one clean image
        return 3
    if layout == "spa":
        _pairs(root / "Testing" / "real_test_1000", "rain", "gt", [("000", "000gt"), ("001", "001gt")])
        return 2
    if layout == "snow100k":
        _pairs(root / "Snow100K-training" / "all", "synthetic", "gt", [("beautiful_1", "beautiful_1")], ".jpg")
        test = root / "Snow100K-testset" / "media" / "jdway" / "GameSSD" / "overlapping" / "test"
        for split in ("Snow100K-L", "Snow100K-S"):
            _pairs(test / split, "synthetic", "gt", [("x", "x")], ".jpg")
            _img(test / split / "mask" / "x.jpg", 255)
        return 3
    if layout == "srrs":
        _pairs(root / "SRRS", "Syn", "gt", [("0001", "0001"), ("0002", "0002")], ".jpg")
        return 2
    if layout == "csd":
        for split in ("Train", "Test"):
            _pairs(root / "CSD" / split, "Snow", "Gt", [("1", "1"), ("2", "2")], ".tif")
            _img(root / "CSD" / split / "Mask" / "1.tif", 255)
        return 4
    raise AssertionError(layout)


@pytest.mark.parametrize("layout", sorted(LAYOUTS))
def test_every_layout_reads_its_archive_tree(tmp_path, layout):
    expected = make_tree(tmp_path, layout)
    report = check_layout(tmp_path, layout)
    assert report.ok, report.problems
    assert report.pairs == expected
    ds = PairedDataset(tmp_path, layout, label=1)
    assert len(ds) == expected
    s = ds[0]
    assert set(s) == {"input", "target", "label", "name", "weather"}
    assert s["input"].dtype == torch.float32 and s["input"].shape[0] == 3
    assert s["input"].shape == s["target"].shape
    assert s["label"].dtype == torch.long and s["label"].ndim == 0 and int(s["label"]) == 1
    assert float(s["input"].mean()) > float(s["target"].mean())  # degraded halves/files are the bright ones here


def test_rain1200_splits_left_rainy_right_clean(tmp_path):
    make_tree(tmp_path, "rain1200")
    s = PairedDataset(tmp_path, "rain1200", label=0)[0]
    assert s["input"].shape == (3, 16, 12)
    assert s["input"].mean() > 0.8 and s["target"].mean() < 0.2


def test_names_are_unique_even_when_stems_repeat(tmp_path):
    make_tree(tmp_path, "rain1200")  # train2018new/0.jpg and DID-MDN-test/0.jpg
    names = [p.name for p in discover(tmp_path, "rain1200").pairs]
    assert len(set(names)) == len(names) == 3
    assert "DID-MDN-test/0" in names
    make_tree(tmp_path / "g", "generic")
    assert [p.name for p in discover(tmp_path / "g", "generic").pairs] == ["a", "b", "c"]


def test_rain_streak_many_inputs_share_one_target(tmp_path):
    make_tree(tmp_path, "rain_streak")
    pairs = discover(tmp_path, "rain_streak").pairs
    by_input = {p.input.name: p.target.name for p in pairs}
    assert by_input == {"1_1.jpg": "1.jpg", "1_2.jpg": "1.jpg", "2_1.jpg": "2.jpg"}


def test_check_reports_each_fault_kind_with_its_path(tmp_path):
    make_tree(tmp_path, "generic")
    _img(tmp_path / "input" / "orphan.png", 10)  # missing clean partner
    _img(tmp_path / "target" / "lonely.png", 10)  # missing degraded partner
    (tmp_path / "input" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    _img(tmp_path / "target" / "broken.png", 10)
    good = tmp_path / "input" / "trunc.png"
    _img(good, 10, (64, 64))
    _img(tmp_path / "target" / "trunc.png", 10, (64, 64))
    good.write_bytes(good.read_bytes()[:60])  # truncated: opens, fails to decode
    _img(tmp_path / "input" / "big.png", 10, (30, 16))
    _img(tmp_path / "target" / "big.png", 10, (24, 16))
    report = check_layout(tmp_path, "generic")
    assert not report.ok
    assert report.pairs == 3
    assert any("orphan.png" in m for m in report.missing)
    assert any("lonely.png" in m for m in report.missing)
    assert any("broken.png" in m for m in report.unreadable)
    assert any("trunc.png" in m for m in report.unreadable)
    assert len(report.size_mismatch) == 1
    assert "big.png is 30x16" in report.size_mismatch[0]
    assert len(report.problems) == 5


def test_check_flags_missing_clean_folder_and_odd_side_by_side(tmp_path):
    _img(tmp_path / "a" / "rainy_image" / "1_1.png", 9)
    report = check_layout(tmp_path / "a", "rain_streak")
    assert report.pairs == 0 and any("no clean folder" in m for m in report.missing)
    _img(tmp_path / "b" / "0.png", 9, (25, 10))
    report = check_layout(tmp_path / "b", "rain1200")
    assert report.size_mismatch and "odd" in report.size_mismatch[0]


def test_crop_augment_and_center_crop(tmp_path):
    arr = np.arange(40 * 48 * 3, dtype=np.uint32).reshape(40, 48, 3) % 251
    for name in ("a", "b"):
        (tmp_path / "input").mkdir(exist_ok=True)
        (tmp_path / "target").mkdir(exist_ok=True)
        Image.fromarray(arr.astype(np.uint8)).save(tmp_path / "input" / f"{name}.png")
        Image.fromarray(arr.astype(np.uint8)).save(tmp_path / "target" / f"{name}.png")
    ds = PairedDataset(tmp_path, "generic", label=0, crop=32, augment=True, rot90=True, seed=3)
    torch.manual_seed(0)
    s = ds[0]
    assert s["input"].shape == (3, 32, 32)
    assert torch.equal(s["input"], s["target"])  # the same crop, flips and turns hit both images
    center = PairedDataset(tmp_path, "generic", label=0, crop=32)
    expected = torch.from_numpy(arr[4:36, 8:40].astype(np.float32) / 255.0).permute(2, 0, 1)
    assert torch.allclose(center[1]["input"], expected)
    small = PairedDataset(tmp_path, "generic", label=0, crop=64, augment=True)
    assert small[0]["input"].shape == (3, 64, 64)  # reflect-padded up to the crop


def test_errors_name_the_problem(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        PairedDataset(tmp_path / "nope", "generic", label=0)
    with pytest.raises(DataError, match="unknown dataset layout"):
        PairedDataset(tmp_path, "rain800", label=0)
    with pytest.raises(DataError, match="no generic pairs"):
        PairedDataset(tmp_path, "generic", label=0)
    _img(tmp_path / "input" / "x.png", 1, (10, 10))
    _img(tmp_path / "target" / "x.png", 1, (12, 10))
    with pytest.raises(ImageError, match="x.png is 10x10"):
        PairedDataset(tmp_path, "generic", label=0)[0]
