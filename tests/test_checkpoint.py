"""Training checkpoints: safetensors + JSON only, complete restore of optimizer/scheduler/RNG, pruning, atomicity."""

from __future__ import annotations

import json
import os
import random
import stat
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from smartassign.checkpoint import (
    atomic_write,
    atomic_write_text,
    checkpoint_path,
    latest_checkpoint,
    list_checkpoints,
    load_checkpoint,
    load_matching,
    load_weights,
    save_checkpoint,
    save_weights,
    sidecar,
)
from smartassign.config import model_config
from smartassign.errors import WeightsError
from smartassign.model import SmartAssignNet

pytestmark = pytest.mark.usefixtures("one_thread")


def _trained(seed: int = 0) -> tuple[SmartAssignNet, torch.optim.Optimizer, torch.optim.lr_scheduler.ReduceLROnPlateau]:
    """A tiny model after two Adam steps and a plateau that halved the learning rate."""
    torch.manual_seed(seed)
    model = SmartAssignNet(model_config("tiny", width=8))
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    sched = torch.optim.lr_scheduler.ReduceLROnPlateau(opt, factor=0.5, patience=0)
    for _ in range(2):
        out = model(torch.rand(2, 3, 16, 16))
        (out.derain.mean() + out.desnow.mean() + out.logits.sum()).backward()
        opt.step()
        opt.zero_grad()
    sched.step(1.0)
    sched.step(2.0)  # no improvement with patience 0: lr halves
    assert opt.param_groups[0]["lr"] == 5e-4
    return model, opt, sched


_TRAINED: list = []


def _save(run: Path, step: int, keep: int = 3) -> Path:
    """Save the (once built) trained model as the checkpoint at ``step``."""
    _TRAINED[:] = _TRAINED or [_trained()]
    model, opt, sched = _TRAINED[0]
    return save_checkpoint(run, step, model, opt, sched, {"epoch": 1}, {"metrics": {"x": 1.0}}, keep)


def test_roundtrip_restores_weights_optimizer_scheduler_rng_and_progress(tmp_path: Path) -> None:
    model, opt, sched = _trained()
    random.seed(5)
    np.random.seed(6)
    torch.manual_seed(7)
    path = save_checkpoint(tmp_path, 10, model, opt, sched, {"epoch": 3, "position": 7}, {"metrics": {}}, 3)
    expected = (random.random(), np.random.rand(), torch.rand(3))

    fresh = SmartAssignNet(model_config("tiny", width=8))
    fresh_opt = torch.optim.Adam(fresh.parameters(), lr=1e-3)
    fresh_sched = torch.optim.lr_scheduler.ReduceLROnPlateau(fresh_opt, factor=0.5, patience=0)
    random.seed(0)
    np.random.seed(0)
    torch.manual_seed(0)
    progress = load_checkpoint(path, fresh, fresh_opt, fresh_sched)

    assert progress == {"epoch": 3, "position": 7}
    assert (random.random(), np.random.rand()) == expected[:2] and torch.equal(torch.rand(3), expected[2])
    for a, b in zip(model.state_dict().values(), fresh.state_dict().values(), strict=True):
        assert torch.equal(a, b)
    saved, loaded = opt.state_dict(), fresh_opt.state_dict()
    assert saved["param_groups"] == loaded["param_groups"]
    for pid, entries in saved["state"].items():
        for name, tensor in entries.items():
            assert torch.equal(tensor, loaded["state"][pid][name]), (pid, name)
    assert fresh_sched.state_dict() == sched.state_dict()
    assert fresh_opt.param_groups[0]["lr"] == 5e-4 and isinstance(fresh_opt.param_groups[0]["betas"], tuple)


def test_files_are_safetensors_and_json_without_pickle(tmp_path: Path) -> None:
    path = _save(tmp_path, 4)
    assert path == checkpoint_path(tmp_path, 4)
    names = sorted(p.name for p in path.parent.iterdir())
    assert names == [f"step_00000004.{ext}" for ext in ("json", "safetensors", "state.json", "state.safetensors")]
    side = json.loads(sidecar(path).read_text())
    assert side["step"] == 4 and side["model"]["width"] == 8 and side["metrics"] == {"x": 1.0}
    state = json.loads(path.with_suffix(".state.json").read_text())
    assert state["format"] == "smartassign-train-state/1" and state["progress"] == {"epoch": 1}
    tensors = load_file(str(path.with_suffix(".state.safetensors")))
    assert "rng/torch" in tensors and any(k.endswith("/exp_avg") for k in tensors)
    assert load_weights(path).cfg.width == 8  # the weights half is an ordinary weights file


def test_keeps_the_last_k_and_latest_ignores_incomplete(tmp_path: Path) -> None:
    for step in (2, 4, 6, 8):
        _save(tmp_path, step, keep=2)
    assert [s for s, _ in list_checkpoints(tmp_path)] == [6, 8]
    assert latest_checkpoint(tmp_path) == checkpoint_path(tmp_path, 8)
    # A kill between the state files and the sidecar leaves step 10 without its sidecar: it does not count.
    _save(tmp_path, 10, keep=5)
    sidecar(checkpoint_path(tmp_path, 10)).unlink()
    assert latest_checkpoint(tmp_path) == checkpoint_path(tmp_path, 8)
    assert latest_checkpoint(tmp_path / "nothing-here") is None


def test_a_failed_write_leaves_the_old_file_and_no_temp(tmp_path: Path) -> None:
    target = tmp_path / "a.json"
    atomic_write_text(target, "old")

    class Boom(Exception):
        pass

    def write(tmp: Path) -> None:
        tmp.write_text("half")
        raise Boom

    with pytest.raises(Boom):
        atomic_write(target, write)
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["a.json"]


def test_damaged_state_is_a_weights_error(tmp_path: Path) -> None:
    path = _save(tmp_path, 2)
    path.with_suffix(".state.json").write_text("{not json")
    model, opt, sched = _trained()
    with pytest.raises(WeightsError, match="state.json"):
        load_checkpoint(path, model, opt, sched)
    path.with_suffix(".state.safetensors").write_bytes(b"garbage")
    with pytest.raises(WeightsError):
        load_checkpoint(path, model, opt, sched)


def test_load_matching_copies_matching_tensors_and_names_the_rest(tmp_path: Path) -> None:
    v6, _, _ = _trained()
    save_weights(v6, tmp_path / "v6.safetensors")
    torch.manual_seed(1)
    k1 = SmartAssignNet(model_config("tiny", "K1", width=8))
    fresh = load_matching(k1, tmp_path / "v6.safetensors")
    # K1's heads read F_ck alone: their first conv is narrower than V6's and must start fresh.
    assert fresh == ["heads.rain.body.0.weight", "heads.snow.body.0.weight"]
    own, src = k1.state_dict(), v6.state_dict()
    assert all(torch.equal(own[k], src[k]) for k in own if k not in fresh)
    assert not torch.equal(own["heads.rain.body.0.weight"][:, :8], src["heads.rain.body.0.weight"][:, :8])


def test_atomic_write_gives_the_usual_permissions(tmp_path) -> None:
    old = os.umask(0o022)
    try:
        target = tmp_path / "out.txt"
        atomic_write_text(target, "x")
    finally:
        os.umask(old)
    assert stat.S_IMODE(target.stat().st_mode) == 0o644


def test_missing_weights_file_is_named_before_its_sidecar(tmp_path) -> None:
    with pytest.raises(WeightsError, match="weights file not found"):
        load_weights(tmp_path / "absent.safetensors")
