"""The optimised attention layers compute exactly the function of their plain reference formulas.

The references are the straightforward NCHW implementations the layers were
first written as (F.normalize, a full ``(nW, T, T)`` shift mask). Bundled
weights were trained against that function, so the fast paths must match it to
1e-5, in both memory layouts, forward and backward. Test-time local statistics
are checked against loops over cells that pool each window's pixels directly.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from smartassign.layers import ChannelAttention, ChannelGate, LayerNorm2d, WindowAttention, window_matrix


def reference_channel_attention(m: ChannelAttention, x: torch.Tensor) -> torch.Tensor:
    """Restormer's MDTA as written: normalise q and k over pixels, ``(d, d)`` scores per head."""
    b, c, h, w = x.shape
    q, k, v = m.qkv_dw(m.qkv(x)).reshape(b, 3, m.heads, c // m.heads, h * w).unbind(1)
    attn = (F.normalize(q, dim=-1) @ F.normalize(k, dim=-1).transpose(-2, -1)) * m.temperature
    return m.proj((attn.softmax(dim=-1) @ v).reshape(b, c, h, w))


def reference_window_attention(m: WindowAttention, x: torch.Tensor) -> torch.Tensor:
    """Swin-style windows on the NCHW map with the full per-window shift mask."""
    b, c, h, w = x.shape
    ws = m.window
    ph, pw = (-h) % ws, (-w) % ws
    qkv = F.pad(m.qkv(x), (0, pw, 0, ph))
    hp, wp = h + ph, w + pw
    shift = m.shift if min(hp, wp) > ws else 0
    if shift:
        qkv = torch.roll(qkv, (-shift, -shift), dims=(2, 3))
    nh, nw, d = hp // ws, wp // ws, c // m.heads
    t = qkv.reshape(b, 3, m.heads, d, nh, ws, nw, ws).permute(1, 0, 4, 6, 2, 5, 7, 3)
    t = t.reshape(3, b * nh * nw, m.heads, ws * ws, d)
    bias = m.rel_bias[:, m.rel_index]
    if shift:
        mask = m._shift_mask(hp, wp, x.device)
        bias = (bias[None, None] + mask[None, :, None]).expand(b, -1, -1, -1, -1)
        bias = bias.reshape(b * nh * nw, m.heads, ws * ws, ws * ws)
    out = F.scaled_dot_product_attention(t[0], t[1], t[2], attn_mask=bias)
    out = out.reshape(b, nh, nw, m.heads, ws, ws, d).permute(0, 3, 6, 1, 4, 2, 5).reshape(b, c, hp, wp)
    if shift:
        out = torch.roll(out, (shift, shift), dims=(2, 3))
    return m.proj(out[:, :, :h, :w])


def reference_layer_norm(m: LayerNorm2d, x: torch.Tensor) -> torch.Tensor:
    """LayerNorm over channels by the textbook formula."""
    mean = x.mean(dim=1, keepdim=True)
    var = x.var(dim=1, unbiased=False, keepdim=True)
    return (x - mean) / torch.sqrt(var + m.norm.eps) * m.norm.weight[:, None, None] + m.norm.bias[:, None, None]


def _perturbed(module: torch.nn.Module) -> torch.nn.Module:
    """Move every parameter off its initial value (zeros, ones) so each one matters."""
    torch.manual_seed(0)
    with torch.no_grad():
        for p in module.parameters():
            p.add_(0.1 * torch.randn_like(p))
    return module


CASES = [
    ("channel", lambda: ChannelAttention(32, 2), reference_channel_attention),
    ("window", lambda: WindowAttention(32, 2, 8, shift=False), reference_window_attention),
    ("window-shift", lambda: WindowAttention(32, 4, 8, shift=True), reference_window_attention),
    ("layernorm", lambda: LayerNorm2d(32), reference_layer_norm),
]


@pytest.mark.parametrize("name,make,reference", CASES, ids=[c[0] for c in CASES])
@pytest.mark.parametrize("shape", [(2, 32, 24, 40), (1, 32, 21, 35), (1, 32, 8, 8)], ids=str)
@pytest.mark.parametrize("channels_last", [False, True], ids=["nchw", "nhwc"])
def test_matches_reference(name: str, make, reference, shape: tuple[int, ...], channels_last: bool) -> None:
    """Forward and input/parameter gradients agree with the reference to 1e-5."""
    module = _perturbed(make())
    x = torch.randn(shape)
    x_fast = x.contiguous(memory_format=torch.channels_last) if channels_last else x.clone()
    x.requires_grad_(True)
    x_fast.requires_grad_(True)
    expected = reference(module, x)
    got = module(x_fast)
    assert got.shape == expected.shape
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)
    if channels_last:
        assert got.is_contiguous(memory_format=torch.channels_last)

    grad_out = torch.randn_like(expected)
    ref_grads = torch.autograd.grad(expected, [x, *module.parameters()], grad_out)
    fast_grads = torch.autograd.grad(got, [x_fast, *module.parameters()], grad_out)
    for g_fast, g_ref in zip(fast_grads, ref_grads, strict=True):
        torch.testing.assert_close(g_fast, g_ref, atol=1e-4, rtol=1e-4)


# --- test-time local statistics (TLC) -----------------------------------------------------------------------------


def _cell_and_size(window: int) -> tuple[int, int]:
    """Cells of a twelfth of the window but at least 4 pixels (at most the window); the window in whole cells."""
    cell = min(window, max(4, round(window / 12)))
    return cell, -(-window // cell)


def _windows(length: int, cell: int, size: int) -> list[tuple[int, int]]:
    """Pixel span ``[start, end)`` of each cell's window along one axis: ``size`` cells from ``i - size // 2``,
    shifted to lie inside (all cells if there are fewer)."""
    cells = -(-length // cell)
    spans = []
    for i in range(cells):
        first = min(max(i - size // 2, 0), max(cells - size, 0))
        spans.append((first * cell, min((first + size) * cell, length)))
    return spans


def reference_local_channel_attention(m: ChannelAttention, x: torch.Tensor, window: int) -> torch.Tensor:
    """MDTA per cell: q and k normalised over the pixels of the cell's window, applied to the cell's v."""
    b, c, h, w = x.shape
    cell, size = _cell_and_size(window)
    q, k, v = m.qkv_dw(m.qkv(x)).reshape(b, 3, m.heads, c // m.heads, h, w).unbind(1)
    out = torch.zeros_like(v)
    for i, (y0, y1) in enumerate(_windows(h, cell, size)):
        for j, (x0, x1) in enumerate(_windows(w, cell, size)):
            qw, kw = (t[..., y0:y1, x0:x1].flatten(-2) for t in (q, k))
            attn = (F.normalize(qw, dim=-1) @ F.normalize(kw, dim=-1).transpose(-2, -1)) * m.temperature
            rows, cols = slice(i * cell, (i + 1) * cell), slice(j * cell, (j + 1) * cell)
            vc = v[..., rows, cols]
            out[..., rows, cols] = (attn.softmax(dim=-1) @ vc.flatten(-2)).reshape(vc.shape)
    return m.proj(out.reshape(b, c, h, w))


def reference_local_gate(m: ChannelGate, x: torch.Tensor, window: int) -> torch.Tensor:
    """The gate of each cell from the mean of ``x`` over the pixels of its window."""
    h, w = x.shape[-2:]
    cell, size = _cell_and_size(window)
    out = torch.empty_like(x)
    for i, (y0, y1) in enumerate(_windows(h, cell, size)):
        for j, (x0, x1) in enumerate(_windows(w, cell, size)):
            gate = F.silu(m.fc(x[..., y0:y1, x0:x1].mean(dim=(2, 3))))
            rows, cols = slice(i * cell, (i + 1) * cell), slice(j * cell, (j + 1) * cell)
            out[..., rows, cols] = x[..., rows, cols] * gate[:, :, None, None]
    return out


LOCAL_CASES = [
    ("channel", lambda: ChannelAttention(32, 2), reference_local_channel_attention),
    ("gate", lambda: ChannelGate(32, 4), reference_local_gate),
]


@pytest.mark.parametrize("name,make,reference", LOCAL_CASES, ids=[c[0] for c in LOCAL_CASES])
@pytest.mark.parametrize(("shape", "window"), [((2, 32, 24, 40), 8), ((1, 32, 21, 35), 12), ((1, 32, 9, 70), 16)])
@pytest.mark.parametrize("channels_last", [False, True], ids=["nchw", "nhwc"])
def test_local_statistics_match_their_reference(
    name: str, make, reference, shape: tuple[int, ...], window: int, channels_last: bool
) -> None:
    """In eval mode, a ``local_window`` pools over the window around each cell, cells cut at the border too."""
    module = _perturbed(make()).eval()
    module.local_window = window
    x = torch.randn(shape)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    with torch.no_grad():
        torch.testing.assert_close(module(x), reference(module, x, window), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("name,make,reference", CASES[:1] + [("gate", lambda: ChannelGate(32, 4), None)])
def test_a_window_as_large_as_the_map_is_the_global_pool_and_training_ignores_it(name: str, make, reference) -> None:
    module = _perturbed(make()).eval()
    x = torch.randn(1, 32, 24, 40)
    with torch.no_grad():
        global_pool = module(x)
        module.local_window = 40
        torch.testing.assert_close(module(x), global_pool, atol=1e-6, rtol=1e-6)
        module.local_window = 8
        assert (module(x) - global_pool).abs().max() > 1e-3
        torch.testing.assert_close(module.train()(x), global_pool, atol=1e-6, rtol=1e-6)


@pytest.mark.parametrize(("n", "size"), [(1, 12), (5, 12), (12, 12), (13, 12), (30, 7), (30, 1)])
def test_window_matrix_rows_are_windows_shifted_inside(n: int, size: int) -> None:
    matrix = window_matrix(n, size, torch.zeros(()))
    for i, row in enumerate(matrix):
        on = row.nonzero().flatten().tolist()
        assert on == list(range(on[0], on[0] + min(size, n)))  # contiguous, full length (or all cells)
        assert on[0] <= i <= on[-1]
