"""The degradation engine: seeded, bounded, and rain and snow look like what they are."""

from __future__ import annotations

import json

import numpy as np
import pytest
from scipy import ndimage
from skimage import data as skdata

from smartassign.data.synth import add_rain, add_snow, synthesize


@pytest.fixture(scope="module")
def clean() -> np.ndarray:
    return np.ascontiguousarray(skdata.chelsea()[:160, 100:260].astype(np.float32) / 255.0)


def coherence(clean: np.ndarray, degraded: np.ndarray) -> float:
    """Gradient-orientation anisotropy of the high-passed residual: ~1 for parallel streaks, ~0 for round blobs."""
    r = (degraded - clean).mean(axis=2)
    r = r - ndimage.gaussian_filter(r, 3)  # drop the smooth veil, keep streaks and flakes
    gy, gx = np.gradient(r)
    jxx, jyy, jxy = (gx * gx).mean(), (gy * gy).mean(), (gx * gy).mean()
    return float(np.sqrt((jxx - jyy) ** 2 + 4 * jxy**2) / (jxx + jyy))


@pytest.mark.parametrize("fn", [add_rain, add_snow])
def test_output_is_float32_image_in_range_and_params_are_json(fn, clean):
    out, params = fn(clean, np.random.default_rng(0))
    assert out.shape == clean.shape and out.dtype == np.float32
    assert 0.0 <= out.min() and out.max() <= 1.0
    json.dumps(params)
    assert params["layers"]


@pytest.mark.parametrize("task", ["rain", "snow"])
def test_same_seed_same_bits_other_seed_differs(task, clean):
    a, pa = synthesize(clean, task, np.random.default_rng(7))
    b, pb = synthesize(clean, task, np.random.default_rng(7))
    c, _ = synthesize(clean, task, np.random.default_rng(8))
    assert a.tobytes() == b.tobytes() and pa == pb
    assert np.abs(a - c).mean() > 1e-3


@pytest.mark.parametrize("task", ["rain", "snow"])
def test_degradation_changes_the_image_visibly(task, clean):
    for seed in range(4):
        out, _ = synthesize(clean, task, np.random.default_rng(seed))
        assert np.abs(out - clean).mean() > 0.003


def test_rain_is_oriented_snow_is_blob_like_and_they_differ(clean):
    rain = [coherence(clean, add_rain(clean, np.random.default_rng(s))[0]) for s in range(6)]
    snow = [coherence(clean, add_snow(clean, np.random.default_rng(s))[0]) for s in range(6)]
    assert min(rain) > 0.4, rain
    assert max(snow) < 0.25, snow
    r, _ = add_rain(clean, np.random.default_rng(1))
    s, _ = add_snow(clean, np.random.default_rng(1))
    assert np.abs(r - s).mean() > 0.003


def streak_angle(residual: np.ndarray) -> float:
    """Streak direction in degrees from vertical, from the second moments of the residual's autocorrelation peak."""
    r = residual - ndimage.gaussian_filter(residual, 4)
    c = r.shape[0] // 2
    ac = np.fft.fftshift(np.fft.ifft2(np.abs(np.fft.fft2(r)) ** 2).real)[c - 10 : c + 11, c - 10 : c + 11].clip(0)
    yy, xx = np.mgrid[-10:11, -10:11]
    return float(0.5 * np.degrees(np.arctan2(2 * (ac * xx * yy).sum(), (ac * (yy * yy - xx * xx)).sum())))


def test_rain_streaks_follow_the_sampled_angle():
    flat = np.full((192, 192, 3), 0.3, np.float32)
    sampled, measured = [], []
    for seed in range(8):
        out, params = add_rain(flat, np.random.default_rng(seed))
        sampled.append(params["angle_deg"])
        measured.append(streak_angle((out - flat).mean(axis=2)))
    errors = np.abs(np.array(sampled) - np.array(measured))
    assert np.median(errors) < 5.0, (sampled, measured)
    assert np.corrcoef(sampled, measured)[0, 1] > 0.9


def test_snow_brightens_and_sizes_vary():
    flat = np.full((128, 128, 3), 0.2, np.float32)
    out, params = add_snow(flat, np.random.default_rng(5))
    radii = [layer["radius_px"] for layer in params["layers"]]
    assert len(radii) >= 2 and max(radii) > 1.3 * min(radii)
    assert (out - flat).mean() > 0


def test_non_square_and_small_images(clean):
    for shape in [(40, 90, 3), (300, 120, 3)]:
        img = np.full(shape, 0.5, np.float32)
        for task in ("rain", "snow"):
            out, _ = synthesize(img, task, np.random.default_rng(0))
            assert out.shape == shape


def test_bad_input_is_rejected(clean):
    with pytest.raises(ValueError):
        synthesize(clean, "fog", np.random.default_rng(0))  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        add_rain(clean[..., 0], np.random.default_rng(0))
