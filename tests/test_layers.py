"""The optimised attention layers compute exactly the function of their plain reference formulas.

The references are the straightforward NCHW implementations the layers were
first written as (F.normalize, a full ``(nW, T, T)`` shift mask). Bundled
weights were trained against that function, so the fast paths must match it to
1e-5, in both memory layouts, forward and backward.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from smartassign.layers import ChannelAttention, LayerNorm2d, WindowAttention


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
