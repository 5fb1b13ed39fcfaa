"""The result writer every benchmark ends with (benchmarks/_common.py: write_result)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
from _common import write_result  # noqa: E402


def test_write_result_records_command_and_machine_and_keeps_the_record(tmp_path, capsys):
    out = write_result(
        tmp_path / "deep" / "r.json", {"rows": [1, 2], "seed": 3}, "speed.py", ["--quick", "--out", "a b.json"],
        machine={"threads": 2},
    )  # fmt: skip
    data = json.loads(out.read_text())
    assert data["command"] == "python benchmarks/speed.py --quick --out 'a b.json'"
    assert data["machine"]["threads"] == 2 and data["machine"]["torch"] and data["machine"]["cores"]
    assert data["rows"] == [1, 2] and data["seed"] == 3
    assert f"wrote {out}" in capsys.readouterr().out
    # A machine (or command) of the record's own wins over the defaults.
    data = json.loads(write_result(out, {"machine": {"gpu": "H200"}}, "speed.py", []).read_text())
    assert data["machine"] == {"gpu": "H200"} and data["command"] == "python benchmarks/speed.py"


def test_write_result_that_fails_leaves_the_previous_result_whole(tmp_path):
    out = write_result(tmp_path / "r.json", {"rows": [1]}, "speed.py", [])
    before = out.read_text()
    with pytest.raises(TypeError):
        write_result(out, {"rows": object()}, "speed.py", [])  # not JSON
    assert out.read_text() == before and sorted(p.name for p in tmp_path.iterdir()) == ["r.json"]
