"""The degradation engine: seeded, batch-invariant, bounded, and every knob moves the output the intended way."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
import torch
from scipy import ndimage
from skimage import data as skdata

from smartassign.config import DEGRADATION_MIXES, DegradationConfig, degradation_mix
from smartassign.data.engine import (
    _aperture_kernels,
    _streak_kernels,
    add_rain,
    add_snow,
    camera,
    degrade,
    depth_proxy,
    jpeg,
    mist_field,
    uniform,
)
from smartassign.errors import ConfigError

# No camera effects: isolates the weather in tests of the weather.
WEATHER_ONLY = dataclasses.replace(DegradationConfig(), blur_p=0.0, resample_p=0.0, noise_p=0.0, jpeg_p=0.0)


@pytest.fixture(scope="module")
def clean() -> torch.Tensor:
    """Four 96x96 crops of two photos, (4, 3, 96, 96) in [0, 1]."""
    crops = [skdata.chelsea()[:96, 100:196], skdata.chelsea()[100:196, 200:296], skdata.astronaut()[:96, :96],
             skdata.astronaut()[200:296, 300:396]]  # fmt: skip
    return torch.from_numpy(np.stack(crops)).permute(0, 3, 1, 2).float() / 255


def psnr(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return -10 * torch.log10(((a - b) ** 2).mean(dim=(1, 2, 3)))


@pytest.mark.parametrize("task", ["rain", "snow"])
@pytest.mark.parametrize("mix", list(DEGRADATION_MIXES))
def test_shapes_dtype_range_and_no_nan(task, mix, clean):
    out, params = degrade(clean, task, seeds=[0, 1, 2, 3], cfg=mix)
    assert out.shape == clean.shape and out.dtype == torch.float32
    assert torch.isfinite(out).all() and out.min() >= 0 and out.max() <= 1
    assert params["task"] == [task] * 4 and params["seed"].tolist() == [0, 1, 2, 3]


@pytest.mark.parametrize("task", ["rain", "snow"])
def test_same_seed_same_bits_other_seed_differs(task, clean):
    a, _ = degrade(clean, task, seeds=[7, 8, 9, 10])
    b, _ = degrade(clean, task, seeds=[7, 8, 9, 10])
    c, _ = degrade(clean, task, seeds=[70, 80, 90, 100])
    assert torch.equal(a, b)
    assert (a - c).abs().mean() > 1e-3


def test_generator_draws_reproducible_seeds(clean):
    a, pa = degrade(clean, "rain", torch.Generator().manual_seed(3))
    b, pb = degrade(clean, "rain", torch.Generator().manual_seed(3))
    assert torch.equal(a, b) and torch.equal(pa["seed"], pb["seed"])


@pytest.mark.parametrize(
    "mix", ["mixed", "broad", "wide", "wide_lens", "wide_all", "wide_near", "wide_haze", "wide_fine", "wide_clear",
            "wide_rain"]
)
@pytest.mark.parametrize("task", ["rain", "snow"])
def test_batched_and_one_by_one_are_identical(task, mix, clean):
    together, _ = degrade(clean, task, seeds=[11, 12, 13, 14], cfg=mix)
    alone = torch.cat([degrade(clean[i : i + 1], task, seeds=[11 + i], cfg=mix)[0] for i in range(4)])
    assert torch.allclose(together, alone, atol=2e-6)


def test_mixed_tasks_in_one_batch_match_single_task_batches(clean):
    mixed, _ = degrade(clean, ["rain", "snow", "rain", "snow"], seeds=[1, 2, 3, 4])
    rain, _ = degrade(clean[0::2], "rain", seeds=[1, 3])
    snow, _ = degrade(clean[1::2], "snow", seeds=[2, 4])
    assert torch.allclose(mixed[0::2], rain, atol=2e-6) and torch.allclose(mixed[1::2], snow, atol=2e-6)


def test_uniform_is_uniform_and_streams_are_independent():
    seeds = torch.arange(64)
    u = uniform(seeds, 1, (1000,), torch.device("cpu"))
    v = uniform(seeds, 2, (1000,), torch.device("cpu"))
    assert 0 <= u.min() and u.max() < 1 and abs(u.mean().item() - 0.5) < 0.01 and abs(u.std().item() - 0.2887) < 0.01
    assert abs(np.corrcoef(u.flatten().numpy(), v.flatten().numpy())[0, 1]) < 0.02


@pytest.mark.parametrize("task", ["rain", "snow"])
def test_more_amount_means_lower_psnr(task, clean):
    seeds = list(range(4))
    scores = []
    for lo in (0.0, 0.5, 0.95):
        cfg = dataclasses.replace(WEATHER_ONLY, amount=(lo, lo + 0.05))
        scores.append(psnr(degrade(clean, task, cfg=cfg, seeds=seeds)[0], clean).mean().item())
    assert scores[0] > scores[1] > scores[2]
    light = psnr(degrade(clean, task, cfg="light", seeds=seeds)[0], clean).mean()
    heavy = psnr(degrade(clean, task, cfg="heavy", seeds=seeds)[0], clean).mean()
    assert light > heavy + 5


def test_rain_streaks_are_brighter_than_what_they_cover(clean):
    cfg = dataclasses.replace(WEATHER_ONLY, rain_veil_p=0.0)
    out, _ = degrade(clean, "rain", cfg=cfg, seeds=list(range(4)))
    diff = out - clean
    assert (diff >= -1e-6).all()  # screen blending never darkens
    assert (diff.mean(dim=1) > 0.02).float().mean() > 0.01  # and visible streaks exist


def test_veil_raises_the_mean_and_lowers_contrast(clean):
    no_streaks = dataclasses.replace(WEATHER_ONLY, rain_density=(1e-9, 1e-9), rain_veil_p=1.0, amount=(1.0, 1.0))
    out, _ = degrade(clean, "rain", cfg=no_streaks, seeds=list(range(4)))
    assert (out.mean(dim=(1, 2, 3)) > clean.mean(dim=(1, 2, 3))).all()
    assert (out.std(dim=(1, 2, 3)) < clean.std(dim=(1, 2, 3))).all()


def test_depth_proxy_follows_the_scene():
    # A bright, flat top half (sky) over a dark textured bottom: the proxy must call the top far.
    img = torch.zeros(1, 3, 64, 64)
    img[:, :, :32] = 0.9
    img[:, :, 32:] = torch.rand(1, 3, 32, 64, generator=torch.Generator().manual_seed(0)) * 0.3
    flipped = img.flip(2)  # sky at the bottom: a ramp alone would get this wrong
    from smartassign.data.engine import _Params

    cfg = dataclasses.replace(DegradationConfig(), depth_scene_weight=(0.8, 0.8))
    seeds = torch.tensor([5])
    d = depth_proxy(flipped, seeds, _Params(seeds, img.device, 1), cfg)
    assert d[..., 40:, :].mean() > d[..., :24, :].mean()


def test_rain_residual_is_oriented_and_snow_is_not(clean):
    def coherence(degraded: torch.Tensor, base: torch.Tensor) -> float:
        r = (degraded - base).mean(dim=0).numpy()
        r = r - ndimage.gaussian_filter(r, 3)
        gy, gx = np.gradient(r)
        jxx, jyy, jxy = (gx * gx).mean(), (gy * gy).mean(), (gx * gy).mean()
        return float(np.sqrt((jxx - jyy) ** 2 + 4 * jxy**2) / (jxx + jyy))

    rain_cfg = dataclasses.replace(WEATHER_ONLY, rain_angle_deg=(20.0, 20.0), amount=(0.6, 0.8))
    snow_cfg = dataclasses.replace(WEATHER_ONLY, snow_motion_p=0.0, amount=(0.6, 0.8))
    rain, _ = degrade(clean, "rain", cfg=rain_cfg, seeds=list(range(4)))
    snow, _ = degrade(clean, "snow", cfg=snow_cfg, seeds=list(range(4)))
    rain_c = np.mean([coherence(rain[i], clean[i]) for i in range(4)])
    snow_c = np.mean([coherence(snow[i], clean[i]) for i in range(4)])
    assert rain_c > 0.3 > snow_c


@pytest.mark.parametrize("task", ["rain", "snow"])
def test_scene_side_sizes_the_weather_for_the_picture_the_crop_comes_from(task):
    """A 64² crop of a 512-pixel picture carries streaks and flakes 8x the size of a 64-pixel image's."""
    dark = torch.full((6, 3, 64, 64), 0.1)
    base = dataclasses.replace(WEATHER_ONLY, rain_veil_p=0.0, snow_veil_p=0.0, snow_motion_p=0.0, snow_bokeh_p=0.0,
                               rain_defocus_p=0.0, amount=(0.1, 0.1))  # fmt: skip
    own, _ = degrade(dark, task, seeds=range(6), cfg=base)
    same, _ = degrade(dark, task, seeds=range(6), cfg=dataclasses.replace(base, scene_side=(64.0, 64.0)))
    assert torch.equal(own, same)  # a picture of the crop's own size is the default

    def mean_mark_area(x: torch.Tensor) -> float:
        areas = []
        for img in x:
            labels, n = ndimage.label((img.mean(0) > 0.1 + 0.05).numpy())
            areas += list(np.bincount(labels.ravel())[1:]) if n else []
        return float(np.mean(areas))

    large, _ = degrade(dark, task, seeds=range(6), cfg=dataclasses.replace(base, scene_side=(512.0, 512.0)))
    assert mean_mark_area(large) > 4 * mean_mark_area(own)


def test_large_flake_class_present_at_its_rate():
    flat = torch.full((64, 3, 64, 64), 0.3)
    for p_near, lo, hi in ((0.0, -0.01, 0.01), (1.0, 0.99, 1.01), (0.5, 0.3, 0.7)):
        cfg = dataclasses.replace(WEATHER_ONLY, snow_near=(*WEATHER_ONLY.snow_near[:4], p_near))
        _, params = add_snow(flat, torch.arange(64), cfg)
        assert lo <= params["near"].mean().item() <= hi


def test_snow_breadth_adds_to_the_three_classes_without_moving_them():
    """The speckle class and clustering draw from their own table: off, the pixels are those of the plain config;
    speckle on only adds matte (brighter on a dark scene, never darker) and covers many more small marks."""
    dark = torch.full((8, 3, 64, 64), 0.1)
    base = dataclasses.replace(WEATHER_ONLY, snow_veil_p=0.0)
    plain, p_plain = add_snow(dark, torch.arange(8), base)
    off, _ = add_snow(dark, torch.arange(8), dataclasses.replace(base, snow_speckle=(0.25, 0.8, 80.0, 1500.0, 0.0)))
    assert torch.equal(plain, off) and "speckle" not in p_plain
    speckle_cfg = dataclasses.replace(base, snow_speckle=(0.25, 0.8, 400.0, 1500.0, 1.0))
    speckled, p_sp = add_snow(dark, torch.arange(8), speckle_cfg)
    assert p_sp["speckle"].tolist() == [1.0] * 8 and torch.equal(p_sp["amount"], p_plain["amount"])
    assert (speckled >= plain - 1e-6).all()
    marks = lambda img: ndimage.label((img[:, 0] > 0.3).numpy())[1]  # noqa: E731 — connected bright marks
    assert marks(speckled) > 1.5 * marks(plain)


def test_cluster_field_clumps_flakes_and_keeps_their_mean():
    flat = torch.full((16, 3, 96, 96), 0.2)
    base = dataclasses.replace(
        WEATHER_ONLY, amount=(0.5, 0.5), snow_veil_p=0.0, snow_motion_p=0.0, snow_far=(0.5, 0.6, 600.0, 600.0, 1.0),
        snow_mid=(*WEATHER_ONLY.snow_mid[:4], 0.0), snow_near=(*WEATHER_ONLY.snow_near[:4], 0.0),
    )  # one class of small flakes at one density
    clumped_cfg = dataclasses.replace(
        base, snow_cluster_p=1.0, snow_cluster_px=(6.0, 6.0), snow_cluster_sigma=(1.5, 1.5)
    )

    def block_stats(img: torch.Tensor) -> tuple[float, float]:
        cover = torch.nn.functional.avg_pool2d((img[:, :1] - 0.2).clamp(min=0), 16).flatten(1)  # per 16² block
        return cover.mean().item(), (cover.std(dim=1) / cover.mean(dim=1)).mean().item()  # spread within a sample

    even_mean, even_cv = block_stats(add_snow(flat, torch.arange(16), base)[0])
    clumped_mean, clumped_cv = block_stats(add_snow(flat, torch.arange(16), clumped_cfg)[0])
    assert clumped_cv > 2 * even_cv  # clumps and gaps, not an even sprinkle
    assert 0.5 * even_mean < clumped_mean < 1.3 * even_mean  # about the same snow in all (overlaps merge some)
    with pytest.raises(ConfigError, match="snow_cluster"):
        DegradationConfig(snow_cluster_p=1.5)


# No flakes at all: isolates the veil and the lens-side glow.
NO_FLAKES = dataclasses.replace(
    WEATHER_ONLY, snow_far=(*WEATHER_ONLY.snow_far[:4], 0.0), snow_mid=(*WEATHER_ONLY.snow_mid[:4], 0.0),
    snow_near=(*WEATHER_ONLY.snow_near[:4], 0.0),
)


def test_aperture_kernels_are_flat_hard_edged_polygons_with_a_rim():
    r = torch.tensor([12.0, 12.0, 12.0])
    k = _aperture_kernels(r, torch.tensor([0.0, 6.0, 0.0]), torch.zeros(3), torch.tensor([0.0, 0.0, 0.8]),
                          torch.ones(3), 41)  # fmt: skip
    c = 20
    assert torch.allclose(k[:2, c, c], k[:2, c, c + 6]) and k[0, c, c] == 1  # flat interior, no falloff
    assert (k[:2, c, c + 15] == 0).all() and (k[:, c, c + 11] > 0.9 * k[:, c, c]).all()  # a 1-px edge, not a ramp
    assert k[2, c, c + 11] > 1.3 * k[2, c, c]  # the rim is brighter than the inside
    areas = (k > 0.5).sum(dim=(1, 2)).float()
    assert areas[0].item() == pytest.approx(math.pi * 144, rel=0.05)  # the disc
    assert areas[1].item() == pytest.approx(2 * math.sqrt(3) * 144, rel=0.05)  # hexagon of inscribed radius 12


def test_lens_glow_only_adds_light_and_stays_off_by_default():
    dark = torch.full((16, 3, 96, 96), 0.1)
    base = dataclasses.replace(NO_FLAKES, snow_veil_p=0.0)
    plain, p_plain = add_snow(dark, torch.arange(16), base)
    assert torch.equal(plain, dark) and "glow" not in p_plain
    glow_cfg = dataclasses.replace(base, snow_glow=(6.0, 12.0, 4.0, 4.0, 1.0), snow_glow_gain=(0.4, 0.4))
    glowing, p_glow = add_snow(dark, torch.arange(16), glow_cfg)
    assert (glowing >= dark - 1e-6).all() and p_glow["glow"].mean() > 0.8
    lit = glowing[:, 0] > 0.2
    assert 0.005 < lit.float().mean() < 0.5  # a few discs, not a veil
    assert glowing.max() > 0.45  # a disc adds up to its gain (0.4 x flake colour) to the 0.1 scene


def test_mist_field_veil_follows_the_field_not_the_depth():
    black = torch.zeros(16, 3, 64, 64)
    seeds = torch.arange(16)
    base = dataclasses.replace(NO_FLAKES, snow_veil_p=1.0, snow_veil_beta=(1.0, 1.0))
    field = mist_field(seeds, 64, 64)
    assert field.shape == (16, 1, 64, 64) and torch.allclose(field.amin(dim=(2, 3)), torch.zeros(16, 1))
    assert torch.allclose(field.amax(dim=(2, 3)), torch.ones(16, 1)) and not torch.equal(field[0], field[1])
    assert (field[..., 1:, :] - field[..., :-1, :]).abs().max() < 0.2  # smooth: banks and patches, not noise

    def corr(img: torch.Tensor) -> float:
        a, b = img[:, :1].flatten(1), field.flatten(1)
        a, b = a - a.mean(dim=1, keepdim=True), b - b.mean(dim=1, keepdim=True)
        return ((a * b).sum(1) / (a.norm(dim=1) * b.norm(dim=1)).clamp(min=1e-8)).mean().item()

    plain, _ = add_snow(black, seeds, base)
    misty, _ = add_snow(black, seeds, dataclasses.replace(base, veil_field_p=1.0))
    assert torch.equal(plain, add_snow(black, seeds, dataclasses.replace(base, veil_field_p=0.0))[0])
    assert corr(misty) > 0.6 and corr(misty) > corr(plain) + 0.3
    with pytest.raises(ConfigError, match="veil_field_p"):
        DegradationConfig(veil_field_p=-0.1)


def test_near_veil_leaves_no_part_of_the_picture_clear_and_stays_off_by_default():
    """Without it the veil's transmission is 1 at the nearest point of every picture (a black scene keeps black
    pixels); veil in front of the nearest surface lifts every pixel, and p 0 keeps the pixels it had."""
    black = torch.zeros(16, 3, 64, 64)
    seeds = torch.arange(16)
    base = dataclasses.replace(NO_FLAKES, snow_veil_p=1.0, snow_veil_beta=(1.0, 1.0))
    plain, _ = add_snow(black, seeds, base)
    near, _ = add_snow(black, seeds, dataclasses.replace(base, veil_near_p=1.0, veil_near=(0.5, 0.5)))
    assert torch.equal(plain, add_snow(black, seeds, dataclasses.replace(base, veil_near_p=0.0))[0])
    darkest = lambda img: img.amin(dim=(1, 2, 3))  # noqa: E731
    assert darkest(plain).max() < 0.05  # somewhere near, clear
    # d >= 0.5 everywhere: t <= exp(-beta * 0.5) with beta = 1 x (0.3 + 0.7 amount) >= 0.3, A >= 0.7
    assert (darkest(near) > 0.7 * (1 - math.exp(-0.15)) - 1e-3).all()
    assert (near >= plain - 1e-6).all()  # the veil only lifts a black scene
    with pytest.raises(ConfigError, match="veil_near"):
        DegradationConfig(veil_near=(0.6, 0.2))


def test_refracting_drops_can_darken_a_bright_sky_and_stay_off_by_default():
    """Screened rain is never darker than the scene; drops composited in the colour they refract (the scene upside
    down: dark ground under a bright sky) darken the sky where they fall."""
    scene = torch.full((8, 3, 64, 64), 0.1)
    scene[:, :, :32] = 0.9  # bright sky over dark ground
    base = dataclasses.replace(WEATHER_ONLY, rain_veil_p=0.0, amount=(0.8, 1.0))
    screened, p_plain = add_rain(scene, torch.arange(8), base)
    assert torch.equal(screened, add_rain(scene, torch.arange(8), dataclasses.replace(base, rain_refract_p=0.0))[0])
    assert "refract" not in p_plain and (screened >= scene - 1e-6).all()
    refracted, p_ref = add_rain(scene, torch.arange(8), dataclasses.replace(base, rain_refract_p=1.0))
    assert p_ref["refract"].tolist() == [1.0] * 8
    sky = refracted[:, :, :24] - scene[:, :, :24]
    assert (sky < -0.05).float().mean() > 0.01  # dark drops on the sky
    untouched = screened == scene  # the same streaks, another compositing: no drop, no change
    assert untouched.float().mean() > 0.05 and (refracted - scene)[untouched].abs().max() < 1e-5
    with pytest.raises(ConfigError, match="rain_refract_p"):
        DegradationConfig(rain_refract_p=2.0)


def test_snow_brightens_a_dark_scene_and_rain_layers_follow_config():
    dark = torch.full((8, 3, 64, 64), 0.1)
    snow, _ = add_snow(dark, torch.arange(8), dataclasses.replace(WEATHER_ONLY, snow_veil_p=0.0))
    assert (snow >= dark - 1e-6).all() and snow.mean() > dark.mean()
    _, params = add_rain(dark, torch.arange(8), dataclasses.replace(WEATHER_ONLY, rain_layers=(2, 3)))
    assert set(params["layers"].tolist()) <= {2.0, 3.0}


def test_camera_noise_and_jpeg_move_the_image():
    img = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(0)) * 0.5 + 0.25
    smooth = torch.nn.functional.avg_pool2d(img, 5, 1, 2)
    q_low, q_high = jpeg(smooth, torch.tensor([10.0, 10.0])), jpeg(smooth, torch.tensor([95.0, 95.0]))
    assert (psnr(q_high, smooth) > psnr(q_low, smooth) + 5).all()
    assert (psnr(q_high, smooth) > 35).all()
    noisy_cfg = dataclasses.replace(DegradationConfig(), noise_p=1.0, blur_p=0.0, resample_p=0.0, jpeg_p=0.0)
    out, params = camera(smooth, torch.tensor([1, 2]), noisy_cfg)
    assert (params["noise_shot"] > 0).all() and (out - smooth).abs().mean() > 1e-4
    off = dataclasses.replace(noisy_cfg, noise_p=0.0)
    assert torch.allclose(camera(smooth, torch.tensor([1, 2]), off)[0], smooth, atol=1e-6)


@pytest.mark.parametrize("shape", [(1, 3, 17, 33), (2, 3, 8, 8), (1, 3, 100, 40)])
def test_odd_and_small_sizes(shape):
    img = torch.rand(shape, generator=torch.Generator().manual_seed(1))
    for task in ("rain", "snow"):
        out, _ = degrade(img, task, seeds=list(range(shape[0])))
        assert out.shape == img.shape and torch.isfinite(out).all()


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_matches_cpu_closely(clean):
    cpu, _ = degrade(clean, "rain", seeds=[1, 2, 3, 4])
    gpu, _ = degrade(clean.cuda(), "rain", seeds=[1, 2, 3, 4])
    assert (gpu.cpu() - cpu).abs().mean() < 2e-3


def test_bad_input_is_rejected(clean):
    with pytest.raises(ValueError, match="task"):
        degrade(clean, "fog")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"\(B, 3, H, W\)"):
        degrade(clean[0], "rain")
    with pytest.raises(ValueError, match="seeds"):
        degrade(clean, "rain", seeds=[1])
    with pytest.raises(ConfigError, match="unknown degradation mix"):
        degradation_mix("drizzle")
    with pytest.raises(ConfigError, match="amount"):
        DegradationConfig(amount=(0.5, 0.2))
    with pytest.raises(ConfigError, match="scene_side"):
        DegradationConfig(scene_side=(512.0, 256.0))


def _veil_stats(mix: str, task: str, n: int = 1500) -> tuple[float, float]:
    """How often a veil is drawn and its median strength β (veiled samples only) over ``n`` seeds (weather sized for
    the 8-pixel image rather than for a whole picture, which only makes it fast)."""
    add = add_rain if task == "rain" else add_snow
    cfg = dataclasses.replace(degradation_mix(mix), scene_side=(0.0, 0.0))
    _, params = add(torch.full((n, 3, 8, 8), 0.5), torch.arange(n), cfg)
    beta = params["veil_beta"]
    return (beta > 0).float().mean().item(), beta[beta > 0].median().item()


def test_wide_haze_draws_one_veil_distribution_for_both_tasks():
    """In `wide_haze` the veil cannot tell rain from snow (presence and strength drawn alike); in `wide_near`,
    which it replaces for training, snow is veiled more often and rain more strongly, a cue the recognition head
    could learn instead of the streaks and flakes."""
    (rain_p, rain_b), (snow_p, snow_b) = _veil_stats("wide_haze", "rain"), _veil_stats("wide_haze", "snow")
    assert abs(rain_p - 0.75) < 0.04 and abs(snow_p - 0.75) < 0.04
    assert abs(math.log(rain_b / snow_b)) < 0.15
    (rain_p, _), (snow_p, _) = _veil_stats("wide_near", "rain"), _veil_stats("wide_near", "snow")
    assert snow_p - rain_p > 0.05


def test_fine_rain_adds_dense_short_streaks_and_stays_off_by_default():
    """Fine rain lights many more pixels of a dark scene, more with more density; p 0 keeps every pixel."""
    dark = torch.full((8, 3, 64, 64), 0.1)
    seeds = torch.arange(8)
    base = dataclasses.replace(WEATHER_ONLY, rain_veil_p=0.0, rain_layers=(1, 1), amount=(0.0, 0.0))
    plain, params = add_rain(dark, seeds, base)
    assert "fine" not in params
    assert torch.equal(plain, add_rain(dark, seeds, dataclasses.replace(base, rain_fine_p=0.0))[0])
    lit = lambda img: (img.mean(1) > 0.11).float().mean().item()  # noqa: E731
    sparse, _ = add_rain(dark, seeds, dataclasses.replace(base, rain_fine_p=1.0, rain_fine_density=(5e-3, 5e-3)))
    dense, params = add_rain(dark, seeds, dataclasses.replace(base, rain_fine_p=1.0, rain_fine_density=(4e-2, 4e-2)))
    assert params["fine"].tolist() == [1.0] * 8
    assert lit(plain) < lit(sparse) < lit(dense) and lit(dense) > 3 * lit(plain) + 0.05
    assert (dense >= plain - 1e-6).all()  # light added, never taken
    with pytest.raises(ConfigError, match="rain_fine"):
        DegradationConfig(rain_fine_density=(0.0, 0.01))


@pytest.mark.parametrize("task", ["rain", "snow"])
def test_clear_samples_carry_no_weather_and_leave_the_others_alone(task, clean):
    """With ``clear_p`` a sample is its clean picture (the camera side aside) or exactly what it is without the
    knob; about ``clear_p`` of them are clear; 0 (every evaluation mix) changes nothing."""
    seeds = list(range(40))
    batch = clean[torch.arange(40) % len(clean)]
    weather, params = degrade(batch, task, seeds=seeds, cfg=WEATHER_ONLY)
    assert "clear" not in params
    some, params = degrade(batch, task, seeds=seeds, cfg=dataclasses.replace(WEATHER_ONLY, clear_p=0.3))
    clear = params["clear"]
    assert 4 <= int(clear.sum()) <= 20
    assert torch.equal(some[clear], batch[clear]) and torch.equal(some[~clear], weather[~clear])
    assert not torch.equal(weather[clear], batch[clear])
    assert degrade_mix_clear_share("wide_clear") == pytest.approx(0.15, abs=0.04)
    with pytest.raises(ConfigError, match="clear_p"):
        DegradationConfig(clear_p=1.5)


def test_streak_profile_power_flattens_the_core_and_fade_sets_the_ends():
    """Power 2 and fade 0.6 are the default kernel; a larger power gives a flat core with a hard edge (more of the
    cross-section near the peak, less in the tails); fade 0 a line as bright at its ends as in its middle."""
    n, size = 3, 41
    length, width, angle = torch.full((n,), 24.0), torch.full((n,), 2.0), torch.zeros(n)
    default = _streak_kernels(length, width, angle, size)
    same = _streak_kernels(length, width, angle, size, torch.full((n,), 2.0), torch.full((n,), 0.6))
    assert torch.allclose(default, same, atol=1e-6)
    hard = _streak_kernels(length, width, angle, size, torch.full((n,), 10.0), torch.full((n,), 0.6))
    c = size // 2
    across_soft, across_hard = default[0, c], hard[0, c]  # the row through the centre crosses the vertical streak
    assert (across_hard > 0.9).sum() > (across_soft > 0.9).sum()
    assert across_hard[c + 4 :].sum() < across_soft[c + 4 :].sum()  # hard edge: less light beyond 2 widths
    flat = _streak_kernels(length, width, angle, size, torch.full((n,), 2.0), torch.zeros(n))
    end, mid = c + 10, c  # 10 px from the middle of a 24 px streak, along the column
    assert flat[0, end, c] / flat[0, mid, c] > 0.95
    assert default[0, end, c] / default[0, mid, c] < 0.7


def test_additive_rain_equals_screen_on_black_and_brightens_bright_scenes():
    """Linear dodge and screen agree on a black scene and differ on a bright one (added light saturates it);
    about ``rain_additive_p`` of the samples take it."""
    seeds = torch.arange(40)
    base = dataclasses.replace(WEATHER_ONLY, rain_veil_p=0.0, amount=(0.8, 1.0))
    black, bright = torch.zeros(40, 3, 48, 48), torch.full((40, 3, 48, 48), 0.7)
    add = dataclasses.replace(base, rain_additive_p=0.5)
    screen_black, _ = add_rain(black, seeds, base)
    add_black, params = add_rain(black, seeds, add)
    assert torch.allclose(screen_black, add_black, atol=1e-6)
    on = params["additive"].bool()
    assert 10 <= int(on.sum()) <= 30
    screen_bright, _ = add_rain(bright, seeds, base)
    add_bright, _ = add_rain(bright, seeds, add)
    assert torch.equal(add_bright[~on], screen_bright[~on])
    assert (add_bright[on] >= screen_bright[on] - 1e-6).all()
    assert (add_bright[on] - screen_bright[on]).amax() > 0.1
    for bad in ({"rain_profile_power": (0.5, 2.0)}, {"rain_end_fade": (0.2, 1.5)}, {"rain_additive_p": -0.1}):
        with pytest.raises(ConfigError, match="rain_profile_power"):
            DegradationConfig(**bad)


def test_wide_rain_draws_varied_streak_shapes(clean):
    """The shape knobs of `wide_rain` change its rain, not its snow: its snow is `wide_clear`'s pixel for pixel."""
    seeds = [3, 4, 5, 6]
    assert torch.equal(degrade(clean, "snow", seeds=seeds, cfg="wide_rain")[0],
                       degrade(clean, "snow", seeds=seeds, cfg="wide_clear")[0])  # fmt: skip
    assert not torch.equal(degrade(clean, "rain", seeds=seeds, cfg="wide_rain")[0],
                           degrade(clean, "rain", seeds=seeds, cfg="wide_clear")[0])  # fmt: skip


def degrade_mix_clear_share(mix: str) -> float:
    """Share of clear samples among 400 seeds of ``mix``."""
    tiny = torch.full((400, 3, 8, 8), 0.5)
    return degrade(tiny, "rain", seeds=range(400), cfg=mix)[1]["clear"].float().mean().item()
