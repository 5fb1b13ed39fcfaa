"""Frozen configuration dataclasses, model presets and the paper's ablation variants.

Every architectural choice lives in :class:`ModelConfig`; each flag is read in
exactly one place, where the module that depends on it is built. Presets and
ablation variants are ``dataclasses.replace`` entries in plain dicts, so a
variant is never a copied class.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Literal

import yaml

from smartassign.errors import ConfigError

Attention = Literal["channel", "window"]
Encoder = Literal["hierarchical", "flat"]
# How the heads read the knowledge atoms (TKFF). "smartassign" is the paper;
# "shared" is plain multi-task learning (V2, no GKFM); "common"/"unique" are K1/K2.
Routing = Literal["smartassign", "shared", "common", "unique"]
Task = Literal["rain", "snow"]
TASKS: tuple[Task, ...] = ("rain", "snow")


@dataclass(frozen=True)
class ModelConfig:
    """Architecture of :class:`smartassign.model.SmartAssignNet`."""

    width: int = 32
    # Blocks per encoder level. Hierarchical: (level 1, level 1/2, ..., latent);
    # the decoder mirrors all but the latent. Flat: one level, all blocks at full res.
    depths: tuple[int, ...] = (2, 2, 4)
    heads: tuple[int, ...] = (1, 2, 4)
    encoder: Encoder = "hierarchical"
    attention: Attention = "channel"
    window: int = 8
    mlp_ratio: float = 2.0
    gate_reduction: int = 4
    gated_cnn: bool = True  # False: ablation V3
    routing: Routing = "smartassign"
    tasks: tuple[Task, ...] = TASKS  # one task: ablation V4r / V4s
    recognition: bool = True  # False: ablation V5
    # The recognition head also reads the image itself through a small CNN: its high-pass (the veil both weathers
    # share removed), max and mean pooled, so a thin streak or a small flake survives where eq. 12's spatial mean
    # of the atoms averages it away (docs/training.md, "The recognition head"). False: eq. 12 alone.
    recog_pixels: bool = False
    knowledge_contrast: bool = True  # False: ablation V1 (no DRM, no L_contra)
    freeze_before_tkff: bool = False  # K1 / K2: train only the heads
    drm_pool: int = 4
    drm_features: int = 16

    def __post_init__(self) -> None:
        if self.width < 4 or self.width % 2:
            raise ConfigError(f"width must be an even number >= 4, got {self.width}")
        if not self.depths or any(d < 1 for d in self.depths):
            raise ConfigError(f"depths must be positive, got {self.depths}")
        if len(self.heads) != len(self.depths):
            raise ConfigError(
                f"heads {self.heads} must have one entry per level of depths {self.depths}"
            )
        if self.encoder == "flat" and len(self.depths) != 1:
            raise ConfigError("a flat encoder has one level: give depths=(N,)")
        for level, h in enumerate(self.heads):
            if (self.width * 2**level) % h:
                raise ConfigError(f"level {level} width {self.width * 2**level} not divisible by {h} heads")
        if self.attention not in ("channel", "window"):
            raise ConfigError(f"attention must be 'channel' or 'window', got {self.attention!r}")
        if self.encoder not in ("hierarchical", "flat"):
            raise ConfigError(f"encoder must be 'hierarchical' or 'flat', got {self.encoder!r}")
        if self.routing not in ("smartassign", "shared", "common", "unique"):
            raise ConfigError(f"unknown routing {self.routing!r}")
        if not self.tasks or any(t not in TASKS for t in self.tasks) or len(set(self.tasks)) != len(self.tasks):
            raise ConfigError(f"tasks must be a non-empty subset of {TASKS}, got {self.tasks}")

    @property
    def levels(self) -> int:
        """Number of resolution levels of the encoder."""
        return len(self.depths) if self.encoder == "hierarchical" else 1

    @property
    def pad_multiple(self) -> int:
        """Side lengths the network needs: a multiple of this many pixels."""
        return 2 ** (self.levels - 1)

    @property
    def uses_recognition(self) -> bool:
        """Whether the recognition head exists (it needs two tasks to tell apart)."""
        return self.recognition and len(self.tasks) == 2

    @property
    def atoms(self) -> tuple[str, ...]:
        """The knowledge atoms (GKFM outputs) this configuration builds."""
        if self.routing == "shared":
            return ()
        need: set[str] = set()
        for task in self.tasks:
            unique = "rk" if task == "rain" else "sk"
            need |= {"smartassign": {unique, "ck"}, "common": {"ck"}, "unique": {unique}}[self.routing]
        if self.uses_recognition:
            need |= {"rk", "sk"}
        return tuple(a for a in ("rk", "ck", "sk") if a in need)

    @property
    def uses_contrast(self) -> bool:
        """Whether the DRM and knowledge-contrast loss are active."""
        return self.knowledge_contrast and len(self.atoms) >= 2


@dataclass(frozen=True)
class LossConfig:
    """Weights and forms of the five losses (paper eq. 19)."""

    char_eps: float = 1e-3
    w_char: float = 1.0
    w_grad: float = 1.0
    w_recog: float = 1.0
    w_sparsity: float = 0.01
    w_contra: float = 0.001
    recog: Literal["mse", "ce"] = "mse"
    contrast: Literal["infonce", "literal"] = "infonce"
    contrast_temperature: float = 0.1


PRESETS: dict[str, ModelConfig] = {
    "tiny": ModelConfig(width=16, depths=(1, 1, 2), heads=(1, 2, 2), mlp_ratio=2.0),
    # small and base put their parameters in the low-resolution levels, where
    # they cost few FLOPs: full-resolution convolutions dominate the budget.
    "small": ModelConfig(width=24, depths=(2, 3, 4, 6), heads=(1, 2, 4, 8), mlp_ratio=2.66),
    "base": ModelConfig(width=48, depths=(4, 6, 8, 8), heads=(1, 2, 4, 8), mlp_ratio=2.66),
}

# Tables 3 and 4 of the paper as flag changes on a base configuration.
VARIANTS: dict[str, dict[str, Any]] = {
    "V1": {"knowledge_contrast": False},
    "V2": {"routing": "shared"},
    "V3": {"gated_cnn": False},
    "V4r": {"tasks": ("rain",)},
    "V4s": {"tasks": ("snow",)},
    "V5": {"recognition": False},
    "V6": {},
    "K1": {"routing": "common", "freeze_before_tkff": True},
    "K2": {"routing": "unique", "freeze_before_tkff": True},
}


def model_config(name: str | ModelConfig, variant: str = "V6", **overrides: Any) -> ModelConfig:
    """Resolve a preset name (or config), apply an ablation variant and overrides."""
    if isinstance(name, ModelConfig):
        cfg = name
    else:
        if name not in PRESETS:
            raise ConfigError(f"unknown preset {name!r}; choose from {', '.join(PRESETS)}")
        cfg = PRESETS[name]
    if variant not in VARIANTS:
        raise ConfigError(f"unknown variant {variant!r}; choose from {', '.join(VARIANTS)}")
    return replace_checked(cfg, {**VARIANTS[variant], **overrides})


def replace_checked(cfg: Any, changes: dict[str, Any]) -> Any:
    """``dataclasses.replace`` that names unknown keys and fixes list->tuple."""
    names = {f.name for f in dataclasses.fields(cfg)}
    unknown = sorted(set(changes) - names)
    if unknown:
        raise ConfigError(
            f"unknown {type(cfg).__name__} key(s): {', '.join(unknown)}; valid keys: {', '.join(sorted(names))}"
        )
    fixed = {k: tuple(v) if isinstance(v, list) else v for k, v in changes.items()}
    return dataclasses.replace(cfg, **fixed)


def config_to_dict(cfg: Any) -> dict[str, Any]:
    """JSON-friendly dict of a config dataclass (tuples become lists)."""
    return dataclasses.asdict(cfg)


def model_config_from_dict(data: dict[str, Any]) -> ModelConfig:
    """Inverse of :func:`config_to_dict` for :class:`ModelConfig`."""
    return replace_checked(ModelConfig(), data)


@dataclass(frozen=True)
class DegradationConfig:
    """Every distribution of the synthetic rain/snow engine (:mod:`smartassign.data.engine`).

    Sizes are pixels of a 256-pixel image and scale with ``min(H, W) / 256``. ``(lo, hi)`` pairs are uniform
    unless the engine says log-uniform (densities, veil strength, noise). ``amount`` (0 = drizzle/flurry,
    1 = downpour/blizzard) drives density, brightness and veil together; the named mixes narrow it.
    """

    amount: tuple[float, float] = (0.0, 1.0)
    # Short side (px, log-uniform) of the picture the sample is a piece of; the weather is sized for it.
    # (0, 0): the image's own size. Training crops set it so a 128² crop carries a full photo's streaks.
    scene_side: tuple[float, float] = (0.0, 0.0)
    veil_brightness: tuple[float, float] = (0.7, 0.97)  # airlight A
    depth_scene_weight: tuple[float, float] = (0.0, 0.8)  # depth proxy: dark-channel cue vs horizon ramp
    # rain
    rain_layers: tuple[int, int] = (1, 4)  # depth layers, near to far
    rain_sublayers: int = 3  # streak groups per layer, each with its own jittered kernel
    rain_density: tuple[float, float] = (2e-4, 1.2e-2)  # drops per pixel per layer at amount 0 and 1 (log)
    rain_length_px: tuple[float, float] = (8.0, 60.0)
    rain_width_px: tuple[float, float] = (0.4, 1.8)
    rain_brightness: tuple[float, float] = (0.25, 0.9)
    rain_angle_deg: tuple[float, float] = (-30.0, 30.0)
    rain_angle_jitter_deg: float = 6.0  # per streak group around the layer's direction
    rain_defocus_p: float = 0.4  # near layers out of focus
    rain_veil_p: float = 0.6
    rain_veil_beta: tuple[float, float] = (0.05, 1.5)  # log-uniform; scaled by 0.3 + 0.7 amount
    # Refracting drops: with probability ``rain_refract_p`` the streaks are composited OVER the scene in the colour
    # a drop refracts (a wide, inverted view of the scene: its blurred upside-down image × ``rain_refract_gain``,
    # with some airlight) instead of screened on; so a drop can be darker than a bright sky behind it.
    rain_refract_p: float = 0.0
    rain_refract_gain: tuple[float, float] = (0.7, 1.3)
    # Fine rain: with probability ``rain_fine_p`` one more layer of dense, short, faint streaks (far drizzle, or a
    # downpour lit against a dark background: hundreds of streaks per 10⁴ px, each a few pixels long), along the
    # rain's direction; density per pixel and length (px of a 256-pixel image) log-uniform, brightness uniform.
    rain_fine_p: float = 0.0
    rain_fine_density: tuple[float, float] = (5e-3, 4e-2)
    rain_fine_length_px: tuple[float, float] = (3.0, 14.0)
    rain_fine_brightness: tuple[float, float] = (0.08, 0.35)
    # Streak shape breadth, drawn per streak group: the cross-section exponent (log-uniform; 2 = Gaussian, 8 = a
    # flat core with a hard edge, as a box motion-blur kernel or a drawn capsule gives) and how much dimmer the
    # ends are than the middle (uniform; 0 = a uniform line, 0.6 = the default fade). The defaults keep every pixel.
    rain_profile_power: tuple[float, float] = (2.0, 2.0)
    rain_end_fade: tuple[float, float] = (0.6, 0.6)
    # With probability ``rain_additive_p`` the streak light is added to the scene (linear dodge, clipped) instead
    # of screened on: bright areas under a streak go to white rather than barely brighten.
    rain_additive_p: float = 0.0
    # snow: three size classes (radius lo, hi px; density lo, hi per 1e4 px at amount 0 and 1; presence p)
    snow_far: tuple[float, float, float, float, float] = (0.5, 1.2, 20.0, 300.0, 0.9)
    snow_mid: tuple[float, float, float, float, float] = (1.2, 3.5, 3.0, 60.0, 0.9)
    snow_near: tuple[float, float, float, float, float] = (3.5, 10.0, 0.2, 6.0, 0.6)
    snow_shapes: int = 3  # flake outlines per class
    snow_irregularity: float = 0.35  # radius wobble (3 and 5 lobes)
    snow_opacity: tuple[float, float] = (0.5, 1.0)
    snow_bokeh_p: float = 0.4  # near flakes defocused, with a rim
    snow_motion_p: float = 0.4  # flakes streaked by the wind
    snow_motion_ratio: tuple[float, float] = (0.5, 4.0)  # streak length / radius
    snow_wind_deg: tuple[float, float] = (-45.0, 45.0)
    snow_veil_p: float = 0.7
    snow_veil_beta: tuple[float, float] = (0.05, 1.2)
    # Breadth beyond the three classes (off in the evaluation mixes, so their sets keep their pixels):
    # a fourth class of dense, bright, near-sub-pixel flakes in direct light (snowfall that reads as a speckle
    # field rather than as separate flakes; same 5-tuple as the classes above) ...
    snow_speckle: tuple[float, float, float, float, float] = (0.25, 0.8, 80.0, 1500.0, 0.0)
    # ... and turbulent clustering: with probability ``snow_cluster_p`` every class's flake density is modulated by
    # a log-normal field exp(σ·g − σ²/2) (g a smooth unit Gaussian field of correlation length ``snow_cluster_px``,
    # log-uniform px of a 256-pixel image; σ uniform in ``snow_cluster_sigma``): clumps, gusts, overlapping flakes
    # that merge into irregular non-convex blobs.
    snow_cluster_p: float = 0.0
    snow_cluster_px: tuple[float, float] = (1.5, 24.0)
    snow_cluster_sigma: tuple[float, float] = (0.5, 1.6)
    # Lens-side light: flakes just in front of the lens, lit, so far out of focus that each is an image of the
    # aperture (a flat disc or hexagon with a hard edge and a brighter rim) that ADDS light rather than covering
    # the scene. Same 5-tuple as the classes (radius px, density per 1e4 px at amount 0 and 1, presence p);
    # ``snow_glow_gain`` is the light one adds at its centre (uniform).
    snow_glow: tuple[float, float, float, float, float] = (4.0, 20.0, 0.3, 4.0, 0.0)
    snow_glow_gain: tuple[float, float] = (0.15, 0.6)
    # Both tasks: with probability ``veil_field_p`` the veil's transmission follows a smooth random field (a
    # bicubic zoom of a coarse random grid: mist in banks and patches) instead of the scene's depth proxy.
    veil_field_p: float = 0.0
    # Both tasks: with probability ``veil_near_p`` the veil starts in front of the nearest surface, depth
    # ``d0 + (1 − d0)·d`` with ``d0 ~ U(veil_near)``: falling snow or rain and wet air lie between the camera and
    # everything it sees, so no part of the picture is left without veil (without it, ``t = 1`` at the nearest
    # point of every veiled picture).
    veil_near_p: float = 0.0
    veil_near: tuple[float, float] = (0.2, 0.8)
    # Both tasks: with probability ``clear_p`` a sample carries no weather at all (no streaks, flakes or veil; the
    # camera side below still applies). Every other sample has weather, and weather only ever adds light, so a
    # network that never sees a clear picture learns to take some light away from every picture: the bundled
    # weights darken a clear photograph by 7-11 grey levels (docs/training.md, run #20). Users' photos are often
    # clear in parts, or nearly clear all over.
    clear_p: float = 0.0
    # camera, both tasks
    blur_p: float = 0.2
    blur_sigma: tuple[float, float] = (0.3, 1.2)
    resample_p: float = 0.2
    resample_factors: tuple[float, ...] = (1.25, 1.5, 2.0)
    noise_p: float = 0.5
    noise_shot: tuple[float, float] = (1e-5, 3e-3)  # variance per unit signal (log)
    noise_read: tuple[float, float] = (5e-4, 0.015)  # std (log)
    jpeg_p: float = 0.5
    jpeg_quality: tuple[float, float] = (50.0, 95.0)

    def __post_init__(self) -> None:
        lo, hi = self.amount
        if not 0 <= lo <= hi <= 1:
            raise ConfigError(f"degradation.amount must be 0 <= lo <= hi <= 1, got {self.amount}")
        if self.rain_layers[0] < 1 or self.rain_layers[1] < self.rain_layers[0]:
            raise ConfigError(f"degradation.rain_layers must be 1 <= lo <= hi, got {self.rain_layers}")
        if self.scene_side != (0.0, 0.0) and not 0 < self.scene_side[0] <= self.scene_side[1]:
            raise ConfigError(f"degradation.scene_side must be (0, 0) or 0 < lo <= hi, got {self.scene_side}")
        if not (0 <= self.snow_cluster_p <= 1 and 0 < self.snow_cluster_px[0] <= self.snow_cluster_px[1]):
            raise ConfigError(
                f"degradation: snow_cluster_p must be in [0, 1] and 0 < snow_cluster_px lo <= hi, got"
                f" {self.snow_cluster_p} and {self.snow_cluster_px}"
            )
        if not (0 <= self.veil_field_p <= 1 and 0 <= self.rain_refract_p <= 1):
            raise ConfigError(
                f"degradation: veil_field_p and rain_refract_p must be in [0, 1], got {self.veil_field_p} and"
                f" {self.rain_refract_p}"
            )
        if not 0 <= self.clear_p <= 1:
            raise ConfigError(f"degradation: clear_p must be in [0, 1], got {self.clear_p}")
        if not (0 <= self.veil_near_p <= 1 and 0 <= self.veil_near[0] <= self.veil_near[1] <= 1):
            raise ConfigError(
                f"degradation: veil_near_p must be in [0, 1] and veil_near a range within [0, 1], got "
                f"{self.veil_near_p} and {self.veil_near}"
            )
        if not (0 <= self.rain_fine_p <= 1 and 0 < self.rain_fine_density[0] <= self.rain_fine_density[1]
                and 0 < self.rain_fine_length_px[0] <= self.rain_fine_length_px[1]):
            raise ConfigError(
                f"degradation: rain_fine_p must be in [0, 1] and rain_fine_density, rain_fine_length_px ranges of "
                f"positive numbers, got {self.rain_fine_p}, {self.rain_fine_density}, {self.rain_fine_length_px}"
            )
        if not (1.0 <= self.rain_profile_power[0] <= self.rain_profile_power[1]
                and 0 <= self.rain_end_fade[0] <= self.rain_end_fade[1] <= 1 and 0 <= self.rain_additive_p <= 1):
            raise ConfigError(
                f"degradation: rain_profile_power must be 1 <= lo <= hi, rain_end_fade a range within [0, 1] and "
                f"rain_additive_p in [0, 1], got {self.rain_profile_power}, {self.rain_end_fade}, "
                f"{self.rain_additive_p}"
            )
        if not 0 < self.snow_glow[0] <= self.snow_glow[1]:
            raise ConfigError(f"degradation: snow_glow radius must be 0 < lo <= hi, got {self.snow_glow[:2]}")
        if self.rain_sublayers < 1 or self.snow_shapes < 1 or not self.resample_factors:
            raise ConfigError("degradation: rain_sublayers, snow_shapes and resample_factors must be positive")


# The breadth mixes build on each other: each adds knobs to the one before.
_WIDE = DegradationConfig(scene_side=(192.0, 768.0), snow_speckle=(0.25, 0.8, 80.0, 1500.0, 0.5), snow_cluster_p=0.6)
_WIDE_LENS = replace(_WIDE, snow_glow=(4.0, 20.0, 0.3, 4.0, 0.45), veil_field_p=0.35)
_WIDE_HAZE = replace(
    _WIDE_LENS,
    rain_refract_p=0.35,
    rain_veil_p=0.75,
    snow_veil_p=0.75,
    rain_veil_beta=(0.05, 1.5),
    snow_veil_beta=(0.05, 1.5),
    veil_near_p=0.65,
)

DEGRADATION_MIXES: dict[str, DegradationConfig] = {
    "mixed": DegradationConfig(),
    "light": DegradationConfig(amount=(0.0, 0.35), rain_layers=(1, 2), rain_veil_p=0.3, snow_veil_p=0.4),
    "heavy": DegradationConfig(amount=(0.65, 1.0), rain_layers=(2, 4), rain_veil_p=0.9, snow_veil_p=0.9),
    # Training crops: `mixed` without its near-invisible tail, sized as pieces of 192-768 px pictures.
    "broad": DegradationConfig(amount=(0.3, 1.0), scene_side=(192.0, 768.0)),
    # Training crops: all of `mixed` (drizzle included, so light rain is not over-corrected), sized like `broad`.
    "scene": DegradationConfig(scene_side=(192.0, 768.0)),
    # Training crops: `scene` with the snow breadth on: dense speckle flakes and clustered snowfall (ledger run 9).
    "wide": _WIDE,
    # `wide` plus lens-side light (aperture-shaped flakes that add light) and patchy mist (a veil whose transmission
    # is a random field, not the depth proxy) in both tasks (ledger run 13).
    "wide_lens": _WIDE_LENS,
    # Every breadth knob on: `wide_lens` plus refracting rain drops composited over the scene.
    "wide_all": replace(_WIDE_LENS, rain_refract_p=0.35),
    # `wide_all` plus veil in front of the nearest surface (ledger run #15: the unseen set's snow lost in the low
    # frequencies, its haze covers the whole picture).
    "wide_near": replace(_WIDE_LENS, rain_refract_p=0.35, veil_near_p=0.5),
    # `wide_near` with one veil distribution for both tasks (presence 0.75, beta log-U(0.05, 1.5), in front of the
    # nearest surface 0.65 of the time): haze then says nothing about which weather it is, so recognition must read
    # streaks and flakes (ledger run #16 read unseen hazy rain as snow), and rain gets the heavier veils that the
    # unseen set's rain carries over the whole frame (its loss there is low-frequency, docs/training.md).
    "wide_haze": _WIDE_HAZE,
    # `wide_haze` plus fine rain (ledger run #17: its snow head removed the dense fine streaks of an unseen rain style
    # that no rain head touched). Only ledger run #19's 430 steps trained on it.
    "wide_fine": replace(_WIDE_HAZE, rain_fine_p=0.4),
    # `wide_fine` plus clear samples (clear_p 0.15): without them the network darkens clear pictures (run #20).
    "wide_clear": replace(_WIDE_HAZE, rain_fine_p=0.4, clear_p=0.15),
    # `wide_clear` plus streak-shape breadth (ledger run #21: two sessions on `wide_clear` pulled the rain head toward
    # the engine's one streak shape and lost unseen rain): flat-cored hard-edged to Gaussian cross-sections, uniform
    # to faded ends, short drops from 4 px, six streak groups per layer, added light as well as screened.
    "wide_rain": replace(
        _WIDE_HAZE,
        rain_fine_p=0.4,
        clear_p=0.15,
        rain_profile_power=(2.0, 10.0),
        rain_end_fade=(0.0, 0.7),
        rain_additive_p=0.4,
        rain_length_px=(4.0, 60.0),
        rain_sublayers=6,
    ),
}


def degradation_mix(name: str) -> DegradationConfig:
    """A named mix of :data:`DEGRADATION_MIXES`."""
    if name not in DEGRADATION_MIXES:
        raise ConfigError(f"unknown degradation mix {name!r}; choose from {', '.join(DEGRADATION_MIXES)}")
    return DEGRADATION_MIXES[name]


DataKind = Literal["synthetic", "paired"]
PlateauMetric = Literal["train_loss", "val_psnr"]
Schedule = Literal["plateau", "cosine"]


@dataclass(frozen=True)
class DataConfig:
    """Training and validation data: synthetic pairs of the bundled photos, or paired dataset folders."""

    kind: DataKind = "synthetic"
    crop: int = 256  # random square training crops, flipped and turned
    workers: int = 2  # DataLoader worker processes per training process
    # synthetic: distinct pairs per task (pair i is always the same crop; an epoch visits each once).
    synthetic_pairs: int = 20000
    # synthetic: a folder of your own clean photographs to degrade instead of the installed corpus ("" = corpus).
    photos: str = ""
    # paired: dataset roots and their layouts (smartassign.data.LAYOUTS); an empty root leaves that task out.
    rain: str = ""
    rain_layout: str = "generic"
    snow: str = ""
    snow_layout: str = "generic"
    val_rain: str = ""
    val_rain_layout: str = "generic"
    val_snow: str = ""
    val_snow_layout: str = "generic"
    val_pairs: int = 16  # validation images per task (paired: the first N by name; 0 = all)
    val_crop: int = 0  # centre-crop validation images to this side; 0 = whole images (synthetic: ``crop``)
    degradation: str = "mixed"  # synthetic: a named mix of DEGRADATION_MIXES
    # Progressive crops (synthetic batches): (fraction of train.steps, side) pairs, e.g. [[0, 96], [0.6, 128],
    # [0.85, 160]]: from that point of the run the crops have that side; () = ``crop`` throughout.
    progressive: tuple[tuple[float, int], ...] = ()

    @property
    def final_crop(self) -> int:
        """The side of the last training crops: what TLC pools over at inference."""
        return self.progressive[-1][1] if self.progressive else self.crop

    def __post_init__(self) -> None:
        if self.kind not in ("synthetic", "paired"):
            raise ConfigError(f"data.kind must be 'synthetic' or 'paired', got {self.kind!r}")
        degradation_mix(self.degradation)
        starts = [f for f, _ in self.progressive]
        if self.progressive and (
            not 0 <= starts[0] or starts[-1] >= 1 or starts != sorted(set(starts))
            or any(side < 16 for _, side in self.progressive)
        ):  # fmt: skip
            raise ConfigError(
                f"data.progressive must be (fraction, side) pairs with increasing fractions in [0, 1) and sides >= 16,"
                f" got {self.progressive}"
            )
        if self.crop < 16 or self.workers < 0 or self.synthetic_pairs < 1 or self.val_pairs < 0 or self.val_crop < 0:
            raise ConfigError(
                "data: need crop >= 16, workers >= 0, synthetic_pairs >= 1, val_pairs >= 0 and val_crop >= 0"
            )


@dataclass(frozen=True)
class TrainConfig:
    """Optimisation, schedule, logging and checkpointing; paper values are the defaults (section 4.1)."""

    out_dir: str = "runs/default"  # the run folder: checkpoints, logs, samples
    seed: int = 0
    steps: int = 300000  # batches to train on (skipped non-finite steps count)
    batch_size: int = 4  # per process; under DDP the global batch is batch_size * world size
    lr: float = 4e-4
    betas: tuple[float, float] = (0.9, 0.999)
    weight_decay: float = 0.0
    # The paper halves the learning rate "when the loss stops reducing": ReduceLROnPlateau on the mean training
    # loss of each window of ``plateau_every`` steps, or on validation PSNR after each validation.
    # "plateau": the paper's halving; "cosine": linear warm-up over ``warmup_steps`` then cosine to ``min_lr``
    # at ``steps`` (the recipe of the bundled weights).
    schedule: Schedule = "plateau"
    warmup_steps: int = 0
    ema_decay: float = 0.0  # exponential moving average of the weights, validated and saved as best; 0 = off
    plateau_metric: PlateauMetric = "train_loss"
    plateau_every: int = 1000
    plateau_factor: float = 0.5
    plateau_patience: int = 5
    min_lr: float = 1e-6
    grad_clip: float = 0.0  # max global gradient norm; 0 = off
    max_bad_steps: int = 10  # consecutive non-finite losses or gradients before training stops
    device: str = "auto"  # auto, cpu, cuda (under torchrun: cuda:LOCAL_RANK)
    amp: bool = True  # bf16 autocast on CUDA
    # bf16 autocast on the CPU too: 1.7x the training throughput of float32 on a CPU with AMX / AVX512-BF16
    # (benchmarks/cpu_amp.py); slower on CPUs without them, hence off by default.
    amp_cpu: bool = False
    channels_last: bool = True  # on CUDA
    compile: bool = False  # torch.compile the training model
    deterministic: bool = False  # torch.use_deterministic_algorithms (slower on CUDA)
    init_from: str = ""  # weights to start from; K1/K2 need a trained V6 (matching tensors are copied)
    # Train only the parameters whose names start with one of these (e.g. ["recognizer.pixels"] teaches a new
    # recognition branch on a frozen trained network); () = every parameter the variant trains.
    train_only: tuple[str, ...] = ()
    log_every: int = 50
    val_every: int = 2000
    sample_every: int = 2000
    ckpt_every: int = 2000
    keep_last: int = 3  # training checkpoints kept besides the best weights
    val_tile: int = 512  # validation runs whole images through the tiled inference path
    time_limit_min: float = 0.0  # stop with a checkpoint after this many minutes; 0 = no limit
    tensorboard: bool = True  # when the tensorboard package is installed
    progress: bool = True

    def __post_init__(self) -> None:
        if self.plateau_metric not in ("train_loss", "val_psnr"):
            raise ConfigError(f"train.plateau_metric must be 'train_loss' or 'val_psnr', got {self.plateau_metric!r}")
        positive = ("steps", "batch_size", "plateau_every", "log_every", "val_every", "sample_every", "ckpt_every")
        bad = [k for k in positive if getattr(self, k) < 1]
        if bad or self.keep_last < 1 or self.max_bad_steps < 1 or self.lr <= 0:
            raise ConfigError(f"train: {', '.join(bad) or 'keep_last, max_bad_steps and lr'} must be positive")
        if self.schedule not in ("plateau", "cosine"):
            raise ConfigError(f"train.schedule must be 'plateau' or 'cosine', got {self.schedule!r}")
        if not 0 <= self.ema_decay < 1 or self.warmup_steps < 0:
            raise ConfigError("train: ema_decay must be in [0, 1) and warmup_steps >= 0")
        if not 0 < self.plateau_factor < 1:
            raise ConfigError(f"train.plateau_factor must be in (0, 1), got {self.plateau_factor}")


@dataclass(frozen=True)
class Experiment:
    """Everything one training run needs: the resolved model, losses, data and training settings."""

    model: ModelConfig
    loss: LossConfig = LossConfig()
    data: DataConfig = DataConfig()
    train: TrainConfig = TrainConfig()
    preset: str = "tiny"
    variant: str = "V6"


SECTIONS: dict[str, type] = {"model": ModelConfig, "loss": LossConfig, "data": DataConfig, "train": TrainConfig}


def _coerce(value: Any, hint: Any, where: str) -> Any:
    """``value`` checked against a field's type ``hint`` (YAML and CLI text give ints for floats, lists for tuples)."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin is Literal:
        if value not in args:
            raise ConfigError(f"{where}: {value!r} is not one of {', '.join(map(repr, args))}")
        return value
    if origin in (types.UnionType, typing.Union):
        if value is None and type(None) in args:
            return None
        for option in (a for a in args if a is not type(None)):
            try:
                return _coerce(value, option, where)
            except ConfigError:
                continue
        raise ConfigError(f"{where}: {value!r} does not fit {hint}")
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where}: expected a list, got {value!r}")
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_coerce(v, args[0], where) for v in value)
        if len(value) != len(args):
            raise ConfigError(f"{where}: expected {len(args)} values, got {len(value)}")
        return tuple(_coerce(v, a, where) for v, a in zip(value, args, strict=True))
    if hint is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{where}: expected true or false, got {value!r}")
    if hint is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise ConfigError(f"{where}: expected an integer, got {value!r}")
    if hint is float:
        # PyYAML reads ``4e-4`` (no dot) as a string: accept any number spelled as text.
        if isinstance(value, (int, float, str)) and not isinstance(value, bool):
            try:
                return float(value)
            except ValueError:
                pass
        raise ConfigError(f"{where}: expected a number, got {value!r}")
    if hint is str:
        if isinstance(value, str):
            return value
        raise ConfigError(f"{where}: expected text, got {value!r}")
    return value


def _section(cls: type, values: Any, source: str, name: str) -> dict[str, Any]:
    """The checked, coerced fields of one YAML section (``name``) for dataclass ``cls``."""
    if not isinstance(values, dict):
        raise ConfigError(f"{source}: '{name}' must be a mapping of {cls.__name__} fields, got {values!r}")
    hints = typing.get_type_hints(cls)
    known = {f.name for f in dataclasses.fields(cls)}
    out = {}
    for key, value in values.items():
        if key not in known:
            raise ConfigError(f"{source}: unknown key '{name}.{key}'; valid keys: {', '.join(sorted(known))}")
        out[key] = _coerce(value, hints[key], f"{source}: {name}.{key}")
    return out


def parse_override(text: str) -> tuple[list[str], Any]:
    """``"train.lr=1e-3"`` -> ``(["train", "lr"], 0.001)``; the value is read as YAML (``[1, 2]``, ``true``)."""
    key, sep, raw = text.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"override {text!r} is not KEY=VALUE (e.g. train.lr=2e-4 or preset=small)")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError as exc:
        raise ConfigError(f"override {text!r}: value is not valid YAML ({exc})") from None
    return key.strip().split("."), value


def load_experiment(
    path: str | Path | None = None, overrides: Sequence[str] = (), variant: str | None = None
) -> Experiment:
    """An :class:`Experiment` from YAML (``path``), then ``key=value`` overrides, then ``variant`` if given.

    The file holds ``preset``, ``variant`` and the sections ``model`` (fields changed on top of the preset and
    variant), ``loss``, ``data`` and ``train``; every key is optional. Unknown keys and ill-typed values raise
    :class:`ConfigError` naming the file (or ``command line``) and the key.
    """
    raw: dict[str, Any] = {}
    source = str(path) if path is not None else "defaults"
    if path is not None:
        try:
            loaded = yaml.safe_load(Path(path).read_text())
        except FileNotFoundError:
            raise ConfigError(f"{path}: config file not found") from None
        except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
            raise ConfigError(f"{path}: cannot read YAML ({exc})") from None
        if loaded is not None and not isinstance(loaded, dict):
            raise ConfigError(f"{path}: expected a mapping of sections at the top level")
        raw = loaded or {}
    top = {"preset", "variant", *SECTIONS}
    unknown = sorted(set(raw) - top)
    if unknown:
        raise ConfigError(f"{source}: unknown key(s) {', '.join(unknown)}; valid: {', '.join(sorted(top))}")
    sections = {name: _section(cls, raw.get(name) or {}, source, name) for name, cls in SECTIONS.items()}
    preset, chosen = raw.get("preset", "tiny"), raw.get("variant", "V6")
    for text in overrides:
        keys, value = parse_override(text)
        if keys == ["preset"]:
            preset = value
        elif keys == ["variant"]:
            chosen = value
        elif len(keys) == 2 and keys[0] in SECTIONS:
            sections[keys[0]].update(_section(SECTIONS[keys[0]], {keys[1]: value}, "command line", keys[0]))
        else:
            raise ConfigError(f"command line: unknown key {'.'.join(keys)!r}; use preset, variant or SECTION.KEY")
    chosen = variant if variant is not None else chosen
    where = source if not overrides else f"{source} + command line"
    try:
        return Experiment(
            model=model_config(str(preset), str(chosen), **sections["model"]),
            loss=LossConfig(**sections["loss"]),
            data=DataConfig(**sections["data"]),
            train=TrainConfig(**sections["train"]),
            preset=str(preset),
            variant=str(chosen),
        )
    except ConfigError as exc:
        raise ConfigError(f"{where}: {exc}") from None


def experiment_to_dict(exp: Experiment) -> dict[str, Any]:
    """The YAML/JSON form of an experiment, which :func:`load_experiment` reads back to an equal one."""
    return {
        "preset": exp.preset,
        "variant": exp.variant,
        **{name: config_to_dict(getattr(exp, name)) for name in SECTIONS},
    }


__all__ = [
    "TASKS",
    "DEGRADATION_MIXES",
    "DataConfig",
    "DegradationConfig",
    "Experiment",
    "LossConfig",
    "ModelConfig",
    "PRESETS",
    "SECTIONS",
    "TrainConfig",
    "VARIANTS",
    "config_to_dict",
    "degradation_mix",
    "experiment_to_dict",
    "load_experiment",
    "model_config",
    "model_config_from_dict",
    "parse_override",
    "replace_checked",
]
