"""Physically motivated synthetic rain and snow, rendered onto clean photographs.

Both follow the layered image-formation models the benchmark sets were made with:

* Rain (Rain100L/H, Rain1200, JORDER's rain-accumulation model): ``O = screen(J·t + A·(1−t), S)``, where the
  streak layer ``S`` is sparse drops motion-blurred along the fall direction, 1–3 depth layers (far layers are
  shorter, thinner, denser and dimmer), and ``t = exp(−β·d)`` is the transmission of the rain veil over a
  plausible depth map ``d`` (far at the top of the frame).
* Snow (Snow100K, CSD/HDCW-Net's veiling model): ``O = (J·t + A·(1−t))·(1−M) + C·M``, where the flake mask ``M``
  stacks 2–4 layers of soft discs of different sizes and opacities, near flakes large, sparse, defocused and
  motion-blurred by the wind, far flakes small, dense and faint.

Sizes are in pixels of a 256-pixel image and scale with ``min(H, W) / 256``. Every random draw comes from the
``rng`` passed in, so a seeded generator reproduces the output bit for bit. Each layer is one FFT convolution of
a sparse seed map with a small kernel, so 256×256 costs a few milliseconds.
"""

from __future__ import annotations

import math
from typing import Any, Literal

import numpy as np
from scipy import ndimage
from scipy.signal import fftconvolve

Task = Literal["rain", "snow"]
TASKS: tuple[Task, Task] = ("rain", "snow")


def _check(clean: np.ndarray) -> tuple[int, int]:
    if clean.ndim != 3 or clean.shape[2] != 3:
        raise ValueError(f"expected an (H, W, 3) image, got shape {clean.shape}")
    return clean.shape[0], clean.shape[1]


def _scale(h: int, w: int) -> float:
    return max(min(h, w) / 256.0, 0.25)


def _line_kernel(length: float, angle: float, width: float) -> np.ndarray:
    """A streak of ``length`` px at ``angle`` rad from vertical, Gaussian cross-section ``width`` px, peak 1."""
    half = length / 2.0
    size = int(math.ceil(length + 4 * width + 2)) | 1
    c = size // 2
    # Dense samples along the segment splatted bilinearly: anti-aliased at any angle.
    t = np.linspace(-half, half, max(int(length * 3), 2), dtype=np.float32)
    # Drops are brightest mid-exposure and fade at the ends (the Photoshop-style streaks of Rain100/1200).
    weight = (1.0 - 0.6 * (t / max(half, 1e-3)) ** 2).astype(np.float32)
    x = c + t * math.sin(angle)
    y = c + t * math.cos(angle)
    x0, y0 = np.floor(x).astype(int), np.floor(y).astype(int)
    fx, fy = x - x0, y - y0
    k = np.zeros((size, size), np.float32)
    for dy, dx, wgt in ((0, 0, (1 - fy) * (1 - fx)), (0, 1, (1 - fy) * fx), (1, 0, fy * (1 - fx)), (1, 1, fy * fx)):
        np.add.at(k, (np.clip(y0 + dy, 0, size - 1), np.clip(x0 + dx, 0, size - 1)), weight * wgt)
    k = ndimage.gaussian_filter(k, max(width, 0.3))
    return k / max(float(k.max()), 1e-8)


def _disc_kernel(radius: float, softness: float, blur_len: float, angle: float) -> np.ndarray:
    """A soft disc (flake) of ``radius`` px, smeared along ``angle`` over ``blur_len`` px (motion), peak 1."""
    size = int(math.ceil(2 * radius + 2 * softness * radius + blur_len + 4)) | 1
    c = size // 2
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) - c
    r = np.hypot(xx, yy)
    edge = max(softness * radius, 0.5)
    k = np.clip((radius + edge - r) / (2 * edge), 0.0, 1.0) ** 2
    if blur_len >= 1.0:
        motion = _line_kernel(blur_len, angle, 0.3)
        k = fftconvolve(k, motion / motion.sum(), mode="same")
    return (k / max(float(k.max()), 1e-8)).astype(np.float32)


def _render(seeds: np.ndarray, kernel: np.ndarray) -> np.ndarray:
    return np.clip(fftconvolve(seeds, kernel, mode="same"), 0.0, 1.0)


def _interp_matrix(n: int, knots: int) -> np.ndarray:
    """(n, knots) weights that linearly interpolate ``knots`` evenly spaced values onto ``n`` pixels."""
    pos = np.linspace(0.0, knots - 1.0, n, dtype=np.float32)
    lo = np.minimum(pos.astype(int), knots - 2)
    frac = pos - lo
    m = np.zeros((n, knots), np.float32)
    m[np.arange(n), lo] = 1.0 - frac
    m[np.arange(n), lo + 1] = frac
    return m


def _depth(h: int, w: int, rng: np.random.Generator) -> np.ndarray:
    """A plausible scene depth in [0, 1]: far towards the top, plus smooth random relief."""
    horizon = rng.uniform(0.2, 0.7)
    rows = np.clip(1.0 - np.arange(h, dtype=np.float32) / (h * (1.0 - horizon) + 1e-6) + horizon, 0.0, 1.0)
    # Bilinear upsampling of a 4x4 random grid as two small matrix products: smooth relief at no cost.
    relief = _interp_matrix(h, 4) @ rng.random((4, 4)).astype(np.float32) @ _interp_matrix(w, 4).T
    return np.clip(0.75 * rows[:, None] + 0.35 * (relief - 0.5), 0.0, 1.0)


def _veil(clean: np.ndarray, rng: np.random.Generator, beta: float, light: np.ndarray) -> np.ndarray:
    """Attenuate by transmission ``exp(-beta·depth)`` and add airlight: the rain/snow veiling (haze) effect."""
    t = np.exp(-beta * _depth(clean.shape[0], clean.shape[1], rng))[..., None]
    return clean * t + light * (1.0 - t)


def _layer_depths(n: int, rng: np.random.Generator) -> np.ndarray:
    """``n`` depths in (0, 1), one per equal stratum: layers stay distinct in size, near to far."""
    return (np.arange(n) + 0.5 + rng.uniform(-0.3, 0.3, n)) / n


def _sparse_seeds(h: int, w: int, count: int, rng: np.random.Generator, low: float) -> np.ndarray:
    """``count`` impulses at random pixels with amplitudes in [low, 1]; coincident ones add up."""
    idx = rng.integers(0, h * w, size=count)
    amp = rng.uniform(low, 1.0, size=count)
    return np.bincount(idx, weights=amp, minlength=h * w).reshape(h, w).astype(np.float32)


def add_rain(clean: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, dict[str, Any]]:
    """Render rain streaks and rain veil onto ``clean`` (float32 (H, W, 3) in [0, 1]); return it and the parameters."""
    h, w = _check(clean)
    clean = clean.astype(np.float32, copy=False)
    s = _scale(h, w)
    angle = math.radians(rng.uniform(-25.0, 25.0))
    n_layers = int(rng.integers(1, 4))
    depths = _layer_depths(n_layers, rng)
    heavy = rng.random() < 0.5
    beta = float(rng.uniform(0.3, 1.6) if heavy else rng.uniform(0.0, 0.4))
    light = np.clip(rng.uniform(0.72, 0.95) + rng.normal(0.0, 0.015, 3), 0.0, 1.0).astype(np.float32)

    streaks = np.zeros((h, w), np.float32)
    layers = []
    for z in depths:
        z = float(z)
        length = rng.uniform(18.0, 45.0) * s * (1.0 - 0.4 * z)
        width = rng.uniform(0.5, 1.1) * s * (1.0 - 0.4 * z)
        density = rng.uniform(0.0015, 0.008) * (1.0 + 2.0 * z)  # drops per pixel; far layers look denser
        intensity = rng.uniform(0.35, 0.85) * (1.0 - 0.45 * z)
        layer_angle = angle + math.radians(rng.normal(0.0, 2.5))
        seeds = _sparse_seeds(h, w, int(rng.poisson(density * h * w)), rng, 0.5)
        layer = _render(seeds, _line_kernel(length, layer_angle, width)) * intensity
        streaks = 1.0 - (1.0 - streaks) * (1.0 - layer)  # layers combine like light: screen, not sum
        layers.append(
            {
                "depth": z,
                "angle_deg": math.degrees(layer_angle),
                "length_px": length,
                "width_px": width,
                "density": density,
                "intensity": intensity,
            }
        )
    veiled = _veil(clean, rng, beta, light)
    out = 1.0 - (1.0 - veiled) * (1.0 - streaks[..., None] * light)
    params = {
        "task": "rain",
        "angle_deg": math.degrees(angle),
        "veil_beta": beta,
        "airlight": light.tolist(),
        "layers": layers,
    }
    return np.clip(out, 0.0, 1.0).astype(np.float32), params


def add_snow(clean: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, dict[str, Any]]:
    """Render snowflakes and snow veil onto ``clean`` (float32 (H, W, 3) in [0, 1]); return it and the parameters."""
    h, w = _check(clean)
    clean = clean.astype(np.float32, copy=False)
    s = _scale(h, w)
    wind = math.radians(rng.uniform(-40.0, 40.0))
    n_layers = int(rng.integers(2, 5))
    depths = _layer_depths(n_layers, rng)
    beta = float(rng.uniform(0.0, 1.2))
    light = np.clip(rng.uniform(0.8, 0.97) + rng.normal(0.0, 0.01, 3), 0.0, 1.0).astype(np.float32)
    color = np.clip(rng.uniform(0.9, 1.0) + np.array([-0.01, 0.0, 0.02]) * rng.random(), 0.0, 1.0).astype(np.float32)

    amount = rng.uniform(0.5, 2.0)  # light flurry to heavy snowfall, as the L/M/S splits of Snow100K
    mask = np.zeros((h, w), np.float32)
    layers = []
    for z in depths:
        z = float(z)
        # Log-interpolate flake size from near (large) to far (small): several distinct sizes per image.
        radius = math.exp(math.log(5.0) * (1.0 - z) + math.log(0.7) * z) * rng.uniform(0.8, 1.25) * s
        density = amount * math.exp(math.log(5.0) * (1.0 - z) + math.log(80.0) * z) * rng.uniform(0.7, 1.4)  # /1e4 px
        opacity = rng.uniform(0.75, 1.0) * (1.0 - 0.5 * z)
        softness = rng.uniform(0.2, 0.5) + 0.6 * (1.0 - z)  # near flakes are out of focus
        blur_len = rng.uniform(0.0, 1.5) * radius
        layer_angle = wind + math.radians(rng.normal(0.0, 5.0))
        seeds = _sparse_seeds(h, w, int(rng.poisson(density * h * w / 1e4)), rng, 0.6)
        layer = _render(seeds, _disc_kernel(radius, softness, blur_len, layer_angle)) * opacity
        mask = 1.0 - (1.0 - mask) * (1.0 - layer)
        layers.append(
            {
                "depth": z,
                "radius_px": radius,
                "density_per_1e4px": density,
                "opacity": opacity,
                "softness": softness,
                "motion_px": blur_len,
                "angle_deg": math.degrees(layer_angle),
            }
        )
    veiled = _veil(clean, rng, beta, light)
    m = mask[..., None]
    out = veiled * (1.0 - m) + color * m
    params = {
        "task": "snow",
        "wind_deg": math.degrees(wind),
        "amount": amount,
        "veil_beta": beta,
        "airlight": light.tolist(),
        "flake_color": color.tolist(),
        "layers": layers,
    }
    return np.clip(out, 0.0, 1.0).astype(np.float32), params


def synthesize(clean: np.ndarray, task: Task, rng: np.random.Generator) -> tuple[np.ndarray, dict[str, Any]]:
    """Degrade ``clean`` with ``task`` ("rain" or "snow"); return the degraded image and its parameters."""
    if task == "rain":
        return add_rain(clean, rng)
    if task == "snow":
        return add_snow(clean, rng)
    raise ValueError(f"unknown task {task!r}; expected one of {TASKS}")
