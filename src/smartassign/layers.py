"""Shared building blocks: channel LayerNorm, the SiLU channel gate, and two attention kinds.

All modules take and return channels-first feature maps ``(B, C, H, W)``.
Both attention kinds cost time linear in the number of pixels.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class LayerNorm2d(nn.Module):
    """LayerNorm over the channel dimension of a ``(B, C, H, W)`` map."""

    def __init__(self, channels: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(channels, eps=eps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, C, H, W) -> (B, C, H, W)``."""
        return self.norm(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)


class ChannelGate(nn.Module):
    """``x * SiLU(FC_2(AvgPool(x)))``: the gate of eqs. 9 and 11."""

    def __init__(self, channels: int, reduction: int) -> None:
        super().__init__()
        hidden = max(channels // reduction, 4)
        self.fc = nn.Sequential(nn.Linear(channels, hidden), nn.ReLU(inplace=True), nn.Linear(hidden, channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, C, H, W) -> (B, C, H, W)``."""
        gate = F.silu(self.fc(x.mean(dim=(2, 3))))
        return x * gate[:, :, None, None]


class ChannelAttention(nn.Module):
    """Multi-head "transposed" attention across channels (Restormer's MDTA).

    The attention map is ``(C/h, C/h)`` per head, so cost is linear in pixels.
    """

    def __init__(self, channels: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.temperature = nn.Parameter(torch.ones(heads, 1, 1))
        self.qkv = nn.Conv2d(channels, channels * 3, 1)
        self.qkv_dw = nn.Conv2d(channels * 3, channels * 3, 3, padding=1, groups=channels * 3)
        self.proj = nn.Conv2d(channels, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, C, H, W) -> (B, C, H, W)``."""
        b, c, h, w = x.shape
        q, k, v = self.qkv_dw(self.qkv(x)).reshape(b, 3, self.heads, c // self.heads, h * w).unbind(1)
        q = F.normalize(q, dim=-1)
        k = F.normalize(k, dim=-1)
        attn = (q @ k.transpose(-2, -1)) * self.temperature
        out = attn.softmax(dim=-1) @ v
        return self.proj(out.reshape(b, c, h, w))


class WindowAttention(nn.Module):
    """Multi-head self-attention (eq. 8) inside non-overlapping windows of pixel tokens.

    With ``shift`` the windows are displaced by half a window (Swin), with the
    mask that keeps tokens from attending across the wrapped border. Maps whose
    sides are not a multiple of the window are zero-padded inside the module.
    """

    def __init__(self, channels: int, heads: int, window: int, shift: bool) -> None:
        super().__init__()
        self.heads = heads
        self.window = window
        self.shift = window // 2 if shift else 0
        self.qkv = nn.Conv2d(channels, channels * 3, 1)
        self.proj = nn.Conv2d(channels, channels, 1)
        coords = torch.stack(torch.meshgrid(torch.arange(window), torch.arange(window), indexing="ij")).flatten(1)
        rel = (coords[:, :, None] - coords[:, None, :]).permute(1, 2, 0) + window - 1
        self.register_buffer("rel_index", rel[..., 0] * (2 * window - 1) + rel[..., 1], persistent=False)
        self.rel_bias = nn.Parameter(torch.zeros(heads, (2 * window - 1) ** 2))
        nn.init.trunc_normal_(self.rel_bias, std=0.02)

    def _shift_mask(self, h: int, w: int, device: torch.device) -> torch.Tensor:
        """``(nW, T, T)`` additive mask for shifted windows; -inf across wrapped regions."""
        ws, s = self.window, self.shift
        region = torch.zeros(h, w, device=device)
        label = 0
        for hs in (slice(0, -ws), slice(-ws, -s), slice(-s, None)):
            for wsl in (slice(0, -ws), slice(-ws, -s), slice(-s, None)):
                region[hs, wsl] = label
                label += 1
        tokens = region.reshape(h // ws, ws, w // ws, ws).permute(0, 2, 1, 3).reshape(-1, ws * ws)
        diff = tokens[:, :, None] != tokens[:, None, :]
        return torch.zeros(diff.shape, device=device).masked_fill(diff, float("-inf"))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, C, H, W) -> (B, C, H, W)``."""
        b, c, h, w = x.shape
        ws = self.window
        ph, pw = (-h) % ws, (-w) % ws
        qkv = self.qkv(x)
        if ph or pw:
            qkv = F.pad(qkv, (0, pw, 0, ph))
        hp, wp = h + ph, w + pw
        shift = self.shift if min(hp, wp) > ws else 0
        if shift:
            qkv = torch.roll(qkv, (-shift, -shift), dims=(2, 3))
        nh, nw, d = hp // ws, wp // ws, c // self.heads
        # (B, 3C, H, W) -> (3, B*nW, heads, T, d)
        t = qkv.reshape(b, 3, self.heads, d, nh, ws, nw, ws)
        t = t.permute(1, 0, 4, 6, 2, 5, 7, 3).reshape(3, b * nh * nw, self.heads, ws * ws, d)
        bias = self.rel_bias[:, self.rel_index]  # (heads, T, T)
        if shift:
            mask = self._shift_mask(hp, wp, x.device)  # (nW, T, T)
            bias = (bias[None, None] + mask[None, :, None]).expand(b, -1, -1, -1, -1)
            bias = bias.reshape(b * nh * nw, self.heads, ws * ws, ws * ws)
        out = F.scaled_dot_product_attention(t[0], t[1], t[2], attn_mask=bias.to(t.dtype))
        out = out.reshape(b, nh, nw, self.heads, ws, ws, d).permute(0, 3, 6, 1, 4, 2, 5).reshape(b, c, hp, wp)
        if shift:
            out = torch.roll(out, (shift, shift), dims=(2, 3))
        return self.proj(out[:, :, :h, :w])


class Mlp(nn.Module):
    """Pointwise MLP of eq. 7: 1x1 conv, GELU, 1x1 conv."""

    def __init__(self, channels: int, ratio: float) -> None:
        super().__init__()
        hidden = int(channels * ratio)
        self.net = nn.Sequential(nn.Conv2d(channels, hidden, 1), nn.GELU(), nn.Conv2d(hidden, channels, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, C, H, W) -> (B, C, H, W)``."""
        return self.net(x)


def pad_to_multiple(x: torch.Tensor, multiple: int) -> tuple[torch.Tensor, tuple[int, int]]:
    """Pad ``(B, C, H, W)`` at bottom/right to a multiple; reflect where possible, else replicate."""
    h, w = x.shape[-2:]
    ph, pw = (-h) % multiple, (-w) % multiple
    if ph or pw:
        mode = "reflect" if ph < h and pw < w else "replicate"
        x = F.pad(x, (0, pw, 0, ph), mode=mode)
    return x, (h, w)
