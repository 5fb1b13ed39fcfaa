"""Evaluation-only rain and snow, built differently from the training engine (numpy + scipy, nothing else).

Nothing in training imports this module (``tests/test_unseen.py`` checks it): it measures how the weights do on
weather whose construction they have never seen, for ``benchmarks/unseen_eval.py`` and the bundle gate
(:mod:`smartassign.gate`). :func:`unseen_set` makes the standard set from the held-out photographs.

Four styles, each at three densities (``light``, ``medium``, ``heavy``). None of them reuses the training
engine's construction (sparse impulses convolved with a Gaussian-profile streak kernel and screened on; snow as
impulses convolved with soft-disc kernels and alpha-composited over a depth-based veil):

``rain_photoshop``
    Rain100L / "Photoshop tutorial" rain: Gaussian noise thresholded to sparse salt, a small Gaussian blur
    (drop size), a long motion blur by a *box* line kernel turned with ``scipy.ndimage.rotate``, a levels +
    gamma contrast curve, then **linear dodge** (``clip(J + k·S)``, not screen). No veil.
``rain_particles``
    Individual drops rasterised one by one as anti-aliased capsules (analytic distance to a segment) with their
    own length, width, angle and brightness, painted far to near with **over** compositing (a drop can darken a
    bright background), over a uniform fog ``J·t + A·(1−t)`` with one constant ``t``.
``snow_noisemask``
    Snow100K-like mask: per size class, white noise smoothed by an anisotropic Gaussian and thresholded at a
    quantile (irregular, clustered, non-convex blobs), plus a few large random star polygons rasterised with 4×4
    supersampling; alpha-composited in white. No veil.
``snow_bokeh``
    Large out-of-focus flakes as hexagonal or circular bokeh (flat interior, bright rim, hard aperture edge) added
    as light, small *aliased* 1–5-pixel flakes (dots, 2×2 squares, plus signs), over a haze whose transmission is
    a smooth random field (cubic zoom of a 4×4 grid), not a depth map.

Sizes are for a 256-pixel image and scale with ``min(H, W) / 256``; counts scale with the area. Every random
draw comes from the ``numpy.random.Generator`` passed in, so the same seed gives the same bytes.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np
from PIL import Image
from scipy import ndimage
from scipy.signal import fftconvolve
from scipy.special import ndtri

DENSITIES: tuple[str, ...] = ("light", "medium", "heavy")
Params = dict[str, Any]


def _check(clean: np.ndarray) -> tuple[int, int]:
    if clean.ndim != 3 or clean.shape[2] != 3:
        raise ValueError(f"expected an (H, W, 3) image, got shape {clean.shape}")
    return clean.shape[0], clean.shape[1]


def _level(density: str) -> int:
    if density not in DENSITIES:
        raise ValueError(f"unknown density {density!r}; expected one of {DENSITIES}")
    return DENSITIES.index(density)


def _pick(rng: np.random.Generator, ranges: tuple[tuple[float, float], ...], level: int) -> float:
    lo, hi = ranges[level]
    return float(rng.uniform(lo, hi))


def _count(rng: np.random.Generator, ranges: tuple[tuple[float, float], ...], level: int, area: float) -> int:
    """A count per 256x256 image drawn from ``ranges[level]``, scaled to the image area, at least 1."""
    return max(1, int(round(_pick(rng, ranges, level) * area)))


def _tint(rng: np.random.Generator, base: float, spread: float) -> np.ndarray:
    """A near-grey colour: ``base`` with a small cool/warm shift of at most ``spread``."""
    shift = rng.uniform(-spread, spread)
    return np.clip(np.array([base - shift, base, base + shift], np.float32), 0.0, 1.0)


# ----------------------------------------------------------------------------- rain A: Photoshop / Rain100L


def _rotated_line_kernel(length: int, angle_deg: float) -> np.ndarray:
    """A box line of ``length`` px (uniform weight, 1 px wide) turned by ``angle_deg`` with ndimage.rotate; sum 1."""
    size = length | 1
    k = np.zeros((size, size), np.float32)
    k[:, size // 2] = 1.0  # vertical line through the centre
    k = ndimage.rotate(k, angle_deg, reshape=False, order=1, mode="constant", cval=0.0)
    k = np.clip(k, 0.0, None)
    return k / max(float(k.sum()), 1e-8)


def rain_photoshop(clean: np.ndarray, rng: np.random.Generator, density: str) -> tuple[np.ndarray, Params]:
    """Thresholded-noise rain, motion-blurred with a rotated box kernel and linear-dodged onto ``clean``."""
    h, w = _check(clean)
    lv = _level(density)
    s = max(min(h, w) / 256.0, 0.25)
    salt_frac = _pick(rng, ((0.002, 0.004), (0.005, 0.009), (0.012, 0.02)), lv)
    length = int(round(_pick(rng, ((14.0, 26.0), (22.0, 38.0), (32.0, 55.0)), lv) * s))
    angle = float(rng.uniform(-30.0, 30.0))
    drop_sigma = float(rng.uniform(0.45, 0.9)) * s
    strength = _pick(rng, ((0.45, 0.65), (0.6, 0.8), (0.75, 0.95)), lv)
    gamma = float(rng.uniform(0.7, 1.3))

    noise = rng.standard_normal((h, w)).astype(np.float32)
    thr = float(ndtri(1.0 - salt_frac))
    salt = np.clip(noise - thr, 0.0, None) + (noise > thr) * 0.5  # sparse specks with varied amplitude
    salt = ndimage.gaussian_filter(salt, drop_sigma, mode="wrap")
    streak = fftconvolve(salt, _rotated_line_kernel(max(length, 3), angle), mode="same")
    streak = ndimage.gaussian_filter(streak, 0.5 * s)  # the tutorial's final soften
    # Levels: black point at the 60th percentile of the streak pixels, white point at their 99.5th.
    on = streak[streak > 1e-6]
    black = float(np.percentile(on, 60)) if on.size else 0.0
    white = float(np.percentile(on, 99.5)) if on.size else 1.0
    curve = np.clip((streak - black) / max(white - black, 1e-6), 0.0, 1.0) ** gamma
    colour = _tint(rng, float(rng.uniform(0.88, 1.0)), 0.03)
    out = clean + strength * curve[..., None] * colour  # linear dodge (add)
    params = {
        "salt_fraction": salt_frac,
        "length_px": length,
        "angle_deg": angle,
        "drop_sigma_px": drop_sigma,
        "strength": strength,
        "gamma": gamma,
        "colour": colour.tolist(),
    }
    return np.clip(out, 0.0, 1.0).astype(np.float32), params


# ----------------------------------------------------------------------------- rain B: particle drops


def _capsule(
    h: int, w: int, x0: float, y0: float, x1: float, y1: float, width: float
) -> tuple[slice, slice, np.ndarray] | None:
    """Anti-aliased coverage of a segment of thickness ``width`` with round caps, on its bounding box."""
    r = width / 2.0
    xa, xb = int(math.floor(min(x0, x1) - r - 1)), int(math.ceil(max(x0, x1) + r + 2))
    ya, yb = int(math.floor(min(y0, y1) - r - 1)), int(math.ceil(max(y0, y1) + r + 2))
    xa, xb, ya, yb = max(xa, 0), min(xb, w), max(ya, 0), min(yb, h)
    if xa >= xb or ya >= yb:
        return None
    yy, xx = np.mgrid[ya:yb, xa:xb].astype(np.float32)
    vx, vy = x1 - x0, y1 - y0
    t = np.clip(((xx - x0) * vx + (yy - y0) * vy) / max(vx * vx + vy * vy, 1e-8), 0.0, 1.0)
    d = np.hypot(xx - (x0 + t * vx), yy - (y0 + t * vy))
    cov = np.clip(r + 0.5 - d, 0.0, 1.0)  # box-filtered edge: exact coverage for a straight edge
    return slice(ya, yb), slice(xa, xb), cov


def rain_particles(clean: np.ndarray, rng: np.random.Generator, density: str) -> tuple[np.ndarray, Params]:
    """Drops drawn one by one as anti-aliased capsules, over-composited on a constant-transmission fog."""
    h, w = _check(clean)
    lv = _level(density)
    s = max(min(h, w) / 256.0, 0.25)
    area = h * w / 65536.0
    t = _pick(rng, ((0.9, 0.97), (0.8, 0.9), (0.65, 0.8)), lv)
    airlight = _tint(rng, float(rng.uniform(0.7, 0.9)), 0.04)
    out = (clean * t + airlight * (1.0 - t)).astype(np.float32)
    n = _count(rng, ((150.0, 300.0), (400.0, 700.0), (900.0, 1500.0)), lv, area)
    angle = math.radians(rng.uniform(-22.0, 22.0))
    max_len = _pick(rng, ((12.0, 22.0), (18.0, 30.0), (24.0, 40.0)), lv) * s
    # One depth per drop, painted far (z = 1) to near (z = 0): near drops are longer, wider and on top.
    z = np.sort(rng.random(n))[::-1]
    cx = rng.uniform(-0.05 * w, 1.05 * w, n)
    cy = rng.uniform(-0.05 * h, 1.05 * h, n)
    lengths = max_len * (0.25 + 0.75 * (1.0 - z)) * rng.uniform(0.6, 1.2, n)
    widths = s * (0.6 + 1.4 * (1.0 - z) ** 2) * rng.uniform(0.8, 1.2, n)
    angles = angle + np.radians(rng.normal(0.0, 3.0, n))
    bright = rng.uniform(0.15, 0.6, n) * (1.0 - 0.5 * z)
    grey = rng.uniform(0.8, 1.0, n)
    for i in range(n):
        dx, dy = 0.5 * lengths[i] * math.sin(angles[i]), 0.5 * lengths[i] * math.cos(angles[i])
        drawn = _capsule(h, w, cx[i] - dx, cy[i] - dy, cx[i] + dx, cy[i] + dy, widths[i])
        if drawn is None:
            continue
        ys, xs, cov = drawn
        a = (bright[i] * cov)[..., None]
        colour = 0.7 * grey[i] + 0.3 * airlight
        out[ys, xs] = out[ys, xs] * (1.0 - a) + colour * a
    params = {
        "fog_t": t,
        "airlight": airlight.tolist(),
        "drops": n,
        "angle_deg": math.degrees(angle),
        "max_length_px": max_len,
        "mean_brightness": float(bright.mean()),
    }
    return np.clip(out, 0.0, 1.0).astype(np.float32), params


# ----------------------------------------------------------------------------- snow A: noise mask (Snow100K-like)


def _star_polygon(
    h: int, w: int, cx: float, cy: float, radius: float, rng: np.random.Generator, ss: int = 4
) -> tuple[slice, slice, np.ndarray] | None:
    """Coverage (``ss``x``ss`` supersampled) of a random star-shaped polygon of 5-9 vertices around (cx, cy)."""
    nv = int(rng.integers(5, 10))
    theta0 = rng.uniform(0.0, 2 * math.pi)
    theta = theta0 + 2 * math.pi * (np.arange(nv) + rng.uniform(-0.3, 0.3, nv)) / nv
    rad = radius * rng.uniform(0.5, 1.0, nv)
    px, py = rad * np.cos(theta), rad * np.sin(theta)
    xa, xb = max(int(math.floor(cx - radius - 1)), 0), min(int(math.ceil(cx + radius + 2)), w)
    ya, yb = max(int(math.floor(cy - radius - 1)), 0), min(int(math.ceil(cy + radius + 2)), h)
    if xa >= xb or ya >= yb:
        return None
    sub = (np.arange(ss, dtype=np.float64) + 0.5) / ss - 0.5
    gx = (np.arange(xa, xb)[:, None] + sub[None, :]).reshape(-1) - cx
    gy = (np.arange(ya, yb)[:, None] + sub[None, :]).reshape(-1) - cy
    yy, xx = np.meshgrid(gy, gx, indexing="ij")
    phi = np.mod(np.arctan2(yy, xx) - theta[0], 2 * math.pi) + theta[0]
    i = np.clip(np.searchsorted(theta, phi, side="right") - 1, 0, nv - 1)
    j = (i + 1) % nv
    ex, ey = px[j] - px[i], py[j] - py[i]
    ux, uy = np.cos(phi), np.sin(phi)
    # Distance along the ray at phi to the edge (i, j): cross(P_i, e) / cross(u, e).
    denom = ux * ey - uy * ex
    bound = (px[i] * ey - py[i] * ex) / np.where(np.abs(denom) < 1e-9, 1e-9, denom)
    inside = (np.hypot(xx, yy) <= bound).astype(np.float32)
    cov = inside.reshape(yb - ya, ss, xb - xa, ss).mean(axis=(1, 3))
    return slice(ya, yb), slice(xa, xb), cov


def snow_noisemask(clean: np.ndarray, rng: np.random.Generator, density: str) -> tuple[np.ndarray, Params]:
    """Thresholded smoothed-noise flakes of four size classes plus star polygons, alpha-composited in white."""
    h, w = _check(clean)
    lv = _level(density)
    s = max(min(h, w) / 256.0, 0.25)
    area = h * w / 65536.0
    total = _pick(rng, ((0.012, 0.022), (0.03, 0.045), (0.06, 0.09)), lv)  # covered fraction of the image
    sigmas = np.array([0.6, 1.1, 1.9, 3.0]) * s
    share = rng.dirichlet([3.0, 3.0, 2.0, 1.0])
    mask = np.zeros((h, w), np.float32)
    classes = []
    for k, (sig, frac) in enumerate(zip(sigmas, share * total, strict=True)):
        sy, sx = sig * rng.uniform(0.7, 1.4), sig * rng.uniform(0.7, 1.4)
        g = ndimage.gaussian_filter(rng.standard_normal((h, w)).astype(np.float32), (sy, sx), mode="wrap")
        g /= max(float(g.std()), 1e-8)
        thr = float(np.quantile(g, 1.0 - frac))
        gy, gx = np.gradient(g)
        edge = max(float(np.mean(np.hypot(gx, gy))), 1e-3)  # about a one-pixel soft edge
        m = np.clip((g - thr) / edge + 0.5, 0.0, 1.0)
        if k == len(sigmas) - 1:
            m = ndimage.gaussian_filter(m, 0.8 * s)  # the largest class slightly out of focus
        opacity = float(rng.uniform(0.7, 1.0) if k < 2 else rng.uniform(0.55, 0.9))
        mask = 1.0 - (1.0 - mask) * (1.0 - opacity * m)
        classes.append({"sigma_px": [float(sy), float(sx)], "area_fraction": float(frac), "opacity": opacity})
    n_poly = _count(rng, ((2.0, 4.0), (5.0, 9.0), (10.0, 16.0)), lv, area)
    for _ in range(n_poly):
        cx, cy = rng.uniform(0, w), rng.uniform(0, h)
        drawn = _star_polygon(h, w, cx, cy, float(rng.uniform(3.0, 9.0)) * s, rng)
        opacity = float(rng.uniform(0.6, 0.95))
        if drawn is not None:
            ys, xs, cov = drawn
            mask[ys, xs] = 1.0 - (1.0 - mask[ys, xs]) * (1.0 - opacity * cov)
    colour = _tint(rng, float(rng.uniform(0.93, 1.0)), 0.02)
    m3 = mask[..., None]
    out = clean * (1.0 - m3) + colour * m3
    params = {"covered_fraction": total, "classes": classes, "polygons": n_poly, "colour": colour.tolist()}
    return np.clip(out, 0.0, 1.0).astype(np.float32), params


# ----------------------------------------------------------------------------- snow B: bokeh + sharp flakes + haze


def _bokeh_stamp(radius: float, hexagon: bool, rotation: float, inner: float, rim: float, blur: float) -> np.ndarray:
    """A bokeh disc or hexagon of circumradius ``radius`` px: flat ``inner`` level, bright rim, hard edge, peak 1."""
    pad = int(math.ceil(radius + 3 * blur + 2))
    yy, xx = np.mgrid[-pad : pad + 1, -pad : pad + 1].astype(np.float32)
    if hexagon:
        apothem = radius * math.cos(math.pi / 6)
        d = np.max([np.abs(xx * math.cos(a) + yy * math.sin(a)) for a in rotation + np.arange(3) * math.pi / 3], axis=0)
        d, size = d / apothem, apothem
    else:
        d, size = np.hypot(xx, yy) / radius, radius
    profile = inner + (1.0 - inner) * np.clip((d - (1.0 - rim)) / rim, 0.0, 1.0)
    stamp = profile * np.clip((1.0 - d) * size + 0.5, 0.0, 1.0)
    if blur > 0.05:
        stamp = ndimage.gaussian_filter(stamp, blur)
    return (stamp / max(float(stamp.max()), 1e-8)).astype(np.float32)


_SMALL_SHAPES = (
    np.array([[0, 0]]),  # one pixel
    np.array([[0, 0], [0, 1], [1, 0], [1, 1]]),  # 2x2
    np.array([[0, 0], [-1, 0], [1, 0], [0, -1], [0, 1]]),  # plus sign
)


def snow_bokeh(clean: np.ndarray, rng: np.random.Generator, density: str) -> tuple[np.ndarray, Params]:
    """Haze from a smooth random field, additive hexagonal/circular bokeh flakes, and small aliased flakes."""
    h, w = _check(clean)
    lv = _level(density)
    s = max(min(h, w) / 256.0, 0.25)
    area = h * w / 65536.0
    t_lo, t_hi = ((0.86, 0.97), (0.76, 0.9), (0.6, 0.8))[lv]
    field = ndimage.zoom(rng.random((4, 4)), (h / 4.0, w / 4.0), order=3, mode="nearest")[:h, :w]
    field = np.clip(field, 0.0, 1.0).astype(np.float32)
    t = (t_lo + (t_hi - t_lo) * field)[..., None]
    airlight = _tint(rng, float(rng.uniform(0.82, 0.95)), 0.03)
    out = (clean * t + airlight * (1.0 - t)).astype(np.float32)

    n_bokeh = _count(rng, ((3.0, 6.0), (7.0, 12.0), (12.0, 20.0)), lv, area)
    colour = _tint(rng, float(rng.uniform(0.9, 1.0)), 0.03)
    light = np.zeros((h, w), np.float32)
    hexagons = 0
    for _ in range(n_bokeh):
        radius = float(rng.uniform(6.0, 20.0)) * s
        hexagon = bool(rng.random() < 0.5)
        hexagons += hexagon
        stamp = _bokeh_stamp(
            radius,
            hexagon,
            float(rng.uniform(0, math.pi / 3)),
            float(rng.uniform(0.3, 0.6)),
            float(rng.uniform(0.08, 0.2)),
            float(rng.uniform(0.4, 1.5)) * s,
        ) * float(rng.uniform(0.12, 0.35))
        half = stamp.shape[0] // 2
        cy, cx = int(rng.integers(-half // 2, h + half // 2)), int(rng.integers(-half // 2, w + half // 2))
        y0, x0 = cy - half, cx - half
        ya, yb, xa, xb = max(y0, 0), min(y0 + stamp.shape[0], h), max(x0, 0), min(x0 + stamp.shape[1], w)
        if ya < yb and xa < xb:
            light[ya:yb, xa:xb] += stamp[ya - y0 : yb - y0, xa - x0 : xb - x0]
    out = out + light[..., None] * colour  # defocused light adds (linear dodge)

    n_small = _count(rng, ((80.0, 160.0), (250.0, 450.0), (600.0, 1000.0)), lv, area)
    shape = rng.integers(0, len(_SMALL_SHAPES), n_small)
    ys, xs = rng.integers(0, h, n_small), rng.integers(0, w, n_small)
    alpha = rng.uniform(0.55, 1.0, n_small).astype(np.float32)
    mask = np.zeros((h, w), np.float32)
    for k, offsets in enumerate(_SMALL_SHAPES):
        sel = shape == k
        for dy, dx in offsets:
            yy, xx = ys[sel] + dy, xs[sel] + dx
            ok = (yy >= 0) & (yy < h) & (xx >= 0) & (xx < w)
            np.maximum.at(mask, (yy[ok], xx[ok]), alpha[sel][ok])
    m3 = mask[..., None]
    out = out * (1.0 - m3) + colour * m3
    params = {
        "haze_t_range": [t_lo, t_hi],
        "airlight": airlight.tolist(),
        "bokeh": n_bokeh,
        "hexagons": hexagons,
        "small_flakes": n_small,
        "colour": colour.tolist(),
    }
    return np.clip(out, 0.0, 1.0).astype(np.float32), params


# ----------------------------------------------------------------------------- registry

Style = Callable[[np.ndarray, np.random.Generator, str], tuple[np.ndarray, Params]]
STYLES: dict[str, tuple[str, Style]] = {
    "rain_photoshop": ("rain", rain_photoshop),
    "rain_particles": ("rain", rain_particles),
    "snow_noisemask": ("snow", snow_noisemask),
    "snow_bokeh": ("snow", snow_bokeh),
}


def synthesize(clean: np.ndarray, style: str, density: str, rng: np.random.Generator) -> tuple[np.ndarray, Params]:
    """Degrade ``clean`` (float (H, W, 3) in [0, 1]) with ``style`` at ``density``; returns float32 and parameters."""
    if style not in STYLES:
        raise ValueError(f"unknown style {style!r}; expected one of {tuple(STYLES)}")
    task, fn = STYLES[style]
    out, params = fn(np.asarray(clean, dtype=np.float32), rng, density)
    return out, {"style": style, "task": task, "density": density, **params}


# ----------------------------------------------------------------------------- the set


def crop(photo: np.ndarray, size: int, mode: str, rng: np.random.Generator) -> tuple[np.ndarray, list[float]]:
    """A ``size`` square of ``photo`` (uint8), upscaled first if the photo is smaller; returns it and (y, x, scale)."""
    h, w = photo.shape[:2]
    scale = 1.0
    if min(h, w) < size:
        scale = size / min(h, w)
        nw, nh = max(size, round(w * scale)), max(size, round(h * scale))
        photo = np.asarray(Image.fromarray(photo).resize((nw, nh), Image.Resampling.LANCZOS))
        h, w = photo.shape[:2]
    if mode == "center":
        y, x = (h - size) // 2, (w - size) // 2
    else:
        y, x = int(rng.integers(0, h - size + 1)), int(rng.integers(0, w - size + 1))
    return np.ascontiguousarray(photo[y : y + size, x : x + size]), [y, x, scale]


def unseen_set(
    n: int = 8,
    size: int = 256,
    seed: int = 0,
    styles: tuple[str, ...] | list[str] = tuple(STYLES),
    crop_mode: str = "random",
    max_side: int = 512,
) -> list[dict[str, Any]]:
    """``n`` images per style of the held-out photographs, degraded by :func:`synthesize`, in memory.

    Image ``i`` of every style uses the same clean crop (photo ``i`` of a seeded permutation, cycling, at a seeded
    position), so styles are compared on the same pictures; densities cycle light, medium, heavy over ``i``. Each
    record has ``name``, ``style``, ``task``, ``density``, ``photo``, ``crop_yx_scale``, ``synth`` (parameters)
    and the uint8 arrays ``input`` and ``target``. The same arguments give the same bytes on every machine.
    """
    from smartassign.data import clean_photos, load_downscaled
    from smartassign.metrics import to_uint8

    unknown = [s for s in styles if s not in STYLES]
    if unknown or not styles:
        raise ValueError(f"unknown styles {unknown}; choose from {', '.join(STYLES)}")
    if n < 1 or size < 16 or crop_mode not in ("random", "center"):
        raise ValueError(f"need n >= 1, size >= 16 and crop_mode random or center, got {n}, {size}, {crop_mode!r}")
    photos = clean_photos("heldout")
    order = np.random.default_rng([seed, 1]).permutation(len(photos))
    crops = []
    for i in range(n):
        path = photos[int(order[i % len(photos)])]
        clean, box = crop(load_downscaled(path, max_side), size, crop_mode, np.random.default_rng([seed, 2, i]))
        crops.append((path, clean, box))
    items = []
    for si, style in enumerate(styles):
        for i, (path, clean, box) in enumerate(crops):
            density = DENSITIES[i % len(DENSITIES)]
            degraded, params = synthesize(clean.astype(np.float32) / 255.0, style, density,
                                          np.random.default_rng([seed, 3, si, i]))  # fmt: skip
            items.append(
                {
                    "name": f"{style}-{density}-{i:02d}-{path.stem}",
                    "style": style,
                    "task": STYLES[style][0],
                    "density": density,
                    "photo": str(path),
                    "crop_yx_scale": box,
                    "synth": params,
                    "input": to_uint8(degraded),
                    "target": clean,
                }
            )
    return items


def score_item(restorer: Any, degraded: np.ndarray, clean: np.ndarray, task: str) -> dict[str, Any]:
    """One image restored by ``restorer`` (a :class:`smartassign.Restorer`) in one pass: scores of the input, of
    the picture a user gets (``auto``: the head its recognition picks) and of the true task's head (``true``),
    the ``detected`` task, its ``confidence``, whether it is ``correct``, the pass's ``seconds`` and the uint8
    ``auto_image``."""
    import time

    from smartassign.metrics import score, to_uint8

    start = time.perf_counter()
    each, detected, confidence = restorer.restore_each(degraded)
    detected = detected or task  # a model without recognition restores the task it is given
    seconds = time.perf_counter() - start
    auto = to_uint8(each[detected])
    return {
        "input": score(degraded, clean).as_dict(),
        "auto": {**score(auto, clean).as_dict(), "seconds": seconds},
        "true": {**score(each[task], clean).as_dict(), "seconds": seconds},
        "detected": detected,
        "confidence": confidence,
        "correct": detected == task,
        "auto_image": auto,
    }


__all__ = ["DENSITIES", "STYLES", "crop", "score_item", "synthesize", "unseen_set"]
