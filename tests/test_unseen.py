"""The evaluation-only synthesizer and its set: reproducible, never imported by training, scored as users get it."""

from __future__ import annotations

import ast
from pathlib import Path

import numpy as np
import pytest

from smartassign import gate, unseen

SRC = Path(unseen.__file__).parent


@pytest.mark.parametrize("style", list(unseen.STYLES))
def test_each_style_degrades_reproducibly_and_stays_in_range(style):
    clean = np.random.default_rng(0).random((64, 80, 3), dtype=np.float32) * 0.6 + 0.2
    a, pa = unseen.synthesize(clean, style, "medium", np.random.default_rng(5))
    b, _ = unseen.synthesize(clean, style, "medium", np.random.default_rng(5))
    c, _ = unseen.synthesize(clean, style, "medium", np.random.default_rng(6))
    assert a.shape == clean.shape and a.dtype == np.float32 and 0 <= a.min() and a.max() <= 1
    assert np.array_equal(a, b) and not np.array_equal(a, c)
    assert np.abs(a - clean).mean() > 1e-3 and pa["task"] == unseen.STYLES[style][0]


def test_the_set_is_the_same_bytes_for_a_seed_and_pairs_styles_on_the_same_crops():
    a = unseen.unseen_set(n=3, size=48, seed=2)
    b = unseen.unseen_set(n=3, size=48, seed=2)
    assert len(a) == 3 * len(unseen.STYLES)
    assert all(np.array_equal(x["input"], y["input"]) and x["name"] == y["name"] for x, y in zip(a, b, strict=True))
    assert all(it["input"].dtype == np.uint8 and it["input"].shape == (48, 48, 3) for it in a)
    firsts = [it for it in a if it["name"].split("-")[2] == "00"]
    assert len(firsts) == len(unseen.STYLES)
    assert all(np.array_equal(it["target"], firsts[0]["target"]) for it in firsts)  # image 0 of every style: one crop
    assert [it["density"] for it in a[:3]] == list(unseen.DENSITIES)
    with pytest.raises(ValueError, match="unknown styles"):
        unseen.unseen_set(styles=["fog"])


def test_training_never_imports_the_unseen_synthesizer():
    for path in [SRC / "train.py", SRC / "losses.py", *sorted((SRC / "data").glob("*.py"))]:
        for node in ast.walk(ast.parse(path.read_text())):
            names = [a.name for a in node.names] if isinstance(node, (ast.Import, ast.ImportFrom)) else []
            module = node.module or "" if isinstance(node, ast.ImportFrom) else ""
            assert "unseen" not in module and not any("unseen" in n for n in names), path


def test_score_unseen_reports_what_a_user_gets(tmp_path):
    from smartassign import build_model
    from smartassign.checkpoint import save_weights

    weights = tmp_path / "tiny.safetensors"
    save_weights(build_model("tiny"), weights)  # identity heads: the restored image is the input
    got = gate.score_unseen(weights, gate.UnseenSet(n=1, size=48, seed=0))
    for task in ("rain", "snow"):
        s = got[task]
        assert s["images"] == 2 and 0 <= s["accuracy"] <= 1
        assert s["gain_psnr_y"] == pytest.approx(s["automatic_psnr_y"] - s["input_psnr_y"])
        assert abs(s["gain_psnr_y"]) < 0.05  # an untrained residual head returns its input
    assert got["mean_psnr_y"] == pytest.approx((got["rain"]["automatic_psnr_y"] + got["snow"]["automatic_psnr_y"]) / 2)
