"""Synthetic batches made on the training device: balanced, reproducible per step and rank, on the 8-bit grid."""

from __future__ import annotations

import pytest
import torch

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


def test_batch_size_must_split_between_tasks():
    with pytest.raises(ConfigError, match="multiple"):
        SyntheticBatches(clean_photos("heldout")[:1], crop=32, batch_size=3, seed=0)
