"""The ablation study's orchestration (benchmarks/ablation.py) on a two-step configuration."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
import time
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import torch

from smartassign.checkpoint import load_state
from smartassign.config import model_config

ROOT = Path(__file__).resolve().parents[1]


def _load_ablation() -> ModuleType:
    spec = importlib.util.spec_from_file_location("ablation", ROOT / "benchmarks" / "ablation.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["ablation"] = module
    spec.loader.exec_module(module)
    return module


ablation = _load_ablation()


pytestmark = pytest.mark.usefixtures("one_thread")


def _argv(tmp_path: Path, *extra: str) -> list[str]:
    """A two-step study of V6 and K1 on one seed, run inline, writing only under ``tmp_path``."""
    return [
        "--steps", "2", "--crop", "32", "--batch", "2", "--seeds", "0", "--variants", "V6", "K1",
        "--parallel", "0", "--threads", "1", "--test-n", "2", "--test-size", "32",
        "--out", str(tmp_path / "study"), "--results", str(tmp_path / "results" / "ablation"),
        "--plot", str(tmp_path / "ablation.png"), *extra,
    ]  # fmt: skip


def test_study_caches_cells_skips_them_and_starts_k1_from_v6(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert ablation.main(_argv(tmp_path)) == 0
    study = tmp_path / "study"
    assert sorted(p.name for p in (study / "cells").iterdir()) == ["K1-s0.json", "V6-s0.json"]

    # K1 starts from this seed's V6: the frozen part before TKFF is V6's, tensor for tensor.
    v6, k1 = (load_state(study / "runs" / key / "final.safetensors") for key in ("V6-s0", "K1-s0"))
    frozen = [k for k in k1 if k.split(".")[0] in ("embed", "sam", "encoder", "gkfm")]
    assert frozen and all(torch.equal(k1[k], v6[k]) for k in frozen)
    k1_cell = json.loads((study / "cells" / "K1-s0.json").read_text())
    assert k1_cell["init_from"].endswith("V6-s0/final.safetensors") and k1_cell["init_step"] == 2
    assert k1_cell["trainable"] < k1_cell["parameters"]

    report = json.loads((tmp_path / "results" / "ablation.json").read_text())
    for name in ("V6", "K1"):
        for task in ("rain", "snow"):
            entry = report["summary"][name][task]
            assert entry["psnr_y"]["n"] == 1 and entry["seeds"] == [0] and entry["short_seeds"] == []
            assert 10 < entry["psnr_y"]["mean"] < 60 and 0 < entry["ssim_y"]["mean"] <= 1
    assert report["summary"]["K1"]["rain"]["delta_vs_v6"]["psnr_y"]["n"] == 1
    assert report["meta"]["missing"] == {}
    table = (tmp_path / "results" / "ablation.md").read_text()
    rain_rows = [line for line in table.splitlines() if line.startswith("| synthetic rain |")]
    v6_rain = report["summary"]["V6"]["rain"]["psnr_y"]["mean"]
    assert len(rain_rows) == 3 and all(f"{v6_rain:.2f} / " in row for row in rain_rows[:2])
    assert "| test set | K1 | V6 | input |" in table
    assert (tmp_path / "ablation.png").stat().st_size > 10_000

    # A second invocation runs nothing: every cell is cached.
    def no_training(spec: Path) -> int:
        raise AssertionError(f"cached cell was run again: {spec}")

    monkeypatch.setattr(ablation, "run_job", no_training)
    before = {p: p.stat().st_mtime_ns for p in (study / "cells").iterdir()}
    assert ablation.main(_argv(tmp_path)) == 0
    assert {p: p.stat().st_mtime_ns for p in (study / "cells").iterdir()} == before

    # Other training settings in the same folder are refused rather than mixed into one table.
    assert ablation.main(_argv(tmp_path, "--set", "train.lr=2e-4")) == 2


def test_deadline_marks_runs_it_left_out(tmp_path: Path) -> None:
    assert ablation.main(_argv(tmp_path, "--deadline-min", "0.001")) == 0
    report = json.loads((tmp_path / "results" / "ablation.json").read_text())
    assert set(report["meta"]["missing"]) == {"V6-s0", "K1-s0"}
    assert "deadline" in report["meta"]["missing"]["V6-s0"]
    assert not (tmp_path / "study" / "cells").exists()


def test_deadline_stops_running_jobs(tmp_path: Path) -> None:
    scheduler = ablation.Scheduler(_study(tmp_path), [])
    proc = subprocess.Popen(["sleep", "60"], start_new_session=True)
    cell = ablation.Cell("V2", 0)
    scheduler.running[cell.key] = ablation.Job(cell, proc, time.monotonic(), open(tmp_path / "log", "w"))
    scheduler.deadline = time.monotonic()
    began = time.monotonic()
    scheduler.run()
    assert proc.poll() is not None and time.monotonic() - began < 10
    assert scheduler.running == {} and "deadline" in scheduler.failed["V2-s0"]


def _study(tmp_path: Path) -> Any:
    return ablation.Study(
        config=ablation.DEFAULT_CONFIG, out=tmp_path, overrides=(), device="cpu", parallel=0, threads=1, workers=0,
        time_limit_min=0, deadline_min=0, reserve_s=0, min_train_s=0, test_n=2, test_size=32, test_seed=0,
    )  # fmt: skip


def test_short_cells_are_resumed_and_stale_k_cells_rerun(tmp_path: Path) -> None:
    study = _study(tmp_path)
    v6, k1 = ablation.Cell("V6", 0), ablation.Cell("K1", 0)
    (tmp_path / "cells").mkdir()

    def write(cell: ablation.Cell, **fields: object) -> None:
        study.cell_path(cell).write_text(json.dumps({"short": False, **fields}))

    write(v6, steps_done=10)
    write(k1, steps_done=10, init_step=10)
    assert ablation.Scheduler(study, [v6, k1]).pending == []
    write(k1, steps_done=10, init_step=7)  # trained from an older V6
    assert ablation.Scheduler(study, [v6, k1]).pending == [k1]
    write(v6, steps_done=6, short=True)  # V6 will be resumed, so K1 must follow it
    write(k1, steps_done=10, init_step=6)
    assert ablation.Scheduler(study, [v6, k1]).pending == [v6, k1]


@pytest.mark.parametrize("single", ["V4r", "V4s"])
def test_capacity_match_is_within_five_percent_of_v6(single: str) -> None:
    target = ablation.parameters(model_config("tiny", "V6"))
    widened = ablation.match_capacity(model_config("tiny", single), target)
    count = ablation.parameters(model_config("tiny", single, **widened))
    assert abs(count - target) / target < 0.05
    assert ablation.parameters(model_config("tiny", single)) < 0.95 * target  # the match did something


def test_columns_map_to_cells() -> None:
    assert ablation.column_cell("V4r/V4s", "rain") == "V4r"
    assert ablation.column_cell("V4r/V4s", "snow") == "V4s"
    assert ablation.column_cell("V4r/V4s=cap", "snow") == "V4s=cap"
    assert ablation.column_cell("K1", "rain") == "K1"
    cells = ablation.plan_cells(["K2", "V1"], [0, 1], {})
    assert [c.key for c in cells] == ["V6-s0", "V6-s1", "V1-s0", "K2-s0", "V1-s1", "K2-s1"]
