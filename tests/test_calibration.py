"""The engine's calibration script (benchmarks/calibrate_engine.py) on two held-out crops."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path
from types import ModuleType

import pytest

from smartassign.config import DEGRADATION_MIXES
from smartassign.data import clean_photos

ROOT = Path(__file__).resolve().parents[1]


def _load() -> ModuleType:
    spec = importlib.util.spec_from_file_location("calibrate_engine", ROOT / "benchmarks" / "calibrate_engine.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["calibrate_engine"] = module
    spec.loader.exec_module(module)
    return module


calibrate_engine = _load()
pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def report() -> dict:
    if not clean_photos("heldout"):
        pytest.skip("no held-out photographs installed")
    return calibrate_engine.calibrate(n=2, size=64, seed=3)


def test_report_structure(report):
    assert report["n"] == 2 and report["size"] == 64 and report["seed"] == 3
    assert list(report["results"])[:3] == ["light", "mixed", "heavy"]  # then the other named mixes
    assert set(report["results"]) == set(DEGRADATION_MIXES)
    assert len(report["crops"]) == 2 and len(report["engine_seeds"]) == 2
    for tasks in report["results"].values():
        assert list(tasks) == ["rain", "snow"]
        for r in tasks.values():
            assert r["n"] == 2
            for metric, top in (("psnr_y", 100.0), ("ssim_y", 1.0)):
                s = r[metric]
                assert set(s) == {"p10", "p50", "p90", "mean"}
                assert 0 < s["p10"] <= s["p50"] <= s["p90"] <= top
                assert len(r["values"][metric]) == 2
    table = calibrate_engine.table(report).splitlines()
    assert table[0].startswith("| mix | task | crops |") and len(table) == 2 + 2 * len(DEGRADATION_MIXES)


def test_heavy_is_harder_than_light(report):
    res = report["results"]
    for task in ("rain", "snow"):
        assert res["heavy"][task]["psnr_y"]["p50"] < res["light"][task]["psnr_y"]["p50"]
        assert res["heavy"][task]["ssim_y"]["p50"] < res["light"][task]["ssim_y"]["p50"]


def test_the_crops_are_paired_and_seeded(report):
    again = calibrate_engine.calibrate(n=2, size=64, seed=3, mixes=("light",), tasks=("rain",))
    assert again["crops"] == report["crops"] and again["engine_seeds"] == report["engine_seeds"]
    assert again["results"]["light"]["rain"] == report["results"]["light"]["rain"]


def test_main_writes_json(tmp_path, capsys):
    out = tmp_path / "cal.json"
    assert calibrate_engine.main(["--quick", "--n", "1", "--size", "32", "--out", str(out)]) == 0
    assert "| light | rain | 1 |" in capsys.readouterr().out
    data = json.loads(out.read_text())
    assert data["command"].endswith("--quick --n 1 --size 32 --out " + str(out)) and data["seed"] == 0
    assert set(data["results"]) == set(DEGRADATION_MIXES)
