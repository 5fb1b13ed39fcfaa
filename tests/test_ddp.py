"""DDP: two CPU processes on gloo, joined through env:// as torchrun would, end with identical, trained weights."""

from __future__ import annotations

import csv
import os
import socket
from pathlib import Path

import torch
import torch.multiprocessing as mp
from safetensors.torch import load_file, save_file

from smartassign.model import SmartAssignNet
from smartassign.train import fit, seed_everything
from train_helpers import stripe_data, tiny_experiment

STEPS = 4


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _rank(rank: int, world: int, port: int, run: str, out: str) -> None:
    """One torchrun-like process: the environment names the job, fit() joins it."""
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), LOCAL_RANK=str(rank),
                      WORLD_SIZE=str(world))  # fmt: skip
    torch.set_num_threads(1)
    # val_psnr makes the ranks agree on rank 0's validation score (a broadcast) before each scheduler step.
    exp = tiny_experiment(Path(run), steps=STEPS, plateau_metric="val_psnr", val_every=2, sample_every=100)
    model = fit(exp, data=stripe_data(n=8)).model
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(Path(out) / f"rank{rank}.safetensors"))


def test_two_gloo_ranks_hold_identical_trained_weights(tmp_path: Path) -> None:
    run, out = tmp_path / "run", tmp_path / "weights"
    out.mkdir()
    mp.spawn(_rank, args=(2, _free_port(), str(run), str(out)), nprocs=2, join=True)
    rank0, rank1 = (load_file(str(out / f"rank{r}.safetensors")) for r in (0, 1))
    assert rank0.keys() == rank1.keys()
    assert all(torch.equal(rank0[k], rank1[k]) for k in rank0)

    seed_everything(0)  # fit() seeds like this before building the network
    init = SmartAssignNet(tiny_experiment(run).model).state_dict()
    changed = [k for k in init if not torch.equal(init[k], rank0[k])]
    assert len(changed) > len(init) // 2  # the ranks trained, and trained the same way

    # Only rank 0 writes: one header and one row per step, one checkpoint per save.
    with open(run / "train.csv", newline="") as fh:
        assert [int(r["step"]) for r in csv.DictReader(fh)] == list(range(1, STEPS + 1))
    assert sorted(p.name for p in (run / "checkpoints").glob("*.json")) == [
        "step_00000002.json", "step_00000002.state.json", "step_00000004.json", "step_00000004.state.json"]  # fmt: skip
