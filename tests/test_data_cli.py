"""``smartassign data``: reproducible synthetic sets, the layout check's exit code, and resumable downloads."""

from __future__ import annotations

import hashlib
import http.server
import io
import json
import tarfile
import threading
from pathlib import Path

import numpy as np
import pytest

from smartassign.cli import main
from smartassign.data.datasets import PairedDataset
from smartassign.data.download import Archive, ResumableDownloader, fetch
from smartassign.data.synthset import write_synthetic_set
from smartassign.errors import DataError


def _tree_bytes(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_synth_is_byte_identical_per_seed_and_readable(tmp_path, capsys):
    assert main(["data", "synth", "--out", str(tmp_path / "a"), "--n", "3", "--seed", "4", "--size", "64"]) == 0
    assert main(["data", "synth", "--out", str(tmp_path / "b"), "--n", "3", "--seed", "4", "--size", "64"]) == 0
    assert main(["data", "synth", "--out", str(tmp_path / "c"), "--n", "3", "--seed", "5", "--size", "64"]) == 0
    a, b, c = (_tree_bytes(tmp_path / x) for x in "abc")
    assert a == b
    assert a["rain/input/00000.png"] != c["rain/input/00000.png"]
    assert len([k for k in a if k.endswith(".png")]) == 12
    manifest = json.loads(a["manifest.json"])
    assert manifest["seed"] == 4 and manifest["split"] == "heldout" and len(manifest["samples"]) == 6
    assert {s["task"] for s in manifest["samples"]} == {"rain", "snow"}
    assert all("params" in s and "photo" in s for s in manifest["samples"])
    for task, label in (("rain", 0), ("snow", 1)):
        ds = PairedDataset(tmp_path / "a" / task, "generic", label)
        assert len(ds) == 3 and int(ds[0]["label"]) == label and ds[0]["input"].shape == (3, 64, 64)
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary folder left behind


def test_synth_refuses_to_overwrite(tmp_path, capsys):
    out = tmp_path / "set"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    assert main(["data", "synth", "--out", str(out), "--n", "1"]) != 0
    assert "not empty" in capsys.readouterr().err
    assert (out / "keep.txt").read_text() == "mine"


def test_check_exit_code_and_lines(tmp_path, capsys):
    main(["data", "synth", "--out", str(tmp_path / "s"), "--n", "2", "--size", "32"])
    capsys.readouterr()
    assert main(["data", "check", str(tmp_path / "s" / "rain"), "--layout", "generic"]) == 0
    assert "2 pairs" in capsys.readouterr().out
    (tmp_path / "s" / "rain" / "target" / "00001.png").unlink()
    assert main(["data", "check", str(tmp_path / "s" / "rain"), "--layout", "generic"]) != 0
    out = capsys.readouterr()
    assert "missing partner" in out.out and "00001.png" in out.out
    assert "smartassign: error:" in out.err


def test_photos_lists_the_corpus(capsys):
    assert main(["data", "photos"]) == 0
    out = capsys.readouterr().out
    assert "heldout" in out and "coffee.png" in out and "photographs installed" in out


def _archive(tmp_path: Path) -> tuple[Path, str]:
    src = tmp_path / "src"
    src.mkdir()
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        payload = np.random.default_rng(0).bytes(50_000)  # incompressible, so the archive is large too
        info = tarfile.TarInfo("Snow/1.bin")
        info.size = len(payload)
        tar.addfile(info, io.BytesIO(payload))
    path = src / "toy.tar.gz"
    path.write_bytes(buf.getvalue())
    return path, hashlib.sha256(buf.getvalue()).hexdigest()


def test_fetch_local_file_verifies_unpacks_and_records_hash(tmp_path):
    path, digest = _archive(tmp_path)
    reg = {"toy": Archive("toy", "toy.tar.gz", "csd", path.as_uri())}
    where = fetch("toy", tmp_path / "dest", archives=reg, progress=False)
    assert (where / "Snow" / "1.bin").is_file()
    assert digest in (tmp_path / "dest" / "SHA256SUMS").read_text()
    with pytest.raises(DataError, match="SHA-256 differs"):
        fetch("toy", tmp_path / "other", archives=reg, sha256="0" * 64, progress=False)
    assert fetch("toy", tmp_path / "third", archives=reg, sha256=digest, progress=False).is_dir()


def test_fetch_without_direct_url_says_where_to_get_it(tmp_path):
    with pytest.raises(DataError, match="no direct download"):
        fetch("csd", tmp_path)


class _RangeHandler(http.server.BaseHTTPRequestHandler):
    """Serves one byte string and honours ``Range: bytes=N-``, as archive hosts do."""

    data = b""
    ranges: list[str] = []

    def do_GET(self) -> None:  # noqa: N802 - http.server's naming
        rng = self.headers.get("Range")
        type(self).ranges.append(rng or "")
        start = int(rng.split("=")[1].rstrip("-")) if rng else 0
        body = self.data[start:]
        self.send_response(206 if rng else 200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


def test_download_resumes_a_partial_file_over_http(tmp_path):
    path, digest = _archive(tmp_path)
    data = path.read_bytes()
    _RangeHandler.data, _RangeHandler.ranges = data, []
    server = http.server.HTTPServer(("127.0.0.1", 0), _RangeHandler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{server.server_port}/toy.tar.gz"
        dest = tmp_path / "dest"
        dest.mkdir()
        (dest / "toy.tar.gz.part").write_bytes(data[:1000])  # an interrupted earlier run
        out = dest / "pooch-tmp"
        ResumableDownloader(progress=False)(url, str(out), None)
        assert _RangeHandler.ranges == ["bytes=1000-"]
        assert out.read_bytes() == data and not (dest / "toy.tar.gz.part").exists()
        reg = {"toy": Archive("toy", "toy.tar.gz", "csd", url, sha256=digest)}
        assert (fetch("toy", tmp_path / "full", archives=reg, progress=False) / "Snow" / "1.bin").is_file()
    finally:
        server.shutdown()
        server.server_close()


def test_synth_mix_flag_sets_the_degradation_and_the_manifest(tmp_path, capsys):
    def run(name: str, *mix: str) -> dict[str, bytes]:
        args = ["data", "synth", "--out", str(tmp_path / name), "--n", "3", "--seed", "2", "--size", "48", *mix]
        assert main(args) == 0
        return _tree_bytes(tmp_path / name)

    default, mixed = run("default"), run("mixed", "--mix", "mixed")
    light, heavy = run("light", "--mix", "light"), run("heavy", "--mix", "heavy")
    assert default == mixed  # mixed is the default
    assert "(light mix)" in capsys.readouterr().out.splitlines()[2]
    for tree, mix in ((default, "mixed"), (light, "light"), (heavy, "heavy")):
        assert json.loads(tree["manifest.json"])["mix"] == mix
    # The mix changes the weather, not the clean side: same targets, other inputs.
    assert all(light[k] == heavy[k] for k in light if "/target/" in k)
    assert light["rain/input/00000.png"] != heavy["rain/input/00000.png"]

    def error(root: Path, task: str) -> float:
        ds = PairedDataset(root / task, "generic", 0)
        return float(np.mean([(s["input"] - s["target"]).abs().mean() for s in (ds[i] for i in range(len(ds)))]))

    for task in ("rain", "snow"):
        assert error(tmp_path / "heavy", task) > error(tmp_path / "light", task)
    with pytest.raises(SystemExit) as exit_info:  # argparse: usage and exit 2
        main(["data", "synth", "--out", str(tmp_path / "x"), "--n", "1", "--mix", "torrential"])
    assert exit_info.value.code == 2 and "invalid choice" in capsys.readouterr().err
    with pytest.raises(DataError, match="unknown degradation mix"):
        write_synthetic_set(tmp_path / "y", n=1, seed=0, size=16, mix="torrential")
    assert not (tmp_path / "x").exists() and not (tmp_path / "y").exists()
