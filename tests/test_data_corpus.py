"""The offline photo corpus: fixed disjoint splits, and robust image loading."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from smartassign.data.corpus import PHOTOS, clean_photos, load_downscaled, load_rgb
from smartassign.errors import DataError, ImageError

RESERVED_SKIMAGE = {"coffee", "rocket", "motorcycle_left", "motorcycle_right", "coins", "gravel"}


def test_splits_are_disjoint_and_heldout_holds_the_reserved_photos():
    train, heldout = clean_photos("train"), clean_photos("heldout")
    assert train and heldout
    assert not set(train) & set(heldout)
    held_names = {p.stem for p in heldout}
    assert RESERVED_SKIMAGE <= held_names
    assert not RESERVED_SKIMAGE & {p.stem for p in train}
    # Every installed photo of the reserved packages is held out, never trained on.
    reserved_packages = {"scikit-learn", "matplotlib", "imgaug", "PyWavelets", "mahotas"}
    assert all(p.split == "heldout" for p in PHOTOS if p.package in reserved_packages)
    assert "camera" not in {p.stem for p in train}  # the same picture as PyWavelets' camera.npz


def test_unknown_split_is_a_data_error():
    with pytest.raises(DataError):
        clean_photos("test")  # type: ignore[arg-type]


@pytest.mark.parametrize("split", ["train", "heldout"])
def test_every_installed_photo_loads(split):
    for path in clean_photos(split)[:6]:
        img = load_rgb(path)
        assert img.ndim == 3 and img.shape[2] == 3 and img.dtype == np.float32
        assert 0.0 <= img.min() and img.max() <= 1.0


def test_modes_gray_rgba_16bit_and_npz(tmp_path):
    Image.fromarray(np.full((5, 7), 128, np.uint8)).save(tmp_path / "g.png")
    Image.fromarray(np.full((5, 7, 4), 255, np.uint8)).save(tmp_path / "a.png")
    Image.fromarray(np.full((5, 7), 65535, np.uint16)).save(tmp_path / "w.png")
    np.savez(tmp_path / "d.npz", data=np.full((5, 7), 255, np.uint8))
    assert np.allclose(load_rgb(tmp_path / "g.png"), 128 / 255)
    assert load_rgb(tmp_path / "a.png").shape == (5, 7, 3)
    assert np.allclose(load_rgb(tmp_path / "w.png"), 1.0)
    assert np.allclose(load_rgb(tmp_path / "d.npz"), 1.0)


def test_unreadable_files_raise_image_error_naming_the_file(tmp_path):
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"not an image")
    with pytest.raises(ImageError, match="bad.jpg"):
        load_rgb(bad)
    with pytest.raises(ImageError, match="missing.png"):
        load_rgb(tmp_path / "missing.png")


def test_downscaled_copy_is_cached(tmp_path, monkeypatch):
    monkeypatch.setenv("SMARTASSIGN_CACHE", str(tmp_path / "cache"))
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (300, 500, 3), dtype=np.uint8)).save(tmp_path / "p.jpg")
    a = load_downscaled(tmp_path / "p.jpg", max_side=100)
    assert a.dtype == np.uint8 and max(a.shape[:2]) == 100 and a.shape[2] == 3
    cached = list((tmp_path / "cache" / "photos").glob("*.npy"))
    assert len(cached) == 1
    assert np.array_equal(load_downscaled(tmp_path / "p.jpg", max_side=100), a)
