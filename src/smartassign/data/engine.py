"""The synthetic rain and snow engine: batched PyTorch, the same code on CPU and CUDA.

``degrade(clean, task, seeds, cfg)`` turns clean images ``(B, 3, H, W)`` in [0, 1] into rainy or snowy ones.
The image-formation models are those the public benchmark sets were made with:

* Rain (Rain100L/H, Rain1200, JORDER's accumulation model): ``O = screen(J·t + A·(1−t), S·A)``. ``S`` stacks
  1–4 streak layers at different depths; each layer is a few sub-layers of motion-blurred drops whose length,
  width, angle and brightness jitter around the layer's own; near layers are longer, thicker and defocused.
  Rain screens light onto the scene, so a streak is never darker than what it covers; optionally
  (``rain_refract_p``) drops are composited over it in the colour they refract, and can be darker. Optional shape
  breadth: hard-edged, flat-cored or uniform streaks (``rain_profile_power``, ``rain_end_fade``), and light added
  rather than screened (``rain_additive_p``).
* Snow (Snow100K, SRRS, CSD): ``O = (J·t + A·(1−t))·(1−M) + C·M``. The flake matte ``M`` stacks layers of three
  size classes (far dust, mid flakes, large near flakes) with irregular outlines, translucency, out-of-focus
  (bokeh) near flakes and wind-streaked flakes. Optional breadth: a dense speckle class, turbulent clustering, and
  lens-side flakes that add light as images of the aperture (``snow_glow``).
* Both: with probability ``clear_p`` a sample is left without weather (the camera side still applies). The veil
  ``t = exp(−β·d)`` follows a depth proxy made from the scene (bright, flat areas such as sky
  are far: a dark-channel cue) blended with a horizon ramp and smooth relief, or (``veil_field_p``) mostly a
  smooth random field, mist in banks; then the camera: mild blur,
  resampling, signal-dependent sensor noise and JPEG recompression at a random quality.

Randomness is a counter-based hash of ``(seed of the sample, stream, index)``: no generator state, so a sample
depends only on its own seed (batched and one-by-one give the same pixels), and CPU and CUDA draw the same
numbers. Every distribution is a field of :class:`smartassign.config.DegradationConfig`; named mixes are in
:data:`smartassign.config.DEGRADATION_MIXES`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, Literal

import torch
import torch.nn.functional as F

from smartassign.config import DegradationConfig, degradation_mix

Task = Literal["rain", "snow"]
TASKS: tuple[Task, Task] = ("rain", "snow")
_MASK32 = 0xFFFFFFFF
# Streams of the hash: every random quantity gets its own, so adding a knob never shifts the others.
_S_PARAM, _S_SEEDS, _S_NOISE, _S_RELIEF, _S_JITTER, _S_SCENE, _S_CLUSTER = 1, 2, 3, 4, 5, 6, 7
# Lens-side breadth (patchy mist, aperture glow): parameter tables, the mist's grid, the glow's jitter and drops.
_S_MIST_PARAM, _S_GLOW_PARAM, _S_MIST, _S_GLOW, _S_GLOW_SEEDS = 18, 20, 41, 43, 9000
_S_REFRACT_PARAM = 22  # refracting rain drops
_S_NEAR_PARAM = 24  # veil in front of the nearest surface
_S_FINE_PARAM, _S_FINE_JITTER, _S_FINE_SEEDS = 26, 9200, 9100  # fine rain: its table, streak jitter, drops
_S_CLEAR_PARAM = 28  # samples left without weather
_S_SHAPE_PARAM, _S_SHAPE_JITTER = 30, 9300  # streak shape breadth: blend mode (per sample), profile (per group)


# ----------------------------------------------------------------------------- randomness


def _hash(x: torch.Tensor) -> torch.Tensor:
    """A 32-bit integer mixer (two rounds of xorshift-multiply) on int64 holding values < 2**32."""
    for mult in (0x7FEB352D, 0x68E31DA5):
        x = x ^ (x >> 16)
        x = (x * mult) & _MASK32  # mult < 2**31 and x < 2**32: the product fits in int64
    return x ^ (x >> 15)


def uniform(seeds: torch.Tensor, stream: int, shape: Sequence[int], device: torch.device) -> torch.Tensor:
    """``(B, *shape)`` uniforms in [0, 1) from a hash of (seed, stream, index); float32."""
    n = math.prod(shape)
    idx = torch.arange(n, device=device, dtype=torch.int64)
    base = _hash((seeds.to(device, torch.int64)[:, None] * 0x9E3779B1 + stream * 0x85EBCA6B) & _MASK32)
    x = _hash((base + idx[None, :] * 0x27D4EB2F) & _MASK32)
    return ((x >> 8).to(torch.float32) / float(1 << 24)).reshape(len(seeds), *shape)


def _normal(seeds: torch.Tensor, stream: int, shape: Sequence[int], device: torch.device) -> torch.Tensor:
    """Standard normals by Box-Muller from two uniform streams."""
    u1 = uniform(seeds, stream, shape, device).clamp(min=1e-7)
    u2 = uniform(seeds, stream + 1000, shape, device)
    return torch.sqrt(-2.0 * torch.log(u1)) * torch.cos(2 * math.pi * u2)


class _Params:
    """Per-sample scalar draws: ``p.between(lo, hi)`` etc. each consume the next column of one uniform table."""

    def __init__(self, seeds: torch.Tensor, device: torch.device, stream: int, count: int = 256) -> None:
        self.u = uniform(seeds, stream, (count,), device)
        self.k = 0

    def next(self) -> torch.Tensor:
        """``(B,)`` uniforms in [0, 1)."""
        col = self.u[:, self.k]
        self.k += 1
        return col

    def between(self, lo_hi: tuple[float, float]) -> torch.Tensor:
        """``(B,)`` uniform in [lo, hi]."""
        lo, hi = lo_hi
        return lo + (hi - lo) * self.next()

    def log_between(self, lo_hi: tuple[float, float]) -> torch.Tensor:
        """``(B,)`` log-uniform in [lo, hi] (both > 0)."""
        lo, hi = lo_hi
        return torch.exp(math.log(lo) + (math.log(hi) - math.log(lo)) * self.next())

    def chance(self, p: float) -> torch.Tensor:
        """``(B,)`` bool, true with probability ``p``."""
        return self.next() < p


# ----------------------------------------------------------------------------- building blocks


def _grid(size: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    r = torch.arange(size, device=device, dtype=torch.float32) - size // 2
    return r[None, :].expand(size, size), r[:, None].expand(size, size)  # x (columns), y (rows)


def fft_size(n: int) -> int:
    """The least ``m >= n`` whose only prime factors are 2, 3 and 5: FFTs of such sizes are several times faster
    than of sizes with a large prime factor (``256 + 83 = 339 = 3 * 113``)."""
    m = n
    while True:
        r = m
        for p in (2, 3, 5):
            while r % p == 0:
                r //= p
        if r == 1:
            return m
        m += 1


def _fft_conv(maps: torch.Tensor, kernels: torch.Tensor) -> torch.Tensor:
    """Per-map 'same' convolution by FFT: ``(N, H, W)`` with ``(N, k, k)`` (k odd) -> ``(N, H, W)``; zero padded
    (any FFT size of at least ``H + k - 1`` gives the linear convolution; a 2-3-5-smooth one is fastest)."""
    n, h, w = maps.shape
    k = kernels.shape[-1]
    ph, pw = fft_size(h + k - 1), fft_size(w + k - 1)
    fm = torch.fft.rfft2(maps, s=(ph, pw))
    fk = torch.fft.rfft2(kernels, s=(ph, pw))
    out = torch.fft.irfft2(fm * fk, s=(ph, pw))
    c = k // 2
    return out[:, c : c + h, c : c + w]


def _streak_kernels(
    length: torch.Tensor,
    width: torch.Tensor,
    angle: torch.Tensor,
    size: int,
    power: torch.Tensor | None = None,
    fade: torch.Tensor | None = None,
) -> torch.Tensor:
    """Motion-blurred drops ``(N, size, size)``, peak 1: a segment of ``length`` px at ``angle`` (rad from vertical),
    cross-section ``exp(−½·|d/width|^power)`` (``power`` 2, the default, a Gaussian; larger, a flat core with a
    hard edge, the ends sharpened alike), brightness ``1 − fade·(2s/length)²`` along it (``fade`` 0.6 by default:
    bright mid-exposure, dimmer ends; 0, a uniform line)."""
    x, y = _grid(size, length.device)
    s, c = torch.sin(angle)[:, None, None], torch.cos(angle)[:, None, None]
    along = x * s + y * c
    across = x * c - y * s
    half = (length / 2).clamp(min=0.5)[:, None, None]
    w = width.clamp(min=0.3)[:, None, None]
    if power is None:
        body = torch.sigmoid(2.0 * (half - along.abs()))  # soft ends, anti-aliased at any angle
        cross = torch.exp(-0.5 * (across / w) ** 2)
    else:
        pw = power[:, None, None]
        body = torch.sigmoid(pw * (half - along.abs()))
        cross = torch.exp(-0.5 * (across.abs() / w) ** pw)
    f = 0.6 if fade is None else fade[:, None, None]
    profile = cross * (1.0 - f * (along / half).clamp(-1, 1) ** 2)
    k = body * profile
    return k / k.amax(dim=(1, 2), keepdim=True).clamp(min=1e-6)


def _flake_kernels(
    radius: torch.Tensor,
    softness: torch.Tensor,
    motion: torch.Tensor,
    angle: torch.Tensor,
    wobble: torch.Tensor,
    phase: torch.Tensor,
    ring: torch.Tensor,
    size: int,
) -> torch.Tensor:
    """Flake mattes ``(N, size, size)``, peak 1: an irregular disc (radius modulated by ``wobble`` at 3 and 5 lobes)
    stretched into a capsule by ``motion`` px along ``angle`` (wind), with an edge ``softness`` (defocus) and,
    for bokeh, a brighter rim (``ring`` in [0, 1])."""
    x, y = _grid(size, radius.device)
    s, c = torch.sin(angle)[:, None, None], torch.cos(angle)[:, None, None]
    along = x * s + y * c
    across = x * c - y * s
    half = (motion / 2)[:, None, None]
    along_out = (along.abs() - half).clamp(min=0)  # distance from the motion segment, not from a point
    dist = torch.sqrt(along_out**2 + across**2)
    theta = torch.atan2(across, along)
    p = phase[:, None, None]
    r = radius[:, None, None] * (
        1 + wobble[:, None, None] * (0.6 * torch.cos(3 * theta + p) + 0.4 * torch.cos(5 * theta + 2.1 * p))
    )
    edge = (softness[:, None, None] * radius[:, None, None]).clamp(min=0.5)
    k = ((r + edge - dist) / (2 * edge)).clamp(0, 1)
    k = k * k * (3 - 2 * k)  # smoothstep edge
    rim = torch.exp(-0.5 * ((dist - r) / edge.clamp(min=0.7)) ** 2)
    k = k * (1 - 0.5 * ring[:, None, None]) + ring[:, None, None] * 0.5 * rim * (dist < r + 2 * edge)
    return k / k.amax(dim=(1, 2), keepdim=True).clamp(min=1e-6)


def _aperture_kernels(
    radius: torch.Tensor, sides: torch.Tensor, turn: torch.Tensor, rim: torch.Tensor, edge: torch.Tensor, size: int
) -> torch.Tensor:
    """Images of the lens aperture ``(N, size, size)``, peak 1: a flat regular polygon of ``sides`` (0 = a disc)
    and inscribed ``radius`` px turned by ``turn`` rad, a hard edge ``edge`` px wide and a rim ``rim`` brighter."""
    x, y = _grid(size, radius.device)
    dist = torch.sqrt(x**2 + y**2)[None]
    n = sides.clamp(min=3)[:, None, None]
    sector = 2 * math.pi / n
    theta = torch.remainder(torch.atan2(y, x)[None] + turn[:, None, None], sector) - sector / 2
    polygon = dist * torch.cos(theta)  # distance along the normal of the nearest side
    rr = torch.where((sides > 0)[:, None, None], polygon, dist)
    r, e = radius[:, None, None], edge.clamp(min=0.5)[:, None, None]
    inside = ((r - rr) / e + 0.5).clamp(0, 1)
    ring = torch.exp(-0.5 * ((r - rr) / (0.12 * r).clamp(min=0.7)) ** 2)
    k = inside * (1 + rim[:, None, None] * ring)
    return k / k.amax(dim=(1, 2), keepdim=True).clamp(min=1e-6)


def _glow_layer(
    seeds: torch.Tensor, cfg: DegradationConfig, dims: tuple[float, int, int], s: torch.Tensor, amount: torch.Tensor
) -> torch.Tensor:
    """``(B, H, W)`` the light that lens-side flakes add: :func:`_aperture_kernels` dropped at ``cfg.snow_glow``
    density, each group with its own size, shape and brightness; zeros where a sample draws none."""
    s_hi, h, w = dims
    dev = seeds.device
    g = _Params(seeds, dev, _S_GLOW_PARAM)
    r_lo, r_hi, dens_lo, dens_hi, p_glow = cfg.snow_glow
    on = g.chance(p_glow).float()
    density = torch.exp(math.log(dens_lo) + (math.log(dens_hi) - math.log(dens_lo)) * amount) / 1e4
    density = density * g.log_between((0.6, 1.6))
    gain = g.between(cfg.snow_glow_gain) * on
    subs = 2
    jit = uniform(seeds, _S_GLOW, (subs, 6), dev)
    radius = torch.exp(math.log(r_lo) + (math.log(r_hi) - math.log(r_lo)) * jit[..., 0]) * s[:, None]
    sides = torch.tensor([0.0, 5.0, 6.0, 8.0], device=dev)[(jit[..., 1] * 4).long().clamp(max=3)]
    kernels = _aperture_kernels(
        radius.reshape(-1), sides.reshape(-1), (2 * math.pi * jit[..., 2]).reshape(-1),
        (0.8 * jit[..., 3]).reshape(-1), ((0.5 + 1.5 * jit[..., 4]) * s[:, None]).reshape(-1),
        int(2 * math.ceil(r_hi * s_hi * 1.25) + 5),
    )  # fmt: skip
    rendered = _drop_groups(seeds, _S_GLOW_SEEDS, density / subs, kernels, subs, h, w).clamp(min=0)
    rendered = rendered * (0.5 + 0.5 * jit[..., 5])[:, :, None, None]
    return rendered.sum(dim=1) * gain[:, None, None]


def _drop_groups(
    seeds: torch.Tensor, stream: int, density: torch.Tensor, kernels: torch.Tensor, subs: int, h: int, w: int
) -> torch.Tensor:
    """``(B, subs, H, W)``: ``subs`` groups of drops, group ``j`` the impulses of hash stream ``stream + j`` at
    ``density`` per pixel (see :func:`_sparse_seeds`) drawn with its own kernel of ``kernels`` ``(B·subs, k, k)``;
    not clamped."""
    imp = torch.stack([_sparse_seeds(seeds, stream + j, density, h, w) for j in range(subs)], dim=1)
    return _fft_conv(imp.reshape(-1, h, w), kernels).reshape(len(seeds), subs, h, w)


def _sparse_seeds(seeds: torch.Tensor, stream: int, density: torch.Tensor, h: int, w: int) -> torch.Tensor:
    """Impulse maps ``(B, H, W)``: each pixel holds a drop with probability ``density`` ((B,) or a (B, H, W) map),
    amplitude 0.5-1."""
    u = uniform(seeds, stream, (h, w), density.device)
    amp = uniform(seeds, stream + 500, (h, w), density.device)
    d = density if density.ndim == 3 else density[:, None, None]
    return (u < d).float() * (0.5 + 0.5 * amp)


def _blur(x: torch.Tensor, sigma: torch.Tensor, max_sigma: float) -> torch.Tensor:
    """Per-sample separable Gaussian blur of ``(B, C, H, W)`` with ``sigma`` (B,) px (0 leaves the image as is).

    The kernel radius comes from ``max_sigma``, not from the batch, so a sample blurs the same in any batch."""
    b, ch, h, w = x.shape
    radius = int(math.ceil(3 * max_sigma))
    if radius < 1:
        return x
    t = torch.arange(-radius, radius + 1, device=x.device, dtype=x.dtype)
    g = torch.exp(-0.5 * (t[None] / sigma.clamp(min=1e-3)[:, None]) ** 2)
    g = g / g.sum(dim=1, keepdim=True)
    g = torch.where(sigma[:, None] > 0.05, g, (t[None] == 0).to(x.dtype))
    weight = g.repeat_interleave(ch, dim=0)  # (B*C, 2r+1)
    flat = x.reshape(1, b * ch, h, w)
    pad = min(radius, h - 1, w - 1)
    weight = weight[:, radius - pad : radius + pad + 1]
    flat = F.conv2d(F.pad(flat, (pad, pad, 0, 0), mode="reflect"), weight[:, None, None, :], groups=b * ch)
    flat = F.conv2d(F.pad(flat, (0, 0, pad, pad), mode="reflect"), weight[:, None, :, None], groups=b * ch)
    return flat.reshape(b, ch, h, w)


def depth_proxy(clean: torch.Tensor, seeds: torch.Tensor, p: _Params, cfg: DegradationConfig) -> torch.Tensor:
    """A scene depth in [0, 1] ``(B, 1, H, W)``: bright, low-saturation, smooth areas (sky) far, a horizon ramp,
    and smooth random relief, mixed per sample."""
    b, _, h, w = clean.shape
    dev = clean.device
    small = F.adaptive_avg_pool2d(clean, (max(h // 8, 1), max(w // 8, 1)))
    dark = -F.max_pool2d(-small.amin(dim=1, keepdim=True), 3, stride=1, padding=1)  # dark channel: haze/sky cue
    dark = F.interpolate(F.avg_pool2d(dark, 3, stride=1, padding=1), size=(h, w), mode="bilinear", align_corners=False)
    lo = dark.amin(dim=(2, 3), keepdim=True)
    hi = dark.amax(dim=(2, 3), keepdim=True)
    scene = (dark - lo) / (hi - lo).clamp(min=0.05)
    horizon = p.between((0.2, 0.7))[:, None, None, None]
    rows = torch.linspace(0, 1, h, device=dev)[None, None, :, None]
    ramp = (1.0 - rows / (1.0 - horizon + 1e-6) + horizon).clamp(0, 1)
    relief = F.interpolate(uniform(seeds, _S_RELIEF, (1, 4, 4), dev), size=(h, w), mode="bilinear", align_corners=True)
    mix = p.between(cfg.depth_scene_weight)[:, None, None, None]
    d = mix * scene + (1 - mix) * ramp + 0.35 * (relief - 0.5)
    return d.clamp(0, 1)


def mist_field(seeds: torch.Tensor, h: int, w: int) -> torch.Tensor:
    """``(B, 1, H, W)`` in [0, 1]: mist in banks and patches, two octaves (3x3 and 7x7 random grids, bicubic
    zoom) stretched to the full range per sample; it follows no depth."""
    dev = seeds.device
    coarse = uniform(seeds, _S_MIST, (1, 3, 3), dev)
    fine = uniform(seeds, _S_MIST + 1, (1, 7, 7), dev)
    zoom = lambda g: F.interpolate(g, size=(h, w), mode="bicubic", align_corners=True)  # noqa: E731
    f = 0.7 * zoom(coarse) + 0.3 * zoom(fine)
    lo, hi = f.amin(dim=(2, 3), keepdim=True), f.amax(dim=(2, 3), keepdim=True)
    return (f - lo) / (hi - lo).clamp(min=1e-3)


def _veil(
    clean: torch.Tensor, seeds: torch.Tensor, p: _Params, cfg: DegradationConfig, light: torch.Tensor,
    beta: torch.Tensor,
) -> torch.Tensor:
    """``J·t + A·(1−t)`` with ``t = exp(−β·d)``: ``d`` the depth proxy or, with probability ``cfg.veil_field_p``,
    mostly a :func:`mist_field`; with probability ``cfg.veil_near_p`` it starts at ``d0 ~ U(cfg.veil_near)`` rather
    than 0 (each with its own draws: mixes without them keep their pixels)."""
    d = depth_proxy(clean, seeds, p, cfg)
    if cfg.veil_field_p > 0:
        m = _Params(seeds, clean.device, _S_MIST_PARAM)
        patchy = m.chance(cfg.veil_field_p)
        weight = (m.between((0.6, 1.0)) * patchy)[:, None, None, None]
        d = weight * mist_field(seeds, *clean.shape[2:]) + (1 - weight) * d
    if cfg.veil_near_p > 0:
        q = _Params(seeds, clean.device, _S_NEAR_PARAM)
        near = q.chance(cfg.veil_near_p)
        d0 = (q.between(cfg.veil_near) * near)[:, None, None, None]
        d = d0 + (1 - d0) * d
    t = torch.exp(-beta[:, None, None, None] * d)
    return clean * t + light[:, :, None, None] * (1 - t)


def _airlight(p: _Params, brightness: tuple[float, float]) -> torch.Tensor:
    """``(B, 3)`` a near-white veil colour: grey to slightly blue or warm."""
    base = p.between(brightness)
    tint = p.between((-0.04, 0.04))
    return torch.stack([base - tint, base, base + tint], dim=1).clamp(0, 1)


# ----------------------------------------------------------------------------- the two weathers


def weather_scale(seeds: torch.Tensor, h: int, w: int, cfg: DegradationConfig, device: torch.device) -> torch.Tensor:
    """``(B,)`` the factor on every size in ``cfg`` (given for a 256-pixel image).

    By default the weather is sized for the image itself, ``min(H, W) / 256``. With ``cfg.scene_side`` set, each
    sample is a piece of a larger (or smaller) picture whose short side is log-uniform in that range, so a 128²
    training crop carries the streaks and flakes of a 256-768 pixel photo rather than half-size ones.
    """
    b = seeds.shape[0]
    lo, hi = cfg.scene_side
    if hi <= 0:
        return torch.full((b,), scale_bound(h, w, cfg), device=device)  # one size: the bound itself
    u = uniform(seeds, _S_SCENE, (1,), device)[:, 0]
    side = torch.exp(math.log(lo) + (math.log(hi) - math.log(lo)) * u)
    return (side / 256.0).clamp(min=0.25)


def scale_bound(h: int, w: int, cfg: DegradationConfig) -> float:
    """The largest :func:`weather_scale` of an ``H x W`` image under ``cfg``: it sizes the kernel grids."""
    hi = cfg.scene_side[1]
    return max((hi if hi > 0 else min(h, w)) / 256.0, 0.25)



def add_rain(clean: torch.Tensor, seeds: torch.Tensor, cfg: DegradationConfig) -> tuple[torch.Tensor, dict]:
    """Rain streaks and rain veil on ``clean`` ``(B, 3, H, W)``; returns the rainy image and per-sample parameters."""
    b, _, h, w = clean.shape
    dev = clean.device
    s = weather_scale(seeds, h, w, cfg, dev)
    p = _Params(seeds, dev, _S_PARAM)
    n_layers = cfg.rain_layers[1]
    active_layers = torch.floor(p.between((cfg.rain_layers[0], cfg.rain_layers[1] + 0.999)))
    angle = torch.deg2rad(p.between(cfg.rain_angle_deg))
    # One overall amount (drizzle to downpour) scales every layer's density and brightness together.
    amount = p.between(cfg.amount)
    light = _airlight(p, cfg.veil_brightness)
    has_veil = p.chance(cfg.rain_veil_p)
    beta = torch.where(has_veil, p.log_between(cfg.rain_veil_beta), torch.zeros(b, device=dev))
    beta = beta * (0.3 + 0.7 * amount)
    ksize = int(2 * math.ceil(cfg.rain_length_px[1] * scale_bound(h, w, cfg) * 1.3 / 2) + 5)
    shaped = cfg.rain_profile_power != (2.0, 2.0) or cfg.rain_end_fade != (0.6, 0.6)
    streaks = torch.zeros(b, h, w, device=dev)
    for layer in range(n_layers):
        z = (layer + 0.5 + 0.6 * (p.next() - 0.5)) / n_layers  # 0 near, 1 far; one stratum per layer
        on = (active_layers > layer).float()
        density = torch.exp(
            math.log(cfg.rain_density[0]) + (math.log(cfg.rain_density[1]) - math.log(cfg.rain_density[0])) * amount
        ) * p.log_between((0.5, 2.0)) * (1.0 + 1.5 * z)
        length = p.between(cfg.rain_length_px) * s * (1.0 - 0.5 * z)
        width = p.between(cfg.rain_width_px) * s * (1.0 - 0.5 * z)
        bright = p.between(cfg.rain_brightness) * (1.0 - 0.4 * z) * (0.6 + 0.4 * amount)
        layer_angle = angle + torch.deg2rad(4.0 * (p.next() - 0.5))
        near = p.chance(cfg.rain_defocus_p) & (z < 0.5)
        defocus = torch.where(near, 1.0 + 2.0 * p.next(), torch.zeros(b, device=dev))  # near drops out of focus
        subs = cfg.rain_sublayers
        jit = uniform(seeds, _S_JITTER + 10 * layer, (subs, 4), dev)  # per-streak-group jitter
        k_len = (length[:, None] * (0.7 + 0.6 * jit[..., 0])).reshape(-1)
        k_wid = ((width[:, None] * (0.7 + 0.6 * jit[..., 1])) + (defocus * s)[:, None]).reshape(-1)
        k_ang = (layer_angle[:, None] + torch.deg2rad(cfg.rain_angle_jitter_deg * (jit[..., 2] - 0.5) * 2)).reshape(-1)
        k_pow = k_fade = None
        if shaped:  # per-group profile from its own stream, so mixes without it keep their pixels
            sj = uniform(seeds, _S_SHAPE_JITTER + 10 * layer, (subs, 2), dev)
            lo, hi = cfg.rain_profile_power
            k_pow = (lo * (hi / lo) ** sj[..., 0]).reshape(-1)  # log-uniform
            k_fade = (cfg.rain_end_fade[0] + (cfg.rain_end_fade[1] - cfg.rain_end_fade[0]) * sj[..., 1]).reshape(-1)
        kernels = _streak_kernels(k_len, k_wid, k_ang, ksize, k_pow, k_fade)
        amp = 0.75 + 0.5 * jit[..., 3]  # per-group brightness
        rendered = _drop_groups(seeds, _S_SEEDS + 100 * layer, density / subs, kernels, subs, h, w).clamp(0, 1)
        rendered = rendered * amp[:, :, None, None]
        layer_map = (1 - torch.prod(1 - rendered.clamp(0, 1), dim=1)) * (bright * on)[:, None, None]
        layer_map = layer_map / (1 + 0.5 * defocus[:, None, None])  # a defocused drop spreads its light
        streaks = 1 - (1 - streaks) * (1 - layer_map.clamp(0, 1))
    params = {"amount": amount, "layers": active_layers, "angle_deg": torch.rad2deg(angle), "veil_beta": beta}
    if cfg.rain_fine_p > 0:
        fine, params["fine"] = _fine_rain(seeds, cfg, s, angle, h, w)
        streaks = 1 - (1 - streaks) * (1 - fine)
    veiled = _veil(clean, seeds, p, cfg, light, beta)
    lit = streaks[:, None] * light[:, :, None, None]
    out = 1 - (1 - veiled) * (1 - lit)
    if cfg.rain_additive_p > 0:
        # Linear dodge: streak light added, not screened, so it saturates bright areas to white.
        additive = _Params(seeds, dev, _S_SHAPE_PARAM).chance(cfg.rain_additive_p)
        out = torch.where(additive[:, None, None, None], veiled + lit, out)
        params["additive"] = additive.float()
    if cfg.rain_refract_p > 0:
        r = _Params(seeds, dev, _S_REFRACT_PARAM)  # its own table: mixes without it keep their pixels
        refract = r.chance(cfg.rain_refract_p)
        gain = r.between(cfg.rain_refract_gain)[:, None, None, None]
        opacity = r.between((0.6, 1.0))[:, None, None, None]
        # A drop is a wide-angle lens: it shows the scene upside down and blurred, plus some of the veil's light.
        view = F.interpolate(
            F.adaptive_avg_pool2d(clean.flip(2), (max(h // 16, 1), max(w // 16, 1))), size=(h, w), mode="bilinear",
            align_corners=False,
        )
        drop = (0.75 * gain * view + 0.25 * light[:, :, None, None]).clamp(0, 1)
        alpha = streaks[:, None] * opacity
        out = torch.where(refract[:, None, None, None], veiled * (1 - alpha) + drop * alpha, out)
        params["refract"] = refract.float()
    return out.clamp(0, 1), params


def _fine_rain(
    seeds: torch.Tensor, cfg: DegradationConfig, s: torch.Tensor, angle: torch.Tensor, h: int, w: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(B, H, W)`` streak light of the fine-rain layer (zeros where a sample draws none) and ``(B,)`` 1/0 whether it
    drew one: dense, short, faint streaks along the rain's direction (±6°), two jittered streak groups; drawn from
    their own tables, so mixes without it keep their pixels."""
    dev = seeds.device
    q = _Params(seeds, dev, _S_FINE_PARAM)
    on = q.chance(cfg.rain_fine_p)
    density = q.log_between(cfg.rain_fine_density) * on
    length = q.log_between(cfg.rain_fine_length_px) * s
    width = q.between((0.4, 0.9)) * s
    bright = q.between(cfg.rain_fine_brightness)
    ang = angle + torch.deg2rad(12.0 * (q.next() - 0.5))
    subs = 2
    jit = uniform(seeds, _S_FINE_JITTER, (subs, 3), dev)
    k_len = (length[:, None] * (0.7 + 0.6 * jit[..., 0])).reshape(-1)
    k_wid = (width[:, None] * (0.8 + 0.4 * jit[..., 1])).reshape(-1)
    k_ang = (ang[:, None] + torch.deg2rad(6.0 * (jit[..., 2] - 0.5))).reshape(-1)
    ksize = int(2 * math.ceil(cfg.rain_fine_length_px[1] * scale_bound(h, w, cfg) * 1.3 / 2) + 5)
    kernels = _streak_kernels(k_len, k_wid, k_ang, ksize)
    rendered = _drop_groups(seeds, _S_FINE_SEEDS, density / subs, kernels, subs, h, w).clamp(0, 1)
    return (1 - torch.prod(1 - rendered, dim=1)) * bright[:, None, None], on.float()


def _cluster_field(
    seeds: torch.Tensor, q: _Params, cfg: DegradationConfig, s: torch.Tensor, h: int, w: int
) -> torch.Tensor:
    """``(B, H, W)`` the turbulent modulation of flake density, mean about 1: ``exp(σ·g − σ²/2)`` with ``g`` white
    noise low-passed by a Gaussian of ``snow_cluster_px`` (scaled by ``s``) and normalised to unit variance;
    ones where a sample draws no clustering."""
    dev = seeds.device
    on = q.chance(cfg.snow_cluster_p)
    length = q.log_between(cfg.snow_cluster_px) * s
    sigma = q.between(cfg.snow_cluster_sigma) * on
    if not bool(on.any()):
        return torch.ones(len(seeds), h, w, device=dev)
    noise = _normal(seeds, _S_CLUSTER, (h, w), dev)
    fy = torch.fft.fftfreq(h, device=dev)[:, None]
    fx = torch.fft.rfftfreq(w, device=dev)[None, :]
    transfer = torch.exp(-2 * math.pi**2 * length[:, None, None] ** 2 * (fx**2 + fy**2))
    g = torch.fft.irfft2(torch.fft.rfft2(noise) * transfer, s=(h, w))
    g = (g - g.mean(dim=(1, 2), keepdim=True)) / g.std(dim=(1, 2), keepdim=True).clamp(min=1e-6)
    return torch.exp(sigma[:, None, None] * g - 0.5 * sigma[:, None, None] ** 2)


def _flake_layer(
    seeds: torch.Tensor, p: _Params, cfg: DegradationConfig, ci: int, klass: tuple[float, float, float, float, float],
    dims: tuple[float, int, int], s: torch.Tensor, wind: torch.Tensor, amount: torch.Tensor, cluster: torch.Tensor,
    dimming: float, bokeh_ok: bool,
) -> tuple[torch.Tensor, torch.Tensor]:
    """One size class of flakes: ``(B, H, W)`` matte and ``(B,)`` presence. ``dims`` is (scale bound, H, W)."""
    s_hi, h, w = dims
    b, dev = len(seeds), seeds.device
    r_lo, r_hi, dens_lo, dens_hi, p_class = klass
    on = p.chance(p_class).float()
    radius = p.log_between((r_lo, r_hi)) * s
    density = torch.exp(math.log(dens_lo) + (math.log(dens_hi) - math.log(dens_lo)) * amount) / 1e4
    density = density * p.log_between((0.6, 1.6))
    opacity = p.between(cfg.snow_opacity) * (1.0 - dimming)
    bokeh = (p.chance(cfg.snow_bokeh_p) & torch.tensor(bokeh_ok, device=dev)).float()
    softness = p.between((0.15, 0.5)) + bokeh * p.between((0.4, 1.2))
    opacity = opacity * (1 - 0.45 * bokeh)  # out-of-focus flakes spread their light thin
    streaked = p.chance(cfg.snow_motion_p).float()
    motion = streaked * p.between(cfg.snow_motion_ratio) * radius
    # the kernel grid depends on cfg only: a sample's pixels do not depend on its batch
    kmax = int(2 * math.ceil((r_hi * s_hi * (1 + 0.5 + 2.0) + cfg.snow_motion_ratio[1] * r_hi * s_hi) / 2) + 5)
    subs = cfg.snow_shapes
    jit = uniform(seeds, _S_JITTER + 10 * ci, (subs, 5), dev)
    kernels = _flake_kernels(
        (radius[:, None] * (0.7 + 0.6 * jit[..., 0])).reshape(-1),
        softness[:, None].expand(b, subs).reshape(-1),
        motion[:, None].expand(b, subs).reshape(-1),
        (wind[:, None] + torch.deg2rad(20 * (jit[..., 1] - 0.5))).reshape(-1),
        (cfg.snow_irregularity * jit[..., 2]).reshape(-1),
        (2 * math.pi * jit[..., 3]).reshape(-1),
        bokeh[:, None].expand(b, subs).reshape(-1),
        kmax,
    )
    dmap = density[:, None, None] / subs * cluster
    rendered = _drop_groups(seeds, _S_SEEDS + 100 * ci, dmap, kernels, subs, h, w).clamp(0, 1)
    rendered = rendered * (0.6 + 0.4 * jit[..., 4])[:, :, None, None]  # translucency per flake group
    return (1 - torch.prod(1 - rendered, dim=1)) * (opacity * on)[:, None, None], on


def add_snow(clean: torch.Tensor, seeds: torch.Tensor, cfg: DegradationConfig) -> tuple[torch.Tensor, dict]:
    """Snowflakes and snow veil on ``clean`` ``(B, 3, H, W)``; returns the snowy image and per-sample parameters."""
    b, _, h, w = clean.shape
    dev = clean.device
    s = weather_scale(seeds, h, w, cfg, dev)
    p = _Params(seeds, dev, _S_PARAM)
    q = _Params(seeds, dev, _S_PARAM + 13)  # the breadth knobs draw from their own table: old mixes keep their pixels
    amount = p.between(cfg.amount)
    wind = torch.deg2rad(p.between(cfg.snow_wind_deg))
    light = _airlight(p, cfg.veil_brightness)
    has_veil = p.chance(cfg.snow_veil_p)
    beta = torch.where(has_veil, p.log_between(cfg.snow_veil_beta), torch.zeros(b, device=dev)) * (0.3 + 0.7 * amount)
    color = (p.between((0.88, 1.0))[:, None] + torch.tensor([-0.01, 0.0, 0.015], device=dev)).clamp(0, 1)
    dims = (scale_bound(h, w, cfg), h, w)
    cluster = _cluster_field(seeds, q, cfg, s, h, w)
    mask = torch.zeros(b, h, w, device=dev)
    # (name, draws, class, distance dimming, may be bokeh); the speckle is far flakes in direct light, not dimmed
    classes = [(name, p, getattr(cfg, f"snow_{name}"), 0.35 * (2 - ci) / 2, name == "near")
               for ci, name in enumerate(("far", "mid", "near"))]  # fmt: skip
    if cfg.snow_speckle[4] > 0:
        classes.append(("speckle", q, cfg.snow_speckle, 0.0, False))
    present = {}
    for ci, (name, draws, klass, dimming, bokeh_ok) in enumerate(classes):
        layer, present[name] = _flake_layer(
            seeds, draws, cfg, ci, klass, dims, s, wind, amount, cluster, dimming=dimming, bokeh_ok=bokeh_ok
        )
        mask = 1 - (1 - mask) * (1 - layer.clamp(0, 1))
    veiled = _veil(clean, seeds, p, cfg, light, beta)
    m = mask[:, None]
    out = veiled * (1 - m) + color[:, :, None, None] * m
    if cfg.snow_glow[4] > 0:  # lens-side flakes add light over everything (linear dodge, clipped below)
        glow = _glow_layer(seeds, cfg, dims, s, amount)
        out = out + glow[:, None] * color[:, :, None, None]
        present["glow"] = (glow.amax(dim=(1, 2)) > 0).float()
    params = {"amount": amount, "wind_deg": torch.rad2deg(wind), "veil_beta": beta, **present}
    return out.clamp(0, 1), params


# ----------------------------------------------------------------------------- the camera

_JPEG_Y = torch.tensor(
    [16, 11, 10, 16, 24, 40, 51, 61, 12, 12, 14, 19, 26, 58, 60, 55, 14, 13, 16, 24, 40, 57, 69, 56,
     14, 17, 22, 29, 51, 87, 80, 62, 18, 22, 37, 56, 68, 109, 103, 77, 24, 35, 55, 64, 81, 104, 113, 92,
     49, 64, 78, 87, 103, 121, 120, 101, 72, 92, 95, 98, 112, 100, 103, 99], dtype=torch.float32,
).reshape(8, 8)  # fmt: skip
_JPEG_C = torch.full((8, 8), 99.0)
_JPEG_C[:4, :4] = torch.tensor([[17, 18, 24, 47], [18, 21, 26, 66], [24, 26, 56, 99], [47, 66, 99, 99]])


def _dct_matrix(device: torch.device) -> torch.Tensor:
    n = torch.arange(8, device=device, dtype=torch.float32)
    m = torch.cos((2 * n[None, :] + 1) * n[:, None] * math.pi / 16) * math.sqrt(2 / 8)
    m[0] = m[0] / math.sqrt(2)
    return m


def jpeg(x: torch.Tensor, quality: torch.Tensor) -> torch.Tensor:
    """Baseline JPEG round trip of ``(B, 3, H, W)`` at per-sample ``quality`` (1-100): YCbCr, 4:2:0 chroma,
    8x8 DCT quantised with the standard tables (IJG scaling), all in floating point."""
    b, _, h, w = x.shape
    dev = x.device
    ph, pw = (-h) % 16, (-w) % 16
    x = F.pad(x, (0, pw, 0, ph), mode="replicate") * 255
    r, g, bl = x.unbind(1)
    y = 0.299 * r + 0.587 * g + 0.114 * bl
    cb = -0.168736 * r - 0.331264 * g + 0.5 * bl + 128
    cr = 0.5 * r - 0.418688 * g - 0.081312 * bl + 128
    q = quality.clamp(1, 100)
    scale = torch.where(q < 50, 5000 / q, 200 - 2 * q)[:, None, None]
    d = _dct_matrix(dev)

    def code(plane: torch.Tensor, table: torch.Tensor) -> torch.Tensor:
        hh, ww = plane.shape[-2:]
        blocks = plane.reshape(b, hh // 8, 8, ww // 8, 8).permute(0, 1, 3, 2, 4) - 128
        qt = ((table.to(dev)[None] * scale + 50) // 100).clamp(1, 255)[:, None, None]
        coef = d @ blocks @ d.T
        coef = torch.round(coef / qt) * qt
        back = d.T @ coef @ d + 128
        return back.permute(0, 1, 3, 2, 4).reshape(b, hh, ww)

    y = code(y, _JPEG_Y)
    chroma = [F.avg_pool2d(c[:, None], 2)[:, 0] for c in (cb, cr)]
    cb, cr = (
        F.interpolate(code(c, _JPEG_C)[:, None], scale_factor=2, mode="bilinear", align_corners=False)[:, 0]
        for c in chroma
    )
    r = y + 1.402 * (cr - 128)
    g = y - 0.344136 * (cb - 128) - 0.714136 * (cr - 128)
    bl = y + 1.772 * (cb - 128)
    out = torch.stack([r, g, bl], dim=1) / 255
    return out[..., :h, :w].clamp(0, 1)


def camera(x: torch.Tensor, seeds: torch.Tensor, cfg: DegradationConfig) -> tuple[torch.Tensor, dict]:
    """Mild blur, resampling, signal-dependent sensor noise and JPEG, each with its probability in ``cfg``."""
    b, _, h, w = x.shape
    dev = x.device
    p = _Params(seeds, dev, _S_PARAM + 7)
    sigma = torch.where(p.chance(cfg.blur_p), p.between(cfg.blur_sigma), torch.zeros(b, device=dev))
    x = _blur(x, sigma, cfg.blur_sigma[1])
    resample = p.chance(cfg.resample_p)
    # A few fixed factors keep it batched: each one resamples the whole batch, a per-sample choice keeps one.
    choice = torch.floor(p.next() * len(cfg.resample_factors)).long()
    for i, f in enumerate(cfg.resample_factors):
        pick = resample & (choice == i)
        if bool(pick.any()):
            small = F.interpolate(x, size=(max(int(h / f), 8), max(int(w / f), 8)), mode="area")
            back = F.interpolate(small, size=(h, w), mode="bilinear", align_corners=False)
            x = torch.where(pick[:, None, None, None], back, x)
    noisy = p.chance(cfg.noise_p)
    shot = p.log_between(cfg.noise_shot) * noisy
    read = p.log_between(cfg.noise_read) * noisy
    std = torch.sqrt(shot[:, None, None, None] * x + read[:, None, None, None] ** 2)
    x = (x + std * _normal(seeds, _S_NOISE, x.shape[1:], dev)).clamp(0, 1)
    quality = p.between(cfg.jpeg_quality)
    compressed = p.chance(cfg.jpeg_p)
    if bool(compressed.any()):
        x = torch.where(compressed[:, None, None, None], jpeg(x, quality), x)
    return x, {"blur_sigma": sigma, "resampled": resample, "noise_shot": shot, "jpeg_quality": quality * compressed}


# ----------------------------------------------------------------------------- the entry point


def seeds_from(generator: torch.Generator | None, n: int, seeds: Sequence[int] | torch.Tensor | None) -> torch.Tensor:
    """Per-sample 32-bit seeds: given, or drawn from ``generator``."""
    if seeds is not None:
        t = torch.as_tensor(seeds, dtype=torch.int64).reshape(-1) & _MASK32
        if len(t) != n:
            raise ValueError(f"got {len(t)} seeds for {n} images")
        return t
    return torch.randint(0, 2**32 - 1, (n,), generator=generator, dtype=torch.int64)


def degrade(
    clean: torch.Tensor,
    task: Task | Sequence[Task],
    generator: torch.Generator | None = None,
    cfg: DegradationConfig | str = "mixed",
    seeds: Sequence[int] | torch.Tensor | None = None,
) -> tuple[torch.Tensor, dict[str, Any]]:
    """Rain or snow on ``clean`` ``(B, 3, H, W)`` in [0, 1]; ``task`` one for all or one per sample.

    Each sample's pixels depend only on its seed (``seeds``, or drawn from ``generator``), the task and ``cfg``
    (a :class:`DegradationConfig` or a mix name): bit-identical on CPU for the same seed, batched or alone.
    Returns the degraded batch (float32, on ``clean``'s device) and a dict of per-sample parameter tensors.
    """
    if clean.ndim != 4 or clean.shape[1] != 3:
        raise ValueError(f"expected clean images (B, 3, H, W), got shape {tuple(clean.shape)}")
    cfg = degradation_mix(cfg) if isinstance(cfg, str) else cfg
    b = clean.shape[0]
    tasks = [task] * b if isinstance(task, str) else list(task)
    if len(tasks) != b or any(t not in TASKS for t in tasks):
        raise ValueError(f"task must be 'rain' or 'snow' (or one per image), got {task!r}")
    s = seeds_from(generator, b, seeds).to(clean.device)
    clean = clean.float()
    out = torch.empty_like(clean)
    params: dict[str, Any] = {"seed": s.cpu(), "task": tasks}
    for name, fn in (("rain", add_rain), ("snow", add_snow)):
        idx = [i for i, t in enumerate(tasks) if t == name]
        if not idx:
            continue
        sel = torch.tensor(idx, device=clean.device)
        degraded, p = fn(clean[sel], s[sel], cfg)
        out[sel] = degraded
        params[name] = {k: v.cpu() for k, v in p.items()}
    if cfg.clear_p > 0:
        clear = _Params(s, clean.device, _S_CLEAR_PARAM).chance(cfg.clear_p)
        out = torch.where(clear[:, None, None, None], clean, out)
        params["clear"] = clear.cpu()
    out, cam = camera(out, s, cfg)
    params["camera"] = {k: v.cpu() for k, v in cam.items()}
    return out, params


__all__ = [
    "TASKS", "Task", "add_rain", "add_snow", "camera", "degrade", "depth_proxy", "jpeg", "mist_field", "scale_bound",
    "uniform", "weather_scale",
]
