"""The five losses on hand-built cases whose answer is known."""

from __future__ import annotations

import math

import pytest
import torch

from smartassign.config import LossConfig
from smartassign.losses import (
    DERIVATIVE_BANK,
    charbonnier,
    contrast_infonce,
    contrast_literal,
    gradient_loss,
    recognition_loss,
    sparsity_loss,
    total_loss,
)
from smartassign.model import Output


def test_charbonnier_is_eps_at_equality_and_grows_like_l1() -> None:
    x = torch.rand(2, 3, 8, 8)
    assert charbonnier(x, x, 1e-3).item() == pytest.approx(1e-3, rel=1e-4)
    assert charbonnier(x + 0.5, x, 1e-3).item() == pytest.approx(0.5, rel=1e-4)


def test_gradient_loss_zero_for_equal_and_for_constant_shift() -> None:
    x = torch.rand(1, 3, 16, 16)
    assert gradient_loss(x, x).item() == 0.0
    # A brightness offset has the same gradients: the gradient loss ignores it.
    assert gradient_loss(x + 0.2, x).item() == pytest.approx(0.0, abs=1e-10)


def test_gradient_loss_catches_a_shifted_edge() -> None:
    edge = torch.zeros(1, 1, 16, 16)
    edge[..., 8:] = 1.0
    shifted = torch.roll(edge, 2, dims=-1)
    shifted[..., :2] = 0.0
    assert gradient_loss(edge, edge).item() == 0.0
    assert gradient_loss(shifted, edge).item() > 0.01
    # Pixel-wise both images differ only in two columns; the gradient loss sees it.
    assert charbonnier(shifted, edge).item() < 0.15


def test_sparsity_bank_and_values() -> None:
    assert DERIVATIVE_BANK.shape == (5, 3, 3)
    assert torch.allclose(DERIVATIVE_BANK.sum(dim=(1, 2)), torch.zeros(5))  # derivatives kill constants
    flat = torch.full((1, 3, 12, 12), 0.4)
    assert sparsity_loss(flat, flat).item() == 0.0
    noisy = flat + 0.1 * torch.randn_like(flat)
    # The bank kills the flat image, so a flat R from a noisy I pays for the noise once (in I - R), and the
    # noisy R from a flat I pays for it twice (in R and in I - R = -noise): exactly twice as much.
    assert sparsity_loss(noisy, flat).item() == pytest.approx(2 * sparsity_loss(flat, noisy).item(), rel=1e-5)
    assert sparsity_loss(noisy, noisy).item() > 0.0


def test_sparsity_matches_eq_15_worked_by_hand() -> None:
    # One 3x3 channel: each filter gives one value, at the centre pixel e (neighbours a b c / d e f / g h i):
    # f - e, h - e, i - e, g - e (forward differences), b + d + f + h - 4e (Laplacian).
    pred = torch.tensor([[0.0, 0, 0], [0, 0, 1], [0, 0, 0]])  # R: f = 1      -> 1, 0, 0, 0, 1: mean 2/5
    degraded = torch.tensor([[0.0, 0, 0], [0, 2, 0], [0, 0, 0]])  # I - R: e = 2, f = -1 -> -3, -2, -2, -2, -9
    # Eq. 15: mean |omega * R| + mean |omega * (I - R)| = 2/5 + 18/5 = 4.
    assert sparsity_loss(pred[None, None], degraded[None, None]).item() == pytest.approx(4.0)
    # Channels are filtered one by one and averaged: a second, empty channel halves it.
    two = torch.stack([pred, torch.zeros(3, 3)])[None], torch.stack([degraded, torch.zeros(3, 3)])[None]
    assert sparsity_loss(*two).item() == pytest.approx(2.0)


def test_recognition_loss_orders_good_and_bad_predictions() -> None:
    labels = torch.tensor([0, 1, 1])
    good = torch.tensor([[5.0, -5.0], [-5.0, 5.0], [-4.0, 4.0]])
    assert recognition_loss(good, labels).item() < 1e-3
    assert recognition_loss(-good, labels).item() > 0.9
    assert recognition_loss(good, labels, "ce").item() < recognition_loss(-good, labels, "ce").item()


@pytest.mark.parametrize("kind", ["mse", "ce"])
def test_recognition_loss_ignores_samples_without_weather(kind) -> None:
    """A clear sample's label names the head that restores it, not weather it shows: its answer costs nothing."""
    labels = torch.tensor([0, 1, 1, 0])
    logits = torch.tensor([[5.0, -5.0], [-5.0, 5.0], [3.0, -3.0], [-2.0, 2.0]], requires_grad=True)
    weather = torch.tensor([True, True, False, False])
    masked = recognition_loss(logits, labels, kind, weather)
    assert masked.item() == pytest.approx(recognition_loss(logits[:2], labels[:2], kind).item())
    masked.backward()
    assert logits.grad[2:].abs().max() == 0 and logits.grad[:2].abs().max() > 0
    everyone = torch.ones(4, dtype=torch.bool)
    assert recognition_loss(logits, labels, kind, everyone).item() == pytest.approx(
        recognition_loss(logits, labels, kind).item()
    )
    none = recognition_loss(logits, labels, kind, torch.zeros(4, dtype=torch.bool))
    assert none.item() == 0 and none.requires_grad


def _atoms(spread: float, separation: float, seed: int = 0) -> dict[str, torch.Tensor]:
    """Three kinds of rows: a shared centre per kind, ``separation`` apart, with ``spread`` noise."""
    g = torch.Generator().manual_seed(seed)
    centres = torch.randn(3, 16, generator=g)
    base = torch.randn(16, generator=g)
    out = {}
    for i, name in enumerate(("rk", "ck", "sk")):
        centre = base + separation * centres[i]
        out[name] = (centre + spread * torch.randn(2, 8, 16, generator=g)).abs()
    return out


def test_infonce_falls_when_same_kind_closer_and_rises_when_kinds_closer() -> None:
    ref = contrast_infonce(_atoms(spread=1.0, separation=1.0)).item()
    tighter = contrast_infonce(_atoms(spread=0.3, separation=1.0)).item()
    kinds_closer = contrast_infonce(_atoms(spread=1.0, separation=0.2)).item()
    assert tighter < ref < kinds_closer


def test_infonce_is_finite_for_degenerate_rows() -> None:
    zeros = {k: torch.zeros(1, 4, 8, requires_grad=True) for k in ("rk", "ck", "sk")}
    loss = contrast_infonce(zeros)
    loss.backward()
    assert torch.isfinite(loss) and all(torch.isfinite(z.grad).all() for z in zeros.values())


def test_literal_form_rewards_mixing_kinds() -> None:
    """Eq. 17 as printed grows when kinds separate: the reason it is not the default."""
    mixed = contrast_literal(_atoms(spread=0.5, separation=0.1)).item()
    separated = contrast_literal(_atoms(spread=0.5, separation=2.0)).item()
    assert separated > mixed
    zeros = {k: torch.zeros(1, 4, 8) for k in ("rk", "ck", "sk")}
    assert torch.isfinite(contrast_literal(zeros))


def test_total_loss_uses_the_head_matching_each_label() -> None:
    target = torch.rand(2, 3, 8, 8)
    degraded = target + 0.2
    wrong = torch.zeros_like(target)
    out = Output(derain=torch.stack([target[0], wrong[1]]), desnow=torch.stack([wrong[0], target[1]]), logits=None)
    batch = {"input": degraded, "target": target, "label": torch.tensor([0, 1])}
    terms = total_loss(out, batch, LossConfig())
    assert terms["char"].item() == pytest.approx(1e-3, rel=1e-3)
    assert terms["grad"].item() == 0.0
    swapped = total_loss(out, {**batch, "label": torch.tensor([1, 0])}, LossConfig())
    assert swapped["char"].item() > 0.1
    assert set(terms) == {"char", "grad", "sparsity", "total"}


def test_total_loss_weights_match_eq_19() -> None:
    torch.manual_seed(0)
    target = torch.rand(2, 3, 8, 8)
    out = Output(
        derain=torch.rand(2, 3, 8, 8),
        desnow=torch.rand(2, 3, 8, 8),
        logits=torch.randn(2, 2),
        embeddings={k: torch.rand(2, 4, 6) for k in ("rk", "ck", "sk")},
    )
    batch = {"input": torch.rand(2, 3, 8, 8), "target": target, "label": torch.tensor([0, 1])}
    t = total_loss(out, batch, LossConfig())
    expected = t["char"] + t["grad"] + t["recog"] + 0.01 * t["sparsity"] + 0.001 * t["contra"]
    assert torch.allclose(t["total"], expected)
    lit = total_loss(out, batch, LossConfig(contrast="literal"))
    assert not torch.allclose(lit["contra"], t["contra"])


def test_contrast_through_the_shared_drm_cannot_be_met_with_identical_atoms() -> None:
    """With one DRM row per channel shared by all atoms, identical atoms give every anchor two negatives as close
    as itself, so supervised InfoNCE stays >= ln 3 however the DRM is trained; distinct atoms let it fall below."""
    from smartassign.model import DRM

    torch.manual_seed(0)
    atom = torch.randn(2, 8, 16, 16)
    distinct = {k: torch.randn(2, 8, 16, 16) + 3 * i for i, k in enumerate(("rk", "ck", "sk"))}

    def trained_loss(atoms: dict[str, torch.Tensor]) -> float:
        drm = DRM(pool=4, features=16)
        opt = torch.optim.Adam(drm.parameters(), lr=1e-2)
        for _ in range(150):
            loss = contrast_infonce({k: drm(v) for k, v in atoms.items()})
            opt.zero_grad()
            loss.backward()
            opt.step()
        with torch.no_grad():
            return float(contrast_infonce({k: drm(v) for k, v in atoms.items()}))

    same = trained_loss({"rk": atom, "ck": atom, "sk": atom})
    assert same >= math.log(3) - 1e-4
    assert trained_loss(distinct) < same - 0.3
