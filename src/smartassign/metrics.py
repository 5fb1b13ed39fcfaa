"""PSNR and SSIM as deraining papers report them, on the Y channel and on RGB.

The protocol is the one of Restormer / MPRNet / DRSformer's ``evaluate_PSNR_SSIM.m``:
both images are quantized to 8 bits (MATLAB ``im2uint8``), Y is MATLAB's
``rgb2ycbcr`` of the uint8 image (ITU-R BT.601, rounded back to uint8 as
MATLAB does for integer input), PSNR is ``20 log10(255 / RMSE)``, SSIM is Wang
et al. 2004 (11x11 Gaussian window, sigma 1.5, K1 0.01, K2 0.03, L 255) averaged
over the window positions that fit inside the image, no border is cropped, and
a dataset's score is the mean over its images. RGB SSIM is the mean of the
per-channel SSIMs. The arithmetic is scikit-image's; the tests cross-check it
against torchmetrics and a direct transcription of the MATLAB script.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields

import numpy as np
import torch
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

# MATLAB rgb2ycbcr's luma row (65.481, 128.553, 24.966) and offset 16, for RGB in [0, 1], scaled by 1000 so that
# Y * 255000 is an integer for uint8 RGB and the rounding is exact.
_Y_WEIGHTS = np.array([65481, 128553, 24966], dtype=np.int64)
_Y_OFFSET = 16 * 255000


def to_uint8(image: np.ndarray | torch.Tensor) -> np.ndarray:
    """Float image in [0, 1], ``(H, W, 3)`` array or ``(3, H, W)`` tensor -> ``(H, W, 3)`` uint8 (MATLAB im2uint8).

    Values are clipped to [0, 1] and rounded half away from zero, as ``im2uint8`` does; uint8 input is returned as is.
    """
    if isinstance(image, torch.Tensor):
        image = image.detach().float().cpu().permute(1, 2, 0).numpy()
    if image.dtype == np.uint8:
        return image
    return np.floor(np.clip(image.astype(np.float64), 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)


def rgb_to_y(image: np.ndarray) -> np.ndarray:
    """``(H, W, 3)`` uint8 RGB -> ``(H, W)`` uint8 luma in [16, 235], as MATLAB ``rgb2ycbcr`` of a uint8 image."""
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"rgb_to_y needs an (H, W, 3) uint8 image, got {image.shape} {image.dtype}")
    # Rounded half up in exact integer arithmetic; MATLAB's doubles can land either side of the rare exact ties.
    y = (image.astype(np.int64) @ _Y_WEIGHTS + _Y_OFFSET + 127500) // 255000
    return y.astype(np.uint8)


def psnr(result: np.ndarray, target: np.ndarray) -> float:
    """PSNR in dB of two uint8 images of one shape (``(H, W)`` or ``(H, W, C)``): ``20 log10(255 / RMSE)``.

    Identical images score ``inf``, as in MATLAB and scikit-image.
    """
    _check_pair(result, target)
    if np.array_equal(result, target):
        return math.inf
    return float(peak_signal_noise_ratio(target, result, data_range=255))


def ssim(result: np.ndarray, target: np.ndarray) -> float:
    """SSIM (Wang et al. 2004, Gaussian 11x11, sigma 1.5) of two uint8 images; channels averaged for ``(H, W, C)``."""
    _check_pair(result, target)
    if min(target.shape[:2]) < 11:
        raise ValueError(f"SSIM needs images of at least 11x11 pixels, got {target.shape[1]}x{target.shape[0]}")
    return float(
        structural_similarity(
            target,
            result,
            gaussian_weights=True,
            sigma=1.5,
            use_sample_covariance=False,
            data_range=255,
            channel_axis=2 if target.ndim == 3 else None,
        )
    )


def _check_pair(result: np.ndarray, target: np.ndarray) -> None:
    if result.shape != target.shape:
        raise ValueError(f"result {result.shape} and target {target.shape} differ in shape")
    if result.dtype != np.uint8 or target.dtype != np.uint8:
        raise ValueError(f"metrics take uint8 images (the protocol quantizes first), got {result.dtype} {target.dtype}")


@dataclass(frozen=True)
class Scores:
    """PSNR (dB) and SSIM of one image on the Y channel and on RGB."""

    psnr_y: float
    ssim_y: float
    psnr_rgb: float
    ssim_rgb: float

    def as_dict(self) -> dict[str, float]:
        """Plain dict, for logs and JSON."""
        return asdict(self)


def score(result: np.ndarray | torch.Tensor, target: np.ndarray | torch.Tensor) -> Scores:
    """All four metrics of one restored image against its clean target (float in [0, 1] or uint8, see ``to_uint8``)."""
    a, b = to_uint8(result), to_uint8(target)
    ya, yb = rgb_to_y(a), rgb_to_y(b)
    return Scores(psnr(ya, yb), ssim(ya, yb), psnr(a, b), ssim(a, b))


def mean_scores(scores: list[Scores]) -> Scores:
    """The dataset score: the mean of each metric over images (an empty list is an error)."""
    if not scores:
        raise ValueError("no images to average")
    return Scores(*(float(np.mean([getattr(s, f.name) for s in scores])) for f in fields(Scores)))


__all__ = ["Scores", "mean_scores", "psnr", "rgb_to_y", "score", "ssim", "to_uint8"]
