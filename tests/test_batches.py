"""Synthetic batches made on the training device: balanced, reproducible per step and rank, on the 8-bit grid."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from smartassign.config import degradation_mix
from smartassign.data import SyntheticBatches, clean_photos
from smartassign.errors import ConfigError


@pytest.fixture(scope="module")
def source() -> SyntheticBatches:
    return SyntheticBatches(clean_photos("heldout")[:3], crop=48, batch_size=4, seed=0)


def test_batches_are_balanced_in_range_and_on_the_8bit_grid(source):
    b = source.batch(0)
    assert b["input"].shape == b["target"].shape == (4, 3, 48, 48)
    assert b["label"].tolist() == [0, 0, 1, 1]
    for k in ("input", "target"):
        x = b[k]
        assert 0 <= x.min() and x.max() <= 1
        assert torch.allclose(x * 255, torch.round(x * 255), atol=1e-3)
    assert (b["input"] - b["target"]).abs().mean() > 1e-3  # it is degraded


def test_same_step_same_batch_other_step_or_rank_differs(source):
    a, b = source.batch(5), source.batch(5)
    assert torch.equal(a["input"], b["input"]) and torch.equal(a["target"], b["target"])
    assert not torch.equal(a["target"], source.batch(6)["target"])
    other = SyntheticBatches(clean_photos("heldout")[:3], crop=48, batch_size=4, seed=0, rank=1, world_size=2)
    assert not torch.equal(a["target"], other.batch(5)["target"])


def test_clear_samples_are_flagged_and_the_rest_carry_weather():
    """``weather`` is False where the engine left the picture clear (no camera side here: input == target); the
    others carry weather (at 32² a few streaks can miss the crop, so most, not all, differ from their target)."""
    cfg = dataclasses.replace(
        degradation_mix("mixed"), clear_p=0.5, blur_p=0.0, resample_p=0.0, noise_p=0.0, jpeg_p=0.0
    )
    b = SyntheticBatches(clean_photos("heldout")[:3], crop=32, batch_size=16, seed=0, degradation=cfg).batch(0)
    same = (b["input"] - b["target"]).flatten(1).abs().amax(1) < 1e-6
    assert b["weather"].dtype == torch.bool and same[~b["weather"]].all()
    assert (~same[b["weather"]]).float().mean() >= 0.75
    assert 2 <= int((~b["weather"]).sum()) <= 14
    plain = SyntheticBatches(clean_photos("heldout")[:3], crop=32, batch_size=4, seed=0).batch(0)
    assert plain["weather"].all()


def test_batch_size_must_split_between_tasks():
    with pytest.raises(ConfigError, match="multiple"):
        SyntheticBatches(clean_photos("heldout")[:1], crop=32, batch_size=3, seed=0)


def test_progressive_crops_switch_side_at_their_steps_and_stay_reproducible():
    photos = clean_photos("heldout")[:3]
    grow = SyntheticBatches(photos, crop=32, batch_size=2, seed=0, crops=[(3, 40), (0, 24), (6, 48)])
    assert [grow.crop_at(k) for k in (0, 2, 3, 5, 6, 100)] == [24, 24, 40, 40, 48, 48]
    assert grow.batch(4)["input"].shape == (2, 3, 40, 40) and grow.batch(7)["target"].shape == (2, 3, 48, 48)
    assert torch.equal(grow.batch(4)["input"], grow.batch(4)["input"])
    plain = SyntheticBatches(photos, crop=40, batch_size=2, seed=0)
    assert torch.equal(grow.batch(4)["target"], plain.batch(4)["target"])  # the same crops as a fixed-side run


def test_progressive_config_is_checked_and_sets_the_tlc_window(tmp_path):
    from smartassign.checkpoint import save_weights
    from smartassign.config import DataConfig
    from smartassign.model import build_model
    from smartassign.restore import trained_crop

    assert DataConfig(crop=96, progressive=((0.0, 96), (0.5, 128))).final_crop == 128
    for bad in (((0.5, 96), (0.2, 128)), ((0.0, 96), (1.0, 128)), ((0.0, 8),)):
        with pytest.raises(ConfigError, match="progressive"):
            DataConfig(progressive=bad)
    save_weights(build_model("tiny"), tmp_path / "w.safetensors",
                 {"experiment": {"data": {"crop": 96, "progressive": [[0.0, 96], [0.7, 160]]}}})  # fmt: skip
    assert trained_crop(tmp_path / "w.safetensors") == 160
