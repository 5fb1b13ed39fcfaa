"""PSNR/SSIM on Y and RGB: MATLAB's Y conversion and agreement with two independent implementations on real photos."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy.ndimage import gaussian_filter
from scipy.signal import correlate2d
from skimage import color
from skimage import data as skdata

from smartassign.metrics import mean_scores, psnr, rgb_to_y, score, ssim, to_uint8


def _photos() -> list[np.ndarray]:
    """Real photographs shipped with scikit-image, cropped to keep the test fast."""
    return [skdata.astronaut()[100:260, 120:300], skdata.coffee()[50:200, 100:300], skdata.chelsea()[:150, :200]]


def _degrade(img: np.ndarray, seed: int) -> np.ndarray:
    """A plausible restoration error: slight blur plus noise, back on the 8-bit grid."""
    rng = np.random.default_rng(seed)
    x = gaussian_filter(img.astype(np.float64), sigma=(0.8, 0.8, 0)) + rng.normal(0, 6, img.shape)
    return np.clip(np.round(x), 0, 255).astype(np.uint8)


# --- a direct transcription of evaluate_PSNR_SSIM.m (Restormer / MPRNet), sharing no code with smartassign ---


def _matlab_y(rgb: np.ndarray) -> np.ndarray:
    """rgb2ycbcr on uint8: imlincomb(T/255, R, G, B, 16) rounded half away from zero to uint8."""
    r, g, b = (rgb[..., i].astype(np.float64) for i in range(3))
    y = 65.481 / 255 * r + 128.553 / 255 * g + 24.966 / 255 * b + 16
    return np.floor(y + 0.5).astype(np.uint8)


def _matlab_psnr(a: np.ndarray, b: np.ndarray) -> float:
    d = a.astype(np.float64).ravel() - b.astype(np.float64).ravel()
    return 20 * math.log10(255 / math.sqrt(np.mean(d**2)))


def _matlab_ssim(a: np.ndarray, b: np.ndarray) -> float:
    """SSIM_index with fspecial('gaussian', 11, 1.5), filter2(..., 'valid'), K = [0.01 0.03], L = 255."""
    ax = np.arange(-5, 6)
    xx, yy = np.meshgrid(ax, ax)
    w = np.exp(-(xx**2 + yy**2) / (2 * 1.5**2))
    w /= w.sum()
    a, b = a.astype(np.float64), b.astype(np.float64)
    f = lambda x: correlate2d(x, w, mode="valid")  # noqa: E731
    mu1, mu2 = f(a), f(b)
    s1, s2, s12 = f(a * a) - mu1**2, f(b * b) - mu2**2, f(a * b) - mu1 * mu2
    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
    smap = ((2 * mu1 * mu2 + c1) * (2 * s12 + c2)) / ((mu1**2 + mu2**2 + c1) * (s1 + s2 + c2))
    return float(smap.mean())


def test_y_matches_matlab_rgb2ycbcr_on_primaries() -> None:
    # MATLAB: rgb2ycbcr(uint8([0 0 0; 255 255 255; 255 0 0; 0 255 0; 0 0 255])) luma = 16 235 81 145 41
    px = np.array([[[0, 0, 0], [255, 255, 255], [255, 0, 0], [0, 255, 0], [0, 0, 255]]], dtype=np.uint8)
    assert rgb_to_y(px).ravel().tolist() == [16, 235, 81, 145, 41]


def test_y_matches_scikit_image_rgb2ycbcr_rounded() -> None:
    img = skdata.astronaut()
    y = color.rgb2ycbcr(img)[..., 0]
    differ = rgb_to_y(img) != np.floor(y + 0.5).astype(np.uint8)
    # Only exact half-way values may round either way in floating point (one pixel of this photo).
    assert differ.sum() <= 2
    assert np.allclose(y[differ] % 1, 0.5, atol=1e-9)


def test_to_uint8_rounds_like_im2uint8_and_clips() -> None:
    x = np.array([[[-0.2, 0.5 / 255, 1.5 / 255], [2.5 / 255, 1.0, 7.0]]], dtype=np.float32)
    assert to_uint8(x).ravel().tolist() == [0, 1, 2, 3, 255, 255]
    t = torch.rand(3, 5, 4)
    assert to_uint8(t).shape == (5, 4, 3)


@pytest.mark.parametrize("index", range(3))
def test_y_metrics_match_the_matlab_script_on_real_photos(index: int) -> None:
    target = _photos()[index]
    result = _degrade(target, index)
    s = score(result, target)
    ya, yb = _matlab_y(result), _matlab_y(target)
    assert abs(s.psnr_y - _matlab_psnr(ya, yb)) < 1e-3
    assert abs(s.ssim_y - _matlab_ssim(ya, yb)) < 1e-4
    rgb_ssim = np.mean([_matlab_ssim(result[..., c], target[..., c]) for c in range(3)])
    assert abs(s.psnr_rgb - _matlab_psnr(result, target)) < 1e-3
    assert abs(s.ssim_rgb - rgb_ssim) < 1e-4
    assert 15 < s.psnr_y < 45 and 0.3 < s.ssim_y < 1  # a real, imperfect restoration, not a degenerate case


@pytest.mark.parametrize("index", range(3))
def test_metrics_match_torchmetrics_on_real_photos(index: int) -> None:
    tm = pytest.importorskip("torchmetrics.functional.image")
    target = _photos()[index]
    result = _degrade(target, 10 + index)
    s = score(result, target)

    def t(x: np.ndarray) -> torch.Tensor:
        x = torch.from_numpy(x.astype(np.float64))
        return (x[None, None] if x.ndim == 2 else x.permute(2, 0, 1)[None]).contiguous()

    kw = dict(gaussian_kernel=True, sigma=1.5, kernel_size=11, data_range=255.0, k1=0.01, k2=0.03)
    for ours_psnr, ours_ssim, a, b in (
        (s.psnr_y, s.ssim_y, rgb_to_y(result), rgb_to_y(target)),
        (s.psnr_rgb, s.ssim_rgb, result, target),
    ):
        assert abs(ours_psnr - float(tm.peak_signal_noise_ratio(t(a), t(b), data_range=255.0))) < 1e-3
        # torchmetrics averages its map over reflect-padded border windows too; the protocol (MATLAB 'valid')
        # keeps only windows inside the image, so its map is cropped by the window radius before averaging.
        _, full = tm.structural_similarity_index_measure(t(a), t(b), return_full_image=True, **kw)
        assert abs(ours_ssim - float(full[..., 5:-5, 5:-5].mean())) < 1e-4


def test_identical_images_score_inf_and_one() -> None:
    img = _photos()[0]
    s = score(img, img)
    assert s.psnr_y == math.inf and s.psnr_rgb == math.inf
    assert s.ssim_y == pytest.approx(1.0) and s.ssim_rgb == pytest.approx(1.0)


def test_float_input_is_quantized_before_scoring() -> None:
    target = _photos()[1]
    noisy = target.astype(np.float32) / 255 + 0.4 / 255  # under half a level: quantizes back to the target
    assert psnr(to_uint8(noisy), target) == math.inf
    assert score(noisy, target).psnr_rgb == math.inf


def test_argument_errors() -> None:
    a = np.zeros((20, 20, 3), np.uint8)
    with pytest.raises(ValueError, match="shape"):
        psnr(a, a[:10])
    with pytest.raises(ValueError, match="uint8"):
        ssim(a.astype(np.float32), a.astype(np.float32))
    with pytest.raises(ValueError, match="11x11"):
        ssim(a[:8, :8], a[:8, :8])


def test_mean_scores_is_the_mean_over_images() -> None:
    target = _photos()[2]
    per_image = [score(_degrade(target, k), target) for k in range(3)]
    mean = mean_scores(per_image)
    assert mean.psnr_y == pytest.approx(np.mean([s.psnr_y for s in per_image]))
    assert mean.ssim_rgb == pytest.approx(np.mean([s.ssim_rgb for s in per_image]))
    with pytest.raises(ValueError):
        mean_scores([])
