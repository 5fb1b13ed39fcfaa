"""The network: shapes, finiteness, gradient flow per variant, any input size, determinism."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from smartassign.config import PRESETS, VARIANTS, LossConfig, ModelConfig, model_config
from smartassign.errors import ConfigError
from smartassign.losses import total_loss
from smartassign.model import SmartAssignNet, build_model, count_flops, count_parameters


def _batch(b: int = 2, h: int = 19, w: int = 23, seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    target = torch.rand(b, 3, h, w, generator=g)
    return {
        "input": (target + 0.3 * torch.rand(b, 3, h, w, generator=g)).clamp(0, 1),
        "target": target,
        "label": torch.arange(b) % 2,
    }


@pytest.mark.parametrize("preset", list(PRESETS))
def test_presets_forward_odd_size(preset: str) -> None:
    torch.manual_seed(0)
    model = build_model(preset).eval()
    with torch.no_grad():
        out = model(torch.rand(1, 3, 21, 35))
    for t in (out.derain, out.desnow):
        assert t is not None and t.shape == (1, 3, 21, 35) and torch.isfinite(t).all()
    assert out.logits is not None and out.logits.shape == (1, 2)


def test_preset_sizes_match_the_issue() -> None:
    params = {name: count_parameters(build_model(name)) for name in PRESETS}
    assert params["tiny"] < 1_000_000
    assert 2_000_000 <= params["small"] <= 6_000_000
    assert 15_000_000 <= params["base"] <= 30_000_000


def test_flop_count_scales_with_pixels() -> None:
    model = build_model("tiny").eval()
    f64, f128 = count_flops(model, 64), count_flops(model, 128)
    assert f64 > 0
    # Linear attention: four times the pixels is about four times the work.
    assert 3.5 < f128 / f64 < 4.5


@pytest.mark.parametrize("variant", list(VARIANTS))
@pytest.mark.parametrize("attention", ["channel", "window"])
def test_variant_shapes_and_gradients(variant: str, attention: str) -> None:
    torch.manual_seed(0)
    cfg = model_config("tiny", variant, attention=attention, window=4)
    model = SmartAssignNet(cfg)
    for head in model.heads.values():  # zero-initialised by design; give the first step a path back
        torch.nn.init.normal_(head.body[-1].weight, std=0.01)
    batch = _batch()
    if len(cfg.tasks) == 1:
        batch["label"] = torch.full_like(batch["label"], 0 if cfg.tasks == ("rain",) else 1)
    out = model(batch["input"])
    for task in cfg.tasks:
        r = out.restored(task)
        assert r.shape == batch["input"].shape and torch.isfinite(r).all()
    assert (out.logits is not None) == cfg.uses_recognition
    assert set(out.atoms) == set(cfg.atoms)
    assert set(out.embeddings) == (set(cfg.atoms) if cfg.uses_contrast else set())

    loss = total_loss(out, batch, LossConfig())["total"]
    assert torch.isfinite(loss)
    loss.backward()
    for name, p in model.named_parameters():
        if p.requires_grad:
            assert p.grad is not None and p.grad.abs().sum() > 0, f"{variant}: no gradient reaches {name}"
        else:
            assert p.grad is None, f"{variant}: frozen {name} got a gradient"


def test_variants_build_only_what_they_use() -> None:
    names = {
        v: {n.split(".")[0] for n, _ in SmartAssignNet(model_config("tiny", v)).named_parameters()} for v in VARIANTS
    }
    assert "gkfm" not in names["V2"] and "drm" not in names["V2"]
    assert "drm" not in names["V1"] and "gkfm" in names["V1"]
    assert "recognizer" not in names["V5"] and "recognizer" not in names["V4r"]
    v3 = SmartAssignNet(model_config("tiny", "V3"))
    assert not any(".local." in n for n, _ in v3.named_parameters())
    v4r = SmartAssignNet(model_config("tiny", "V4r"))
    assert set(v4r.heads) == {"rain"} and set(v4r.gkfm) == {"rk", "ck"}
    for v in ("K1", "K2"):
        model = SmartAssignNet(model_config("tiny", v))
        trainable = {n.split(".")[0] for n, p in model.named_parameters() if p.requires_grad}
        assert trainable <= {"heads", "recognizer", "drm"}, trainable
        assert not any(p.requires_grad for p in model.encoder.parameters())


def test_k1_k2_routing() -> None:
    k1 = SmartAssignNet(model_config("tiny", "K1"))
    k2 = SmartAssignNet(model_config("tiny", "K2"))
    assert k1.route("rain") == ("ck",) and k1.route("snow") == ("ck",)
    assert k2.route("rain") == ("rk",) and k2.route("snow") == ("sk",)
    v6 = SmartAssignNet(model_config("tiny"))
    assert v6.route("rain") == ("rk", "ck") and v6.route("snow") == ("sk", "ck")


@pytest.mark.parametrize("size", [(1, 1), (2, 7), (9, 4), (31, 17), (64, 40)])
@pytest.mark.parametrize("encoder", ["hierarchical", "flat"])
def test_any_input_size(size: tuple[int, int], encoder: str) -> None:
    kw = {"depths": (2,), "heads": (1,)} if encoder == "flat" else {}
    model = SmartAssignNet(model_config("tiny", encoder=encoder, attention="window", window=4, **kw)).eval()
    with torch.no_grad():
        out = model(torch.rand(1, 3, *size))
    assert out.derain.shape == (1, 3, *size)
    assert torch.isfinite(out.derain).all()


def test_output_is_not_clamped_inside_the_network() -> None:
    # Clamping in training would zero the gradient of saturated pixels.
    model = build_model("tiny")
    with torch.no_grad():
        for p in model.heads["rain"].body[-1].parameters():
            p.fill_(0.0)
        model.heads["rain"].body[-1].bias.fill_(2.0)
    out = model(torch.rand(1, 3, 16, 16))
    assert out.derain.max() > 1.5


def test_alternate_window_blocks_are_shifted() -> None:
    cfg = model_config("tiny", attention="window", window=4, depths=(2, 1, 1))
    blocks = SmartAssignNet(cfg).encoder.enc[0]
    assert blocks[0].attn.shift == 0 and blocks[1].attn.shift == 2


def test_determinism_same_seed_same_output() -> None:
    def run() -> torch.Tensor:
        torch.manual_seed(123)
        model = build_model("tiny")
        x = torch.rand(1, 3, 24, 24)
        return model(x).derain.detach()

    assert torch.equal(run(), run())


def test_padding_is_cropped_exactly() -> None:
    """An odd-size image equals the top-left crop of the result on its reflect-padded version."""
    torch.manual_seed(0)
    model = build_model("tiny").eval()
    x = torch.rand(1, 3, 12, 13)
    with torch.no_grad():
        out = model(x).derain
        padded = torch.nn.functional.pad(x, (0, 3, 0, 0), mode="reflect")  # 13 -> 16, the multiple of 4
        ref = model(padded).derain[..., :12, :13]
    assert torch.allclose(out, ref, atol=1e-6)


@pytest.mark.parametrize(
    "bad",
    [
        {"width": 3},
        {"depths": ()},
        {"depths": (1, 1), "heads": (1,)},
        {"attention": "global"},
        {"routing": "magic"},
        {"tasks": ("hail",)},
        {"encoder": "flat", "depths": (1, 1, 1)},
    ],
)
def test_bad_config_is_a_clear_error(bad: dict) -> None:
    with pytest.raises(ConfigError):
        dataclasses.replace(ModelConfig(), **bad)


def test_unknown_preset_variant_and_key() -> None:
    with pytest.raises(ConfigError, match="unknown preset"):
        model_config("huge")
    with pytest.raises(ConfigError, match="unknown variant"):
        model_config("tiny", "V9")
    with pytest.raises(ConfigError, match="nonsense"):
        model_config("tiny", nonsense=1)
