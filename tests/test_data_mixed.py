"""On-the-fly synthetic pairs, mixed labelled batches, and the balanced, sharded sampler."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from torch.utils.data import Dataset

from smartassign.config import degradation_mix
from smartassign.data.corpus import clean_photos
from smartassign.data.mixed import BalancedBatchSampler, MixedDataset, SyntheticPairs, mixed_loader
from smartassign.errors import ConfigError, DataError


@pytest.fixture(scope="module")
def photos():
    return clean_photos("train")


class Labelled(Dataset):
    """A stand-in dataset: ``n`` constant samples with one label."""

    def __init__(self, n: int, label: int) -> None:
        self.n, self.label = n, label

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> dict:
        x = torch.full((3, 8, 8), float(i))
        return {"input": x, "target": x, "label": torch.tensor(self.label), "name": f"{self.label}-{i}"}


def test_synthetic_pairs_same_index_same_bytes(photos):
    a = SyntheticPairs(photos, "rain", crop=64, length=10, seed=5)
    b = SyntheticPairs(photos, "rain", crop=64, length=10, seed=5)
    for i in (0, 7):
        x, y = a[i], b[i]
        assert x["input"].numpy().tobytes() == y["input"].numpy().tobytes()
        assert x["target"].numpy().tobytes() == y["target"].numpy().tobytes()
    assert not torch.equal(a[0]["input"], a[1]["input"])
    other_seed = SyntheticPairs(photos, "rain", crop=64, length=10, seed=6)
    assert not torch.equal(a[0]["input"], other_seed[0]["input"])


def test_synthetic_sample_format_and_8bit_grid(photos):
    ds = SyntheticPairs(photos, "snow", crop=48, length=3, seed=0)
    s = ds[2]
    assert s["input"].shape == s["target"].shape == (3, 48, 48)
    assert s["input"].dtype == torch.float32 and int(s["label"]) == 1 and s["name"] == "snow-000002"
    assert 0 <= float(s["input"].min()) and float(s["input"].max()) <= 1
    levels = s["input"] * 255
    assert torch.allclose(levels, levels.round(), atol=1e-3)
    assert float((s["input"] - s["target"]).abs().mean()) > 0.002
    _, _, meta = ds.generate(2)
    assert meta["task"] == "snow" and meta["params"]["task"] == "snow" and 0 <= meta["params"]["snow"]["amount"] <= 1
    with pytest.raises(IndexError):
        ds.generate(3)


def test_a_clear_synthetic_sample_says_it_shows_no_weather(photos):
    assert bool(SyntheticPairs(photos, "rain", crop=32, length=1, seed=0)[0]["weather"])
    clear = dataclasses.replace(degradation_mix("mixed"), clear_p=1.0)
    assert not bool(SyntheticPairs(photos, "rain", crop=32, length=1, seed=0, degradation=clear)[0]["weather"])


def test_rain_and_snow_streams_differ_for_the_same_seed(photos):
    rain = SyntheticPairs(photos, "rain", crop=48, length=4, seed=1)
    snow = SyntheticPairs(photos, "snow", crop=48, length=4, seed=1)
    assert not torch.equal(rain[0]["input"], snow[0]["input"])


def test_mixed_dataset_keeps_sub_dataset_labels():
    mixed = MixedDataset(Labelled(3, 0), Labelled(5, 1))
    assert len(mixed) == 8
    assert [int(mixed[i]["label"]) for i in range(8)] == [0, 0, 0, 1, 1, 1, 1, 1]
    assert mixed[3]["name"] == "1-0"
    with pytest.raises(DataError):
        MixedDataset(Labelled(3, 0), Labelled(0, 1))


def test_sampler_balances_every_batch_and_covers_the_larger_task():
    sampler = BalancedBatchSampler(n_rain=10, n_snow=25, batch_size=4, seed=0)
    batches = list(sampler)
    assert len(batches) == len(sampler) == 13
    for b in batches:
        assert len(b) == 4
        assert sum(i < 10 for i in b) == 2 and sum(i >= 10 for i in b) == 2
    snow_seen = {i for b in batches for i in b if i >= 10}
    assert snow_seen == set(range(10, 35))


def test_sampler_reshuffles_per_epoch_and_repeats_per_seed():
    s = BalancedBatchSampler(20, 20, 4, seed=3)
    first = list(s)
    assert list(s) == first
    s.set_epoch(1)
    assert list(s) != first
    assert list(BalancedBatchSampler(20, 20, 4, seed=4)) != first


@pytest.mark.parametrize("world", [2, 3])
def test_sampler_shards_are_disjoint_and_equal(world):
    shards = [list(BalancedBatchSampler(24, 24, 4, seed=9, rank=r, world_size=world)) for r in range(world)]
    assert len({len(s) for s in shards}) == 1
    seen = [set(i for b in s for i in b) for s in shards]
    for a in range(world):
        for b in range(a + 1, world):
            assert not seen[a] & seen[b]


def test_sampler_rejects_bad_settings():
    with pytest.raises(ConfigError):
        BalancedBatchSampler(10, 10, 3, seed=0)
    with pytest.raises(ConfigError):
        BalancedBatchSampler(10, 10, 4, seed=0, rank=2, world_size=2)
    with pytest.raises(DataError):
        BalancedBatchSampler(2, 2, 4, seed=0, world_size=4)


def test_mixed_loader_batches_carry_correct_labels(photos):
    rain = SyntheticPairs(photos, "rain", crop=32, length=6, seed=0)
    snow = SyntheticPairs(photos, "snow", crop=32, length=6, seed=0)
    loader = mixed_loader(rain, snow, batch_size=4, seed=0, workers=0)
    batches = list(loader)
    assert len(batches) == 3
    for batch in batches:
        assert batch["input"].shape == (4, 3, 32, 32) and batch["target"].shape == (4, 3, 32, 32)
        assert batch["label"].tolist() == [0, 0, 1, 1]
        assert [n.split("-")[0] for n in batch["name"]] == ["rain", "rain", "snow", "snow"]


def test_synthetic_pairs_rejects_bad_arguments(photos):
    with pytest.raises(ConfigError):
        SyntheticPairs(photos, "hail", length=2)  # type: ignore[arg-type]
    with pytest.raises(DataError):
        SyntheticPairs([], "rain", length=2)
    assert np.isfinite(SyntheticPairs(photos, "rain", crop=16, length=1, augment=False)[0]["input"].numpy()).all()
