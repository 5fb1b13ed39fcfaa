"""Frozen configuration dataclasses, model presets and the paper's ablation variants.

Every architectural choice lives in :class:`ModelConfig`; each flag is read in
exactly one place, where the module that depends on it is built. Presets and
ablation variants are ``dataclasses.replace`` entries in plain dicts, so a
variant is never a copied class.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Literal

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
    knowledge_contrast: bool = True  # False: ablation V1 (no DRM, no L_contra)
    freeze_before_tkff: bool = False  # K1 / K2: train only the heads
    drm_rows: int = 8
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


__all__ = [
    "TASKS",
    "LossConfig",
    "ModelConfig",
    "PRESETS",
    "VARIANTS",
    "config_to_dict",
    "model_config",
    "model_config_from_dict",
    "replace_checked",
]
