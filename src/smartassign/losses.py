"""The five losses of the paper (section 3.3) as pure functions, and their weighted sum (eq. 19).

Images are ``(B, 3, H, W)`` floats; labels are ``(B,)`` ints, 0 = rain, 1 = snow.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from smartassign.config import LossConfig
from smartassign.model import Output

RAIN, SNOW = 0, 1

# The fixed 3x3 derivative bank omega of eq. 15: first-order forward
# differences (horizontal, vertical), the two diagonals, and the Laplacian.
DERIVATIVE_BANK = torch.tensor(
    [
        [[0, 0, 0], [0, -1, 1], [0, 0, 0]],
        [[0, 0, 0], [0, -1, 0], [0, 1, 0]],
        [[0, 0, 0], [0, -1, 0], [0, 0, 1]],
        [[0, 0, 0], [0, -1, 0], [1, 0, 0]],
        [[0, 1, 0], [1, -4, 1], [0, 1, 0]],
    ],
    dtype=torch.float32,
)


def charbonnier(pred: torch.Tensor, target: torch.Tensor, eps: float = 1e-3) -> torch.Tensor:
    """Eq. 13 per pixel: ``mean(sqrt((R - G)^2 + eps^2))``; equals ``eps`` when R = G."""
    return torch.sqrt((pred - target) ** 2 + eps * eps).mean()


def image_gradients(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Horizontal and vertical forward differences of ``(B, C, H, W)``."""
    return x[..., :, 1:] - x[..., :, :-1], x[..., 1:, :] - x[..., :-1, :]


def gradient_loss(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Eq. 14: MSE between the horizontal and vertical gradients of R and G."""
    (pdx, pdy), (tdx, tdy) = image_gradients(pred), image_gradients(target)
    return F.mse_loss(pdx, tdx) + F.mse_loss(pdy, tdy)


def sparsity_loss(pred: torch.Tensor, degraded: torch.Tensor) -> torch.Tensor:
    """Eq. 15 (quasi-sparsity): mean L1 of ``omega * R`` plus ``omega * (I - R)`` over the bank."""
    c = pred.shape[1]
    bank = DERIVATIVE_BANK.to(pred.device, pred.dtype)[:, None].repeat(c, 1, 1, 1)
    both = torch.cat([pred, degraded - pred], dim=0)
    return F.conv2d(both, bank, groups=c).abs().mean() * 2


def recognition_loss(
    logits: torch.Tensor, labels: torch.Tensor, kind: str = "mse", weather: torch.Tensor | None = None
) -> torch.Tensor:
    """Eq. 16: squared error between predicted class probabilities and one-hot labels; or cross-entropy.

    ``weather`` (B,) bool, if given, keeps only the samples that show weather: a clear sample has no true answer.
    The mean runs over those; with none, the loss is a zero that keeps the graph.
    """
    if kind == "ce":
        per = F.cross_entropy(logits, labels, reduction="none")
    else:
        per = (logits.softmax(dim=-1) - F.one_hot(labels, 2).to(logits.dtype)).square().mean(dim=-1)
    if weather is None:
        return per.mean()
    keep = weather.to(per.dtype)
    return (per * keep).sum() / keep.sum().clamp(min=1)


def contrast_literal(embeddings: dict[str, torch.Tensor], eps: float = 1e-6) -> torch.Tensor:
    """Eqs. 17-18 as printed: mean of ``M_a M_a^T / (M_a M_b^T + M_a M_c^T)`` over the three atoms.

    Kept for fidelity. Minimizing it shrinks self-similarity and grows
    cross-similarity, the opposite of the stated intent, and the denominator
    can pass through zero; the denominator is pushed away from zero by ``eps``
    keeping its sign.
    """
    names = list(embeddings)
    z = 0.0
    for a in names:
        ma = embeddings[a]
        self_term = ma @ ma.transpose(1, 2)
        cross = sum(ma @ embeddings[b].transpose(1, 2) for b in names if b != a)
        cross = torch.where(cross >= 0, cross.clamp(min=eps), cross.clamp(max=-eps))
        z = z + self_term / cross
    return (z / len(names)).mean()


def contrast_infonce(embeddings: dict[str, torch.Tensor], temperature: float = 0.1) -> torch.Tensor:
    """The intent of eq. 17 in a safe form: supervised InfoNCE over L2-normalized DRM rows.

    Each row of each atom's matrix is an anchor; rows of the same atom are its
    positives and rows of other atoms its negatives. Falls when same-kind rows
    move closer and rises when rows of different kinds move closer.
    """
    rows = torch.cat([F.normalize(m, dim=-1) for m in embeddings.values()], dim=1)  # (B, N, F)
    kinds = torch.cat([torch.full((m.shape[1],), i, device=rows.device) for i, m in enumerate(embeddings.values())])
    n = rows.shape[1]
    eye = torch.eye(n, dtype=torch.bool, device=rows.device)
    sim = (rows @ rows.transpose(1, 2)) / temperature
    sim = sim.masked_fill(eye, float("-inf"))
    log_prob = sim - torch.logsumexp(sim, dim=-1, keepdim=True)
    positive = (kinds[:, None] == kinds[None, :]) & ~eye
    return -(log_prob.masked_fill(~positive, 0).sum(-1) / positive.sum(-1).clamp(min=1)).mean()


def select_restoration(out: Output, labels: torch.Tensor) -> torch.Tensor:
    """Per sample, the head matching its label: ``(B, 3, H, W)``."""
    if out.derain is None or out.desnow is None:
        only = out.derain if out.derain is not None else out.desnow
        assert only is not None, "the network has no restoration head"
        return only
    return torch.where((labels == RAIN)[:, None, None, None], out.derain, out.desnow)


def total_loss(out: Output, batch: dict[str, torch.Tensor], cfg: LossConfig) -> dict[str, torch.Tensor]:
    """Eq. 19. Returns the named, unweighted terms and their weighted sum under ``"total"``.

    ``batch`` holds ``input`` and ``target`` ``(B, 3, H, W)``, ``label`` ``(B,)`` and, optionally, ``weather``
    ``(B,)`` (see :func:`recognition_loss`).
    """
    degraded, target, labels = batch["input"], batch["target"], batch["label"]
    pred = select_restoration(out, labels).float()
    target = target.float()
    terms: dict[str, torch.Tensor] = {
        "char": charbonnier(pred, target, cfg.char_eps),
        "grad": gradient_loss(pred, target),
        "sparsity": sparsity_loss(pred, degraded.float()),
    }
    if out.logits is not None:
        terms["recog"] = recognition_loss(out.logits.float(), labels, cfg.recog, batch.get("weather"))
    if out.embeddings:
        emb = {k: v.float() for k, v in out.embeddings.items()}
        terms["contra"] = (
            contrast_literal(emb) if cfg.contrast == "literal" else contrast_infonce(emb, cfg.contrast_temperature)
        )
    weights = {
        "char": cfg.w_char,
        "grad": cfg.w_grad,
        "sparsity": cfg.w_sparsity,
        "recog": cfg.w_recog,
        "contra": cfg.w_contra,
    }
    terms["total"] = sum(weights[k] * v for k, v in terms.items())
    return terms
