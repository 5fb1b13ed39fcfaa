"""The SmartAssign network (paper section 3.2).

``I -> Conv3x3 -> SAM -> encoder of GLSF-ViT blocks -> F_wk -> GKFM_{rk,ck,sk}``,
then TKFF routes the knowledge atoms to the deraining, desnowing and
recognition heads. The restoration heads predict a residual that is added to
the input, as the paper's peers (Restormer, MPRNet) do.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass, field

import torch
from torch import nn

from smartassign.config import ModelConfig, model_config
from smartassign.layers import (
    ChannelAttention,
    ChannelGate,
    LayerNorm2d,
    Mlp,
    WindowAttention,
    high_pass,
    pad_to_multiple,
)

ATOM_OF_TASK = {"rain": "rk", "snow": "sk"}


@dataclass
class Output:
    """What the network returns; absent heads are ``None``.

    ``derain`` / ``desnow``: ``(B, 3, H, W)`` restorations (not clamped).
    ``logits``: ``(B, 2)`` rain-vs-snow scores. ``atoms``: the knowledge atoms
    ``F_rk``, ``F_ck``, ``F_sk`` ``(B, C, H', W')`` by name; ``embeddings``:
    their DRM projections ``(B, C, features)`` used by the contrast loss.
    """

    derain: torch.Tensor | None
    desnow: torch.Tensor | None
    logits: torch.Tensor | None
    atoms: dict[str, torch.Tensor] = field(default_factory=dict)
    embeddings: dict[str, torch.Tensor] = field(default_factory=dict)

    def restored(self, task: str) -> torch.Tensor:
        """The restoration for ``task`` ("rain" or "snow")."""
        out = self.derain if task == "rain" else self.desnow
        if out is None:
            raise KeyError(f"this model has no {task} head")
        return out


def conv3(cin: int, cout: int) -> nn.Conv2d:
    """3x3 convolution with 'same' padding."""
    return nn.Conv2d(cin, cout, 3, padding=1)


class SAM(nn.Module):
    """Spatial attention module, eq. 5: ``F_p * sigmoid(Conv_3(F_p))``."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.body = nn.Sequential(
            conv3(channels, channels), nn.GELU(), conv3(channels, channels), nn.GELU(), conv3(channels, channels)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, C, H, W) -> (B, C, H, W)``."""
        return x * torch.sigmoid(self.body(x))


class GLSFViT(nn.Module):
    """Gated long- and short-range feature fusion block, eqs. 7-10.

    Upper branch: ``x + MSA(LN x)`` then ``+ MLP(LN .)``. Lower branch (gated
    CNN): ``F_cv = Conv(LN x)``, ``F_local = F_cv * SiLU(FC_2(Pool F_cv))``.
    Output ``F_mlp + F_local``; without ``gated_cnn`` (V3) just ``F_mlp``.
    """

    def __init__(self, channels: int, heads: int, cfg: ModelConfig, shift: bool) -> None:
        super().__init__()
        self.norm1 = LayerNorm2d(channels)
        self.attn: nn.Module = (
            WindowAttention(channels, heads, cfg.window, shift)
            if cfg.attention == "window"
            else ChannelAttention(channels, heads)
        )
        self.norm2 = LayerNorm2d(channels)
        self.mlp = Mlp(channels, cfg.mlp_ratio)
        self.local: nn.Module | None = None
        if cfg.gated_cnn:
            self.local = nn.Sequential(
                LayerNorm2d(channels),
                nn.Conv2d(channels, channels, 1),
                nn.Conv2d(channels, channels, 3, padding=1, groups=channels),
                ChannelGate(channels, cfg.gate_reduction),
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, C, H, W) -> (B, C, H, W)``."""
        y = x + self.attn(self.norm1(x))
        y = y + self.mlp(self.norm2(y))
        if self.local is not None:
            y = y + self.local(x)
        return y


def _stage(channels: int, heads: int, depth: int, cfg: ModelConfig) -> nn.Sequential:
    return nn.Sequential(*[GLSFViT(channels, heads, cfg, shift=i % 2 == 1) for i in range(depth)])


class Encoder(nn.Module):
    """Encoder E: flat (N blocks at full resolution) or a U-shaped hierarchy.

    Hierarchical levels run at 1, 1/2, 1/4, ... resolution with widths C, 2C,
    4C; down by pixel-unshuffle, up by pixel-shuffle, with skip connections.
    Both return ``F_wk`` with ``C`` channels at full resolution.
    """

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        c = cfg.width
        n = cfg.levels
        self.down = nn.ModuleList()
        self.up = nn.ModuleList()
        self.fuse = nn.ModuleList()
        self.enc = nn.ModuleList()
        self.dec = nn.ModuleList()
        for level in range(n):
            w = c * 2**level
            self.enc.append(_stage(w, cfg.heads[level], cfg.depths[level], cfg))
            if level < n - 1:
                self.down.append(nn.Sequential(nn.Conv2d(w, w // 2, 3, padding=1), nn.PixelUnshuffle(2)))
        for level in reversed(range(n - 1)):
            w = c * 2**level
            self.up.append(nn.Sequential(nn.Conv2d(2 * w, 4 * w, 3, padding=1), nn.PixelShuffle(2)))
            self.fuse.append(nn.Conv2d(2 * w, w, 1))
            self.dec.append(_stage(w, cfg.heads[level], cfg.depths[level], cfg))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, C, H, W) -> (B, C, H, W)``; H, W multiples of ``cfg.pad_multiple``."""
        skips = []
        for level, stage in enumerate(self.enc):
            x = stage(x)
            if level < len(self.down):
                skips.append(x)
                x = self.down[level](x)
        for up, fuse, stage in zip(self.up, self.fuse, self.dec, strict=True):
            x = stage(fuse(torch.cat([up(x), skips.pop()], dim=1)))
        return x


class GKFM(nn.Module):
    """Gated knowledge filtering module, eq. 11: ``Conv_2(F_wk * SiLU(FC_2(Pool F_wk)))``."""

    def __init__(self, channels: int, reduction: int) -> None:
        super().__init__()
        self.gate = ChannelGate(channels, reduction)
        self.refine = nn.Sequential(conv3(channels, channels), nn.GELU(), conv3(channels, channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, C, H, W) -> (B, C, H, W)``."""
        return self.refine(self.gate(x))


class RestorationHead(nn.Module):
    """``Conv_3`` of eq. 12 on the routed atoms, predicting a residual for the input."""

    def __init__(self, cin: int, channels: int) -> None:
        super().__init__()
        self.body = nn.Sequential(
            conv3(cin, channels), nn.GELU(), conv3(channels, channels), nn.GELU(), conv3(channels, 3)
        )
        # Start as the identity map: an untrained head returns its input instead
        # of noise, which shortens the plateau before the residual is learnt.
        nn.init.zeros_(self.body[-1].weight)
        nn.init.zeros_(self.body[-1].bias)

    def forward(self, feats: torch.Tensor, image: torch.Tensor) -> torch.Tensor:
        """``(B, cin, H, W), (B, 3, H, W) -> (B, 3, H, W)``."""
        return image + self.body(feats)


class RecognitionHead(nn.Module):
    """``FC(Pool(Conv_3(F_rk, F_sk)))`` of eq. 12: logits for (rain, snow).

    With ``pixels`` (``ModelConfig.recog_pixels``) a second branch reads the image: its high-pass (minus a 7x7
    box blur, which drops the veil both weathers share) through four small convolutions (two of stride 2), mean-
    and max-pooled — a thin streak or a flake survives a max where a spatial mean of the atoms averages it away.
    Its logits add to eq. 12's; its last layer starts at zero, so a head warm-started from eq. 12 weights begins
    with their answers.
    """

    def __init__(self, cin: int, channels: int, pixels: bool = False) -> None:
        super().__init__()
        self.body = nn.Sequential(
            conv3(cin, channels), nn.GELU(), conv3(channels, channels), nn.GELU(), conv3(channels, channels)
        )
        # Normalising the pooled vector keeps early logits small: with the MSE
        # recognition loss a saturated softmax has no gradient to recover from.
        self.norm = nn.LayerNorm(channels)
        self.fc = nn.Linear(channels, 2)
        self.pixels: nn.Sequential | None = None
        if pixels:
            c = 16
            self.pixels = nn.Sequential(
                nn.Conv2d(3, c, 3, 1, 1), nn.GELU(), nn.Conv2d(c, c, 3, 2, 1), nn.GELU(),
                nn.Conv2d(c, 2 * c, 3, 2, 1), nn.GELU(), nn.Conv2d(2 * c, 2 * c, 3, 1, 1),
            )  # fmt: skip
            self.pixels_norm = nn.LayerNorm(4 * c)
            self.pixels_fc = nn.Linear(4 * c, 2)
            nn.init.zeros_(self.pixels_fc.weight)
            nn.init.zeros_(self.pixels_fc.bias)

    def forward(self, feats: torch.Tensor, image: torch.Tensor | None = None) -> torch.Tensor:
        """``(B, cin, H, W)`` and, with a pixel branch, the ``(B, 3, H, W)`` image -> ``(B, 2)``."""
        logits = self.fc(self.norm(self.body(feats).mean(dim=(2, 3))))
        if self.pixels is None:
            return logits
        if image is None:
            raise ValueError("this recognition head also reads the image: pass it")
        return logits + self.pixel_logits(image)

    def pixel_logits(self, image: torch.Tensor) -> torch.Tensor:
        """The pixel branch's share of the logits, ``(B, 3, H, W) -> (B, 2)``."""
        assert self.pixels is not None, "this head has no pixel branch"
        y = self.pixels(high_pass(image))
        return self.pixels_fc(self.pixels_norm(torch.cat([y.mean(dim=(2, 3)), y.amax(dim=(2, 3))], 1)))


class DRM(nn.Module):
    """Dimension reduction module, shared by the three atoms: an atom map to its ``C x features`` matrix M.

    One row per channel of the atom, as the paper's M is C x F: each channel's map is pooled to ``pool x pool``
    and projected by one linear map shared by all channels and atoms. Nothing mixes channels, so the contrast
    loss can only be lowered by making the atoms themselves differ.
    """

    def __init__(self, pool: int, features: int) -> None:
        super().__init__()
        self.pool = nn.AdaptiveAvgPool2d(pool)
        self.fc = nn.Linear(pool * pool, features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, C, H, W) -> (B, C, features)``."""
        return self.fc(self.pool(x).flatten(2))


class SmartAssignNet(nn.Module):
    """The whole network, configured by a :class:`ModelConfig` (variants are flags)."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.cfg = cfg
        c = cfg.width
        self.embed = conv3(3, c)
        self.sam = SAM(c)
        self.encoder = Encoder(cfg)
        self.gkfm = nn.ModuleDict({a: GKFM(c, cfg.gate_reduction) for a in cfg.atoms})
        self.heads = nn.ModuleDict({t: RestorationHead(c * len(self.route(t)) or c, c) for t in cfg.tasks})
        self.recognizer = (
            RecognitionHead(2 * c if cfg.atoms else c, c, cfg.recog_pixels)
            if cfg.uses_recognition
            else None
        )
        self.drm = DRM(cfg.drm_pool, cfg.drm_features) if cfg.uses_contrast else None
        if cfg.freeze_before_tkff:
            for module in (self.embed, self.sam, self.encoder, self.gkfm):
                module.requires_grad_(False)

    def route(self, task: str) -> tuple[str, ...]:
        """TKFF: the atoms the head of ``task`` reads (empty: it reads ``F_wk``)."""
        unique = ATOM_OF_TASK[task]
        return {"smartassign": (unique, "ck"), "shared": (), "common": ("ck",), "unique": (unique,)}[self.cfg.routing]

    def forward(self, image: torch.Tensor, tasks: Collection[str] | None = None) -> Output:
        """``(B, 3, H, W)`` in [0, 1], any H and W -> :class:`Output` at the input size.

        ``tasks``: the outputs to compute, any of ``"rain"``, ``"snow"`` (restoration heads) and
        ``"recognition"`` (logits); only the atoms they read are made, and no DRM embeddings. ``None`` (training):
        every output, every atom and the embeddings.
        """
        if tasks is not None:
            known = {*self.heads, *(("recognition",) if self.recognizer is not None else ())}
            if not set(tasks) <= known:
                raise ValueError(f"this model computes {sorted(known)}, not {sorted(set(tasks) - known)}")
        h, w = image.shape[-2:]
        x, _ = pad_to_multiple(image, self.cfg.pad_multiple)
        # NHWC inside: oneDNN's NHWC convolutions are 1.5-2.5x faster than NCHW on
        # CPU (cuDNN's too in bf16), and the LayerNorms and attention token views
        # become free views instead of copies. Every layer keeps the layout.
        x = x.contiguous(memory_format=torch.channels_last)
        f_wk = self.encoder(self.sam(self.embed(x)))
        heads = [t for t in self.heads if tasks is None or t in tasks]
        recognize = self.recognizer is not None and (tasks is None or "recognition" in tasks)
        recognized = ("rk", "sk") if self.gkfm else ()
        needed = {a for t in heads for a in self.route(t)} | (set(recognized) if recognize else set())
        atoms = {a: m(f_wk) for a, m in self.gkfm.items() if tasks is None or a in needed}

        def gather(names: tuple[str, ...]) -> torch.Tensor:
            return torch.cat([atoms[n] for n in names], dim=1) if names else f_wk

        restored = {t: self.heads[t](gather(self.route(t)), x)[..., :h, :w] for t in heads}
        logits = self.recognizer(gather(recognized), x if self.cfg.recog_pixels else None) if recognize else None
        embeddings = {a: self.drm(f) for a, f in atoms.items()} if self.drm is not None and tasks is None else {}
        return Output(
            derain=restored.get("rain"),
            desnow=restored.get("snow"),
            logits=logits,
            atoms=atoms,
            embeddings=embeddings,
        )


def build_model(name_or_config: str | ModelConfig = "small", variant: str = "V6") -> SmartAssignNet:
    """Build a network from a preset name (``tiny``, ``small``, ``base``) or a config."""
    return SmartAssignNet(model_config(name_or_config, variant))


def count_parameters(model: nn.Module, trainable_only: bool = False) -> int:
    """Number of (trainable) parameters."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)


def count_flops(model: nn.Module, size: int = 256) -> int:
    """FLOPs of one forward pass on a ``(1, 3, size, size)`` image, by torch's FlopCounterMode."""
    from torch.utils.flop_counter import FlopCounterMode

    param = next(model.parameters())
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model(torch.rand(1, 3, size, size, device=param.device, dtype=param.dtype))
    return counter.get_total_flops()


__all__ = ["Output", "SmartAssignNet", "build_model", "count_flops", "count_parameters"]
