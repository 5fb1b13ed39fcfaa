"""Shared building blocks: channel LayerNorm, the SiLU channel gate, and two attention kinds.

All modules take and return channels-first feature maps ``(B, C, H, W)``.
Both attention kinds cost time linear in the number of pixels.

Test-time local statistics (TLC, Chu et al., ECCV 2022): the channel gate and channel attention pool over their
whole input, which in training is always a crop of one size. Given a ``local_window`` (in pixels of the map the
module sees), an eval-mode module pools instead over the window of that size around each pixel, shifted to lie
inside the map, so a large photo is gated and attended with the statistics of crop-sized regions, as in training,
and a tile of it sees the statistics the whole photo does (but within half a window of the tile's inner edges).
Windows are placed on a grid of cells of about a twelfth of the window, at least 4 pixels (the statistics move
in steps of one cell), and span whole cells, at least the window; on a map no larger than the window they are
the global pools exactly. Training mode always pools globally.

Memory layout: every module accepts either layout, but the network feeds them
``channels_last`` maps (see ``SmartAssignNet.forward``). Then the channel
LayerNorm and the attention token views below are free views instead of copies,
and oneDNN (CPU) and cuDNN run their fast NHWC convolutions. The modules keep a
``channels_last`` input ``channels_last`` on the way out.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

CELLS_PER_WINDOW = 12  # local statistics move in steps of about 1/12 of the window ...
MIN_CELL = 4  # ... of at least 4 pixels: attention keeps a (d, d) matrix per cell, d = 24 values per pixel


def window_matrix(n: int, size: int, like: torch.Tensor) -> torch.Tensor:
    """``(n, n)`` 0/1 matrix summing, for each of ``n`` cells, the window of ``size`` cells around it.

    The window is shifted to lie inside (all cells if fewer). Built from ``arange``, without branching on ``n``,
    so that one ONNX graph serves every size.
    """
    index = torch.arange(n, device=like.device)
    start = torch.minimum((index - size // 2).clamp(min=0), (index[-1] + 1 - size).clamp(min=0))
    inside = (index[None, :] >= start[:, None]) & (index[None, :] < start[:, None] + size)
    return inside.to(like.dtype)


def cell_side(window: int) -> int:
    """Side in pixels of the cells that a local window of ``window`` pixels moves by."""
    return min(window, max(MIN_CELL, round(window / CELLS_PER_WINDOW)))


class CellWindows:
    """An ``H x W`` map cut into square cells, each with the window of cells around it that TLC pools over.

    Sizes use only non-negative integer arithmetic (ONNX divides integers toward zero, Python toward -inf).
    """

    def __init__(self, h: int, w: int, window: int, like: torch.Tensor) -> None:
        self.cell = cell_side(window)
        size = -(-window // self.cell)  # at least the window: a map no larger sees the global pools
        self.h, self.w = h, w
        self.rows, self.cols = (h + self.cell - 1) // self.cell, (w + self.cell - 1) // self.cell
        self.row_windows = window_matrix(self.rows, size, like)
        self.col_windows = window_matrix(self.cols, size, like)

    def pad(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, C, H, W)`` zero-padded at bottom/right to whole cells (zeros add nothing to sums).

        F.pad copies even when nothing is added; an export always pads, so that its graph serves every size.
        """
        if not torch.compiler.is_compiling() and self.h % self.cell == 0 and self.w % self.cell == 0:
            return x
        return F.pad(x, (0, self.cols * self.cell - self.w, 0, self.rows * self.cell - self.h))

    def cell_sums(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, C, H, W) -> (B, C, rows, cols)``: sums over each cell's pixels."""
        # Not divisor_override=1: the ONNX exporter drops it.
        return F.avg_pool2d(self.pad(x), self.cell) * self.cell**2 if self.cell > 1 else x

    def window_sums(self, cells: torch.Tensor, dim: int) -> torch.Tensor:
        """Sums over each cell's window; the cell axes of ``cells`` are ``dim`` and ``dim + 1`` (any after them)."""
        lead = cells.shape[:dim]
        x = self.col_windows @ cells.reshape(*lead, self.rows, self.cols, -1)
        return (self.row_windows @ x.reshape(*lead, self.rows, -1)).reshape(cells.shape)

    def window_pixels(self, like: torch.Tensor) -> torch.Tensor:
        """``(rows, cols)``: pixels in each cell's window."""
        counts = []
        for n, length in ((self.rows, self.h), (self.cols, self.w)):
            start = self.cell * torch.arange(n, device=like.device)
            counts.append((length - start).clamp(max=self.cell).to(like.dtype))
        return (self.row_windows @ counts[0])[:, None] * (self.col_windows @ counts[1])


class LayerNorm2d(nn.Module):
    """LayerNorm over the channel dimension of a ``(B, C, H, W)`` map."""

    def __init__(self, channels: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(channels, eps=eps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, C, H, W) -> (B, C, H, W)``; both permutes are free views on ``channels_last`` input."""
        return self.norm(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)


class ChannelGate(nn.Module):
    """``x * SiLU(FC_2(AvgPool(x)))``: the gate of eqs. 9 and 11.

    ``local_window`` (pixels of this module's map; None: global): the pool of test-time local statistics.
    """

    def __init__(self, channels: int, reduction: int) -> None:
        super().__init__()
        hidden = max(channels // reduction, 4)
        self.fc = nn.Sequential(nn.Linear(channels, hidden), nn.GELU(), nn.Linear(hidden, channels))
        self.local_window: int | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, C, H, W) -> (B, C, H, W)``."""
        if self.training or self.local_window is None:
            gate = F.silu(self.fc(x.mean(dim=(2, 3))))
            return x * gate[:, :, None, None]
        grid = CellWindows(*x.shape[-2:], self.local_window, x)
        means = grid.window_sums(grid.cell_sums(x), 2) / grid.window_pixels(x)  # (B, C, rows, cols)
        gate = F.silu(self.fc(means.permute(0, 2, 3, 1))).permute(0, 3, 1, 2)
        return x * F.interpolate(gate, scale_factor=grid.cell, mode="nearest")[:, :, : grid.h, : grid.w]


class ChannelAttention(nn.Module):
    """Multi-head "transposed" attention across channels (Restormer's MDTA).

    The attention map is ``(C/h, C/h)`` per head, so cost is linear in pixels. ``local_window`` (pixels of this
    module's map; None: global): the ``q k^T`` statistics of test-time local statistics, one attention map per
    cell from the window around it (TLC's local MDTA).
    """

    def __init__(self, channels: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.temperature = nn.Parameter(torch.ones(heads, 1, 1))
        self.qkv = nn.Conv2d(channels, channels * 3, 1)
        self.qkv_dw = nn.Conv2d(channels * 3, channels * 3, 3, padding=1, groups=channels * 3)
        self.proj = nn.Conv2d(channels, channels, 1)
        self.local_window: int | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, C, H, W) -> (B, C, H, W)``.

        Computed on pixel tokens ``(B, heads, HW, d)``, a free view of a
        ``channels_last`` qkv map. The L2 normalisation of q and k over pixels is
        folded into the small ``(d, d)`` score matrix, ``q_n k_n^T = (q k^T) /
        (|q| |k|^T)``, instead of dividing the two big tensors (F.normalize).
        """
        if not self.training and self.local_window is not None:
            return self._local(x, self.local_window)
        b, c, h, w = x.shape
        d = c // self.heads
        tokens = self.qkv_dw(self.qkv(x)).permute(0, 2, 3, 1).reshape(b, h * w, 3, self.heads, d)
        q, k, v = tokens.permute(2, 0, 3, 1, 4).unbind(0)  # (B, heads, HW, d) each
        # |q| and |k| over pixels in one reduction; sqrt(sum of squares) is ~5x faster
        # than torch.linalg.vector_norm along this strided axis. 1e-12: F.normalize's eps.
        norms = tokens[:, :, :2].square().sum(dim=1).sqrt().clamp_min(1e-12)  # (B, 2, heads, d)
        scale = self.temperature / (norms[:, 0, :, :, None] * norms[:, 1, :, None, :])  # (B, heads, d, d)
        attn = (q.transpose(-2, -1) @ k) * scale
        out = v @ attn.softmax(dim=-1).transpose(-2, -1)  # (B, heads, HW, d)
        out = out.transpose(1, 2).reshape(b, h, w, c).permute(0, 3, 1, 2)
        return self.proj(out)

    def _local(self, x: torch.Tensor, window: int) -> torch.Tensor:
        """The forward with ``q k^T`` and the norms of q and k summed over each cell's local window.

        The map is cut into cells ``(B, heads, rows, cols, cell^2, d)`` (zero padding adds nothing to sums);
        per cell, the sums of ``q k^T``, ``|q|^2`` and ``|k|^2`` over its pixels, then over its window, make
        one ``(d, d)`` attention map that mixes the channels of that cell's pixels.
        """
        b, c, h, w = x.shape
        d = c // self.heads
        grid = CellWindows(h, w, window, x)
        cell, rows, cols = grid.cell, grid.rows, grid.cols
        qkv = grid.pad(self.qkv_dw(self.qkv(x))).permute(0, 2, 3, 1)  # (B, rows * cell, cols * cell, 3C)
        cells = qkv.reshape(b, rows, cell, cols, cell, 3, self.heads, d).permute(5, 0, 6, 1, 3, 2, 4, 7)
        q, k, v = cells.reshape(3, b, self.heads, rows, cols, cell * cell, d).unbind(0)  # one copy, contiguous
        gram = grid.window_sums(q.transpose(-2, -1) @ k, 2)  # (B, heads, rows, cols, d, d)
        norms = grid.window_sums(torch.stack([q.square().sum(-2), k.square().sum(-2)]), 3).sqrt()
        norms = norms.clamp_min(1e-12)  # (2, B, heads, rows, cols, d)
        scale = self.temperature[:, None, None] / (norms[0, ..., :, None] * norms[1, ..., None, :])
        out = v @ (gram * scale).softmax(dim=-1).transpose(-2, -1)  # (B, heads, rows, cols, cell^2, d)
        out = out.reshape(b, self.heads, rows, cols, cell, cell, d).permute(0, 2, 4, 3, 5, 1, 6)
        return self.proj(out.reshape(b, rows * cell, cols * cell, c)[:, :h, :w].permute(0, 3, 1, 2))


class WindowAttention(nn.Module):
    """Multi-head self-attention (eq. 8) inside non-overlapping windows of pixel tokens.

    With ``shift`` the windows are displaced by half a window (Swin), with the
    mask that keeps tokens from attending across the wrapped border. Maps whose
    sides are not a multiple of the window are zero-padded inside the module.

    That mask is zero except in the last row and the last column of windows, so
    all windows first attend with the relative-position bias alone and those
    border windows are then recomputed with their mask: a full ``(nW, T, T)``
    mask would cost more memory than the activations (268 MB at 1024^2).
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
        """``(B, C, H, W) -> (B, C, H, W)``; windows are cut from the ``(B, H, W, 3C)`` view."""
        b, c, h, w = x.shape
        ws = self.window
        ph, pw = (-h) % ws, (-w) % ws
        qkv = self.qkv(x).permute(0, 2, 3, 1)  # (B, H, W, 3C), a free view of channels_last
        if ph or pw:
            qkv = F.pad(qkv, (0, 0, 0, pw, 0, ph))
        hp, wp = h + ph, w + pw
        shift = self.shift if min(hp, wp) > ws else 0
        if shift:
            qkv = torch.roll(qkv, (-shift, -shift), dims=(1, 2))
        nh, nw, d = hp // ws, wp // ws, c // self.heads
        # (B, H, W, 3C) -> (3, B, nh, nw, heads, T, d)
        t = qkv.reshape(b, nh, ws, nw, ws, 3, self.heads, d).permute(5, 0, 1, 3, 6, 2, 4, 7)
        q, k, v = t.reshape(3, b, nh, nw, self.heads, ws * ws, d).unbind(0)
        bias = self.rel_bias[:, self.rel_index].to(q.dtype)  # (heads, T, T)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=bias)  # (B, nh, nw, heads, T, d)
        if shift:
            # The 4 windows of a 2x2-window map: interior, right edge, bottom edge, corner.
            mask = self._shift_mask(2 * ws, 2 * ws, x.device).to(q.dtype)[:, None]  # (4, 1, T, T)
            row_mask = torch.cat([mask[2:3].expand(nw - 1, -1, -1, -1), mask[3:4]])  # (nw, 1, T, T)
            row = F.scaled_dot_product_attention(q[:, -1], k[:, -1], v[:, -1], attn_mask=bias + row_mask)
            col = F.scaled_dot_product_attention(q[:, :-1, -1], k[:, :-1, -1], v[:, :-1, -1], attn_mask=bias + mask[1])
            out = torch.cat([torch.cat([out[:, :-1, :-1], col[:, :, None]], dim=2), row[:, None]], dim=1)
        out = out.reshape(b, nh, nw, self.heads, ws, ws, d).permute(0, 1, 4, 2, 5, 3, 6).reshape(b, hp, wp, c)
        if shift:
            out = torch.roll(out, (shift, shift), dims=(1, 2))
        return self.proj(out[:, :h, :w].permute(0, 3, 1, 2))


class Mlp(nn.Module):
    """Pointwise MLP of eq. 7: 1x1 conv, GELU, 1x1 conv."""

    def __init__(self, channels: int, ratio: float) -> None:
        super().__init__()
        hidden = int(channels * ratio)
        self.net = nn.Sequential(nn.Conv2d(channels, hidden, 1), nn.GELU(), nn.Conv2d(hidden, channels, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, C, H, W) -> (B, C, H, W)``."""
        return self.net(x)


def high_pass(x: torch.Tensor, size: int = 7) -> torch.Tensor:
    """``x`` minus its ``size`` x ``size`` box blur (replicate-padded, odd ``size``): drops smooth content such as
    a veil, keeps streaks, flakes and texture."""
    r = size // 2
    return x - F.avg_pool2d(F.pad(x, (r, r, r, r), mode="replicate"), size, 1)


def pad_to_multiple(x: torch.Tensor, multiple: int) -> tuple[torch.Tensor, tuple[int, int]]:
    """Pad ``(B, C, H, W)`` at bottom/right to a multiple; reflect where possible, else replicate."""
    h, w = x.shape[-2:]
    ph, pw = (-h) % multiple, (-w) % multiple
    if ph or pw:
        mode = "reflect" if ph < h and pw < w else "replicate"
        x = F.pad(x, (0, pw, 0, ph), mode=mode)
    return x, (h, w)
