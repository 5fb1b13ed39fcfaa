"""Reliability: bad images, damaged weights, bad configs, unwritable or full disks and kill -9 lose nothing.

Each test proves one or more rows of docs/RELIABILITY.md. The CLI runs in-process on a random tiny network
(width 8) except where a real process has to die (kill -9) or a real file system has to fill up.
"""

from __future__ import annotations

import builtins
import contextlib
import errno
import io
import json
import os
import pickle
import re
import shutil
import signal
import struct
import subprocess
import sys
import tempfile
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import imagecodecs
import numpy as np
import pytest
import tifffile
import torch
import yaml
from PIL import Image
from safetensors.torch import load_file, save_file

import smartassign
from smartassign import build_model, model_config
from smartassign.checkpoint import load_weights, save_weights, sidecar
from smartassign.cli import main
from smartassign.errors import ImageError, WeightsError
from smartassign.io import read_image, write_image
from smartassign.restore import Restorer

ROOT = Path(__file__).resolve().parents[1]
RNG = np.random.default_rng(0)


pytestmark = pytest.mark.usefixtures("one_thread")


def small_net(**overrides: Any) -> smartassign.SmartAssignNet:
    """A random width-8 tiny network (fast on one CPU thread)."""
    torch.manual_seed(0)
    return build_model(model_config("tiny", width=8, **overrides)).eval()


@pytest.fixture(scope="module")
def weights(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The small network saved as safetensors + JSON sidecar."""
    path = tmp_path_factory.mktemp("weights") / "tiny8.safetensors"
    save_weights(small_net(), path)
    return path


def noise(shape: tuple[int, ...], dtype: type = np.uint8) -> np.ndarray:
    """Random pixels over the dtype's whole range."""
    return RNG.integers(0, np.iinfo(dtype).max + 1, shape, dtype=dtype)


def encoded(fmt: str, image: Image.Image) -> bytes:
    """``image`` encoded as ``fmt`` by Pillow."""
    buf = io.BytesIO()
    image.save(buf, format=fmt)
    return buf.getvalue()


def restore_args(weights: Path, *args: str | Path) -> list[str]:
    """``restore ARGS --weights W --device cpu``: the arguments of a restore run on the small network."""
    return ["restore", *map(str, args), "--weights", str(weights), "--device", "cpu"]


@dataclass
class Run:
    """Exit code and output of one in-process CLI run."""

    code: int
    out: str
    err: str


def run_cli(argv: list[str]) -> Run:
    """Run ``smartassign ARGV`` in-process, capturing what it prints."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(argv)
    assert "Traceback" not in err.getvalue()
    return Run(code, out.getvalue(), err.getvalue())


def files_in(folder: Path) -> list[str]:
    """Names of everything in ``folder``, sorted (hidden temps included)."""
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []


# --- images: one folder holding every kind of good and bad file, restored in one run ------------------------


def _png_claiming(width: int, height: int) -> bytes:
    """A small valid-looking PNG whose header claims ``width x height`` pixels (a decompression bomb's shape)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")


def _damaged_png() -> bytes:
    """A complete PNG with one byte of its compressed pixel data flipped."""
    data = bytearray(encoded("PNG", Image.fromarray(noise((24, 32, 3)))))
    data[data.index(b"IDAT") + 20] ^= 0xFF
    return bytes(data)


def _float_tiff_with_nan() -> bytes:
    """A 32-bit float gray TIFF holding NaN."""
    pixels = RNG.random((12, 16)).astype(np.float32)
    pixels[3, 4] = np.nan
    return encoded("TIFF", Image.fromarray(pixels))


def _transparent_palette() -> Image.Image:
    """A palette image whose colour 0 is transparent (a PNG tRNS chunk)."""
    image = Image.fromarray(noise((20, 28, 3))).quantize(16)
    image.info["transparency"] = 0
    return image


def _gray_alpha_16_bit_tiff() -> bytes:
    """A 16-bit gray + alpha TIFF, which Pillow cannot open."""
    buf = io.BytesIO()
    tifffile.imwrite(buf, noise((20, 28, 2), np.uint16), photometric="minisblack", extrasamples=["unassalpha"])
    return buf.getvalue()


# name -> (file content, expected output name, shape, dtype). Inputs are kept so that alpha can be compared.
GOOD: dict[str, tuple[Callable[[], Image.Image | bytes], str, tuple[int, ...], type]] = {
    "gray.jpg": (lambda: Image.fromarray(noise((20, 28))), "gray.jpg", (20, 28, 1), np.uint8),
    "gray_alpha.png": (lambda: Image.fromarray(noise((20, 28, 2))), "gray_alpha.png", (20, 28, 2), np.uint8),
    "rgba.png": (lambda: Image.fromarray(noise((20, 28, 4))), "rgba.png", (20, 28, 4), np.uint8),
    "palette.png": (lambda: Image.fromarray(noise((20, 28, 3))).quantize(16), "palette.png", (20, 28, 3), np.uint8),
    "palette_transparent.png": (_transparent_palette, "palette_transparent.png", (20, 28, 4), np.uint8),
    "drawing.gif": (lambda: Image.fromarray(noise((20, 28, 3))).quantize(8), "drawing.png", (20, 28, 3), np.uint8),
    "cmyk.jpg": (lambda: Image.fromarray(noise((20, 28, 3))).convert("CMYK"), "cmyk.jpg", (20, 28, 3), np.uint8),
    "rgb16.png": (lambda: imagecodecs.png_encode(noise((20, 28, 3), np.uint16)), "rgb16.png", (20, 28, 3), np.uint16),
    "gray16.png": (lambda: Image.fromarray(noise((20, 28), np.uint16)), "gray16.png", (20, 28, 1), np.uint16),
    "gray_alpha16.tif": (_gray_alpha_16_bit_tiff, "gray_alpha16.tif", (20, 28, 2), np.uint16),
    "one_pixel.png": (lambda: Image.fromarray(noise((1, 1, 3))), "one_pixel.png", (1, 1, 3), np.uint8),
}
# name -> (file content, what the one-line error says)
BAD: dict[str, tuple[Callable[[], bytes], str]] = {
    "zero_bytes.jpg": (lambda: b"", "empty file (0 bytes)"),
    "zero_bytes.png": (lambda: b"", "empty file (0 bytes)"),
    "text_named.png": (lambda: b"this is a text file, not a picture\n", "not an image file Pillow can read"),
    "truncated.jpg": (lambda: encoded("JPEG", Image.fromarray(noise((48, 64, 3))))[:600], "corrupt or truncated image"),
    "truncated.png": (lambda: encoded("PNG", Image.fromarray(noise((48, 64, 3))))[:2000], "corrupt or truncated image"),
    "damaged.png": (_damaged_png, "corrupt or truncated image"),
    "broken_header.jpg": (
        lambda: encoded("JPEG", Image.fromarray(noise((20, 28, 3)))).replace(b"\xff\xc0", b"\xff\x00", 1),
        "not an image file Pillow can read",
    ),
    "bomb.png": (lambda: _png_claiming(40_000, 40_000), "too many pixels for Pillow's decompression-bomb limit"),
    "above_limit.png": (lambda: _png_claiming(12_000, 10_000), "12000x10000 is 120 MP, above the limit of 100 MP"),
    "float_nan.tif": (_float_tiff_with_nan, "32-bit pixel mode 'F' is not supported"),
}


@dataclass
class Batch:
    """One ``smartassign restore`` run over a folder of every good and bad kind."""

    src: Path
    out: Path
    run: Run
    report: dict[str, Any]
    inputs: dict[str, np.ndarray]


@pytest.fixture(scope="module")
def batch(tmp_path_factory: pytest.TempPathFactory, weights: Path) -> Batch:
    """Write every GOOD and BAD file into one folder and restore the folder once."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("batch")
    src, out = root / "in", root / "out"
    src.mkdir()
    for name, (make, *_) in {**GOOD, **BAD}.items():
        content = make()
        if isinstance(content, Image.Image):
            content.save(src / name)
        else:
            (src / name).write_bytes(content)
    inputs = {name: read_image(src / name).pixels for name in GOOD}
    run = run_cli(restore_args(weights, src, "-o", out, "--tile", "16", "--overlap", "4", "--report", root / "r.json"))
    torch.set_num_threads(threads)
    return Batch(src, out, run, json.loads((root / "r.json").read_text()), inputs)


def test_mixed_folder_exit_code_and_summary_list_exactly_the_bad_files(batch: Batch) -> None:
    assert batch.run.code == 1
    assert f"{len(GOOD)} restored, 0 skipped, {len(BAD)} failed" in batch.run.out
    summary = batch.run.err.split(f"failed ({len(BAD)} of {len(GOOD) + len(BAD)}):\n", 1)[1].splitlines()
    assert sorted(line.strip().split(": ", 1)[0] for line in summary) == sorted(str(batch.src / n) for n in BAD)
    assert (batch.report["restored"], batch.report["failed"]) == (len(GOOD), len(BAD))
    # Only complete outputs: no temp file, no output for a bad input.
    assert files_in(batch.out) == sorted(expected for _, expected, _, _ in GOOD.values())


@pytest.mark.parametrize("name", sorted(GOOD))
def test_unusual_but_valid_image_is_restored_in_its_own_layout(batch: Batch, name: str) -> None:
    _, output, shape, dtype = GOOD[name]
    pixels = read_image(batch.out / output).pixels
    assert pixels.shape == shape and pixels.dtype == dtype
    row = next(r for r in batch.report["images"] if Path(r["input"]).name == name)
    assert row["status"] == "restored" and (row["height"], row["width"]) == shape[:2]
    if shape[2] in (2, 4):  # alpha passes through untouched
        np.testing.assert_array_equal(pixels[..., -1], batch.inputs[name][..., -1])
    if dtype == np.uint16:  # 16 bits stay 16 bits, not 8 bits scaled up
        assert np.any(pixels % 257 != 0)


@pytest.mark.parametrize("name", sorted(BAD))
def test_bad_image_gets_one_line_naming_it_and_no_output(batch: Batch, name: str) -> None:
    path = batch.src / name
    lines = [line for line in batch.run.err.splitlines() if line.startswith(f"smartassign: {path}: ")]
    assert len(lines) == 1 and BAD[name][1] in lines[0], lines
    row = next(r for r in batch.report["images"] if r["input"] == str(path))
    assert row["status"] == "failed" and row["output"] is None and BAD[name][1] in row["error"]
    assert not any(p.stem == Path(name).stem for p in batch.out.iterdir())


def test_two_inputs_with_one_output_name_keep_the_first_and_fail_the_second(tmp_path: Path, weights: Path) -> None:
    Image.fromarray(noise((8, 8, 3))).save(tmp_path / "x.bmp")
    Image.fromarray(noise((6, 6, 3))).quantize(8).save(tmp_path / "x.gif")  # both are written as x.png
    run = run_cli(restore_args(weights, tmp_path / "x.bmp", tmp_path / "x.gif", "-o", tmp_path / "out"))
    assert run.code == 1
    gif, png, bmp = tmp_path / "x.gif", tmp_path / "out" / "x.png", tmp_path / "x.bmp"
    assert run.err.splitlines()[0] == f"smartassign: {gif}: {png} is also the output of {bmp}; rename one"
    assert files_in(tmp_path / "out") == ["x.png"] and read_image(tmp_path / "out" / "x.png").pixels.shape == (8, 8, 3)


def test_pixel_limit_is_a_cli_option(tmp_path: Path, weights: Path) -> None:
    Image.fromarray(noise((40, 50, 3))).save(tmp_path / "a.png")
    run = run_cli(restore_args(weights, tmp_path / "a.png", "-o", tmp_path / "out", "--max-megapixels", "0.001"))
    assert run.code == 1 and f"smartassign: {tmp_path / 'a.png'}: 50x40 is " in run.err and "above the limit" in run.err
    assert files_in(tmp_path / "out") == []
    run = run_cli(restore_args(weights, tmp_path / "a.png", "-o", tmp_path / "out", "--max-megapixels", "0"))
    assert run.code == 2 and "--max-megapixels must be positive" in run.err


def test_60000_by_10_image_is_restored_tile_by_tile(tmp_path: Path, weights: Path) -> None:
    pixels = noise((60_000, 10, 3))
    write_image(tmp_path / "tall.png", pixels)
    run = run_cli(restore_args(weights, tmp_path / "tall.png", "-o", tmp_path / "out", "--tile", "2048"))
    assert run.code == 0
    out = read_image(tmp_path / "out" / "tall.png").pixels
    assert out.shape == (60_000, 10, 3)
    # Identity-initialised heads: restored ~= input everywhere, so no tile was skipped or misplaced.
    assert np.abs(out.astype(int) - pixels).max() <= 1


# --- NaN and infinity in the input --------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64])
@pytest.mark.parametrize("value", [np.nan, np.inf, -np.inf])
def test_one_non_finite_value_anywhere_is_refused(dtype: type, value: float) -> None:
    restorer = Restorer(small_net(), device="cpu", tile=16, overlap=4)
    image = RNG.random((20, 30, 4)).astype(dtype)
    image[13, 17, 3] = value  # even in the alpha channel
    with pytest.raises(ImageError, match=r"input array: 1 NaN or infinite values; replace them"):
        restorer.restore(image)
    image[13, 17, 3] = 0.5
    assert np.isfinite(restorer.restore(image).image).all()  # the restorer is still usable


# --- unwritable output folders and full disks ----------------------------------------------------------------


def test_output_folder_under_a_file_or_onto_a_file_is_a_usage_error(tmp_path: Path, weights: Path) -> None:
    Image.fromarray(noise((8, 8, 3))).save(tmp_path / "a.png")
    (tmp_path / "file").write_text("a file, not a folder")
    for out, why in ((tmp_path / "file" / "out", "Not a directory"), (tmp_path / "file", "File exists")):
        run = run_cli(restore_args(weights, tmp_path / "a.png", "-o", out))
        assert run.code == 2
        assert run.err == f"smartassign: error: {out}: cannot create the output folder ({why})\n"
    assert (tmp_path / "file").read_text() == "a file, not a folder"


def test_folder_refusing_writes_fails_every_image_and_keeps_nothing(
    tmp_path: Path, weights: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in ("a.png", "b.jpg"):
        Image.fromarray(noise((8, 8, 3))).save(tmp_path / name)
    (tmp_path / "out").mkdir()

    def refuse(*args: Any, **kwargs: Any) -> Any:
        raise PermissionError(errno.EACCES, os.strerror(errno.EACCES))

    monkeypatch.setattr(tempfile, "mkstemp", refuse)  # what a folder without write permission does
    run = run_cli(restore_args(weights, tmp_path / "a.png", tmp_path / "b.jpg", "-o", tmp_path / "out"))
    assert run.code == 1 and "0 restored, 0 skipped, 2 failed" in run.out
    for name in ("a.png", "b.jpg"):
        line = f"smartassign: {tmp_path / name}: cannot write {tmp_path / 'out' / name} ([Errno 13] Permission denied)"
        assert line in run.err.splitlines()
    assert files_in(tmp_path / "out") == []


class NearlyFullDisk:
    """``open`` whose binary writes into ``folder`` store at most ``room`` bytes per file, then fail with ENOSPC.

    The bytes that fit really land on disk, as on a disk that fills up mid-write; ``fileno`` is hidden so that
    Pillow's encoders write through ``write`` too.
    """

    def __init__(self, folder: Path, room: int) -> None:
        self.folder, self.room = folder, room
        self.cut: dict[Path, int] = {}  # file -> bytes it held when the disk was full
        self.real_open = builtins.open

    def open(self, file: Any, mode: str = "r", *args: Any, **kwargs: Any) -> Any:
        fh = self.real_open(file, mode, *args, **kwargs)
        if isinstance(file, (str, os.PathLike)) and "w" in mode and "b" in mode and Path(file).parent == self.folder:
            return _Limited(fh, self, Path(file))
        return fh


class _Limited:
    """A binary file that refuses to grow past its disk's ``room``."""

    def __init__(self, fh: Any, disk: NearlyFullDisk, path: Path) -> None:
        self._fh, self._disk, self._path, self._left = fh, disk, path, disk.room

    def write(self, data: Any) -> int:
        data = bytes(data)
        if len(data) > self._left:
            self._fh.write(data[: self._left])
            self._fh.flush()
            self._disk.cut[self._path] = self._path.stat().st_size
            self._left = 0
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        self._left -= len(data)
        return self._fh.write(data)

    def fileno(self) -> int:
        raise io.UnsupportedOperation("fileno")

    def __getattr__(self, name: str) -> Any:
        return getattr(self._fh, name)

    def __enter__(self) -> _Limited:
        return self

    def __exit__(self, *exc: object) -> None:
        self._fh.close()


def test_disk_full_while_writing_keeps_no_partial_file_whatever_the_encoder(
    tmp_path: Path, weights: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    src, out = tmp_path / "in", tmp_path / "out"
    src.mkdir()
    out.mkdir()
    Image.fromarray(noise((6, 6, 3))).save(src / "a_small.png")  # fits
    Image.fromarray(noise((6, 6, 3))).save(src / "z_small.png")  # fits, after the failures freed their space
    big = {  # one per encoder: Pillow (PNG, JPEG, WebP), imagecodecs (16-bit colour PNG), tifffile (16-bit TIFF)
        "big.png": lambda p: Image.fromarray(noise((64, 64, 3))).save(p),
        "big.jpg": lambda p: Image.fromarray(noise((64, 64, 3))).save(p, quality=100),
        "big.webp": lambda p: Image.fromarray(noise((64, 64, 3))).save(p, lossless=True),
        "big16.png": lambda p: p.write_bytes(imagecodecs.png_encode(noise((64, 64, 3), np.uint16))),
        "big16.tif": lambda p: tifffile.imwrite(p, noise((64, 64, 3), np.uint16), photometric="rgb"),
    }
    for name, make in big.items():
        make(src / name)
    disk = NearlyFullDisk(out, room=3000)
    monkeypatch.setattr(builtins, "open", disk.open)
    monkeypatch.setattr(io, "open", disk.open)
    run = run_cli(restore_args(weights, src, "-o", out))
    monkeypatch.undo()
    assert run.code == 1 and "2 restored, 0 skipped, 5 failed" in run.out
    for name in big:
        target = out / name
        assert f"smartassign: {src / name}: cannot write {target} ([Errno 28] No space left on device)" in run.err
    # Each big output was cut short mid-write (its temp already held some bytes) and then removed.
    assert len(disk.cut) == len(big) and all(size > 0 for size in disk.cut.values())
    assert not any(p.exists() for p in disk.cut)
    assert files_in(out) == ["a_small.png", "z_small.png"]
    assert all(read_image(out / n).pixels.shape == (6, 6, 3) for n in files_in(out))


@pytest.mark.parametrize("step", ["fsync", "replace"])
def test_disk_full_at_fsync_or_rename_keeps_no_file(
    tmp_path: Path, weights: Path, monkeypatch: pytest.MonkeyPatch, step: str
) -> None:
    Image.fromarray(noise((8, 8, 3))).save(tmp_path / "a.png")
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "old.png").write_bytes(b"an older output, kept")

    def full(*args: Any) -> None:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, step, full)
    run = run_cli(restore_args(weights, tmp_path / "a.png", "-o", tmp_path / "out"))
    monkeypatch.undo()
    assert run.code == 1 and "No space left on device" in run.err
    assert files_in(tmp_path / "out") == ["old.png"]


def test_report_that_cannot_be_written_is_one_line_not_a_traceback(tmp_path: Path, weights: Path) -> None:
    Image.fromarray(noise((8, 8, 3))).save(tmp_path / "a.png")
    (tmp_path / "file").write_text("x")
    report = tmp_path / "file" / "report.json"
    run = run_cli(restore_args(weights, tmp_path / "a.png", "-o", tmp_path / "out", "--report", report))
    assert run.code == 2
    assert run.err == f"smartassign: error: --report {report}: cannot write the report (File exists)\n"
    assert read_image(tmp_path / "out" / "a.png").pixels.shape == (8, 8, 3)  # the images are still restored


def _user_namespaces() -> bool:
    """Whether this machine lets us mount a tmpfs in a user namespace (``unshare -rm``)."""
    if sys.platform != "linux" or shutil.which("unshare") is None:
        return False
    with tempfile.TemporaryDirectory() as folder:
        probe = subprocess.run(["unshare", "-rm", "mount", "-t", "tmpfs", "tmpfs", folder], capture_output=True)
    return probe.returncode == 0


NAMESPACE_CHILD = """
import contextlib, io, json, sys
from pathlib import Path
from smartassign.cli import main
from smartassign.io import read_image
src, weights, full, readonly = map(Path, sys.argv[1:])
result = {}
for name, out in (("full", full / "out"), ("readonly", readonly)):
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        code = main(["restore", str(src), "-o", str(out), "--weights", str(weights), "--device", "cpu"])
    files = {p.name: read_image(p).pixels.shape for p in out.iterdir()} if out.is_dir() else {}
    result[name] = {"code": code, "err": err.getvalue(), "files": files}
print(json.dumps(result))
"""


@pytest.mark.skipif(not _user_namespaces(), reason="needs unshare -rm (user and mount namespaces) to mount a tmpfs")
def test_real_full_disk_and_read_only_file_system(tmp_path: Path, weights: Path) -> None:
    src, full, readonly = tmp_path / "in", tmp_path / "full", tmp_path / "readonly"
    for folder in (src, full, readonly):
        folder.mkdir()
    Image.fromarray(noise((8, 8, 3))).save(src / "a.png")
    Image.fromarray(noise((120, 120, 3))).save(src / "b.png")  # ~43 kB of noise: more than the disk has left
    Image.fromarray(noise((8, 8, 3))).save(src / "c.png")
    script = (
        'set -e; mount -t tmpfs -o size=64k tmpfs "$3"; head -c 49152 /dev/zero > "$3/filler"; '
        'mount -t tmpfs -o ro tmpfs "$4"; exec "$0" -c "$5" "$1" "$2" "$3" "$4"'
    )
    argv = [sys.executable, src, weights, full, readonly, NAMESPACE_CHILD]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(["unshare", "-rm", "sh", "-c", script, *map(str, argv)], capture_output=True, env=env)
    assert proc.returncode == 0, proc.stderr.decode()[-2000:]
    result = json.loads(proc.stdout)
    disk = result["full"]
    assert disk["code"] == 1 and disk["files"] == {"a.png": [8, 8, 3], "c.png": [8, 8, 3]}
    assert f"{src / 'b.png'}: cannot write {full / 'out' / 'b.png'} ([Errno 28] No space left on device)" in disk["err"]
    ro = result["readonly"]
    assert ro["code"] == 1 and ro["files"] == {}
    assert ro["err"].count("Read-only file system") == 2 * 3  # one line per image, again in the summary


# --- kill -9 ------------------------------------------------------------------------------------------------

KILLED_MID_WRITE = """
import io, sys, time
from pathlib import Path
from PIL import Image
from smartassign.cli import main
marker, stop_at = Path(sys.argv[1]), int(sys.argv[2])
save, calls = Image.Image.save, []

def save_then_hang(self, fp, *args, **kwargs):
    calls.append(fp)
    if len(calls) == stop_at:  # write half of this image, then wait for SIGKILL mid-write
        buf = io.BytesIO()
        save(self, buf, *args, **kwargs)
        with open(fp, "wb") as fh:
            fh.write(buf.getvalue()[: len(buf.getvalue()) // 2])
            fh.flush()
            marker.write_text(str(fp))
            time.sleep(300)
    return save(self, fp, *args, **kwargs)

Image.Image.save = save_then_hang
sys.exit(main(sys.argv[3:]))
"""


def test_kill_9_during_restore_leaves_only_complete_images_and_the_next_run_finishes(
    tmp_path: Path, weights: Path, kill_when: Callable[..., None]
) -> None:
    src, out = tmp_path / "in", tmp_path / "out"
    src.mkdir()
    names = ["a.png", "b.png", "c.jpg", "d.png"]
    for name in names:
        Image.fromarray(noise((24, 32, 3))).save(src / name)
    marker = tmp_path / "writing"
    cmd = [sys.executable, "-c", KILLED_MID_WRITE, str(marker), "3", *restore_args(weights, src, "-o", out)]
    proc = subprocess.Popen(cmd, env={**os.environ, "OMP_NUM_THREADS": "1"}, stderr=subprocess.PIPE)
    kill_when(proc, marker.exists, 180, "the child never reached its third write")
    assert proc.returncode == -signal.SIGKILL
    # a.png and b.png were complete; c.jpg died half-written under a hidden temp name; d.png never started.
    temp = Path(marker.read_text())
    assert temp.parent == out and re.fullmatch(r"\.c\.jpg\.\w+\.tmp", temp.name) and temp.stat().st_size > 0
    assert files_in(out) == sorted([temp.name, "a.png", "b.png"])
    for name in ("a.png", "b.png"):
        assert read_image(out / name).pixels.shape == (24, 32, 3)
    with pytest.raises(ImageError, match="corrupt or truncated"):
        read_image(temp)  # it really was cut short

    # The next run skips the finished images, redoes the killed one and ignores the stale temp.
    run = run_cli(restore_args(weights, src, "-o", out))
    assert run.code == 0 and "2 restored, 2 skipped, 0 failed" in run.out
    assert files_in(out) == sorted([temp.name, *names])
    assert all(read_image(out / name).pixels.shape == (24, 32, 3) for name in names)
    # Hidden temps are never taken for inputs either.
    run = run_cli(restore_args(weights, out, "-o", tmp_path / "again"))
    assert run.code == 0 and files_in(tmp_path / "again") == names


# --- weights --------------------------------------------------------------------------------------------------


class _Payload:
    """Unpickling this creates a folder: proof that a file was unpickled."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, ...]:
        return (os.mkdir, (str(self.marker),))


def _tensors(path: Path) -> dict[str, torch.Tensor]:
    """The tensors of a safetensors file."""
    return load_file(str(path))


WEIGHT_FAULTS: dict[str, tuple[Callable[[Path, Path], Path], str]] = {}


def weight_fault(problem: str) -> Callable[[Callable[[Path, Path], Path]], Callable[[Path, Path], Path]]:
    """Register ``damage(good, folder) -> faulty path`` whose error message must contain ``problem``."""

    def register(damage: Callable[[Path, Path], Path]) -> Callable[[Path, Path], Path]:
        WEIGHT_FAULTS[damage.__name__] = (damage, problem)
        return damage

    return register


def _copy(good: Path, folder: Path, data: bytes | None = None, side: str | None = None) -> Path:
    """A copy of ``good`` (or ``data``) with its sidecar (or ``side``) in ``folder``."""
    path = folder / "w.safetensors"
    path.write_bytes(good.read_bytes() if data is None else data)
    sidecar(path).write_text(sidecar(good).read_text() if side is None else side)
    return path


@weight_fault("not a valid safetensors file")
def truncated(good: Path, folder: Path) -> Path:
    data = good.read_bytes()
    return _copy(good, folder, data[: len(data) // 2])


@weight_fault("not a valid safetensors file")
def zero_bytes(good: Path, folder: Path) -> Path:
    return _copy(good, folder, b"")


@weight_fault("not a valid safetensors file")
def pickle_renamed(good: Path, folder: Path) -> Path:
    return _copy(good, folder, pickle.dumps({"state": _Payload(folder / "UNPICKLED")}))


@weight_fault("not a valid safetensors file")
def torch_save_renamed(good: Path, folder: Path) -> Path:
    path = _copy(good, folder)
    torch.save({"state": _Payload(folder / "UNPICKLED"), **_tensors(good)}, path)
    return path


@weight_fault("weights file not found")
def a_folder(good: Path, folder: Path) -> Path:
    path = _copy(good, folder)
    path.unlink()
    path.mkdir()
    return path


@weight_fault("config sidecar missing; it must sit beside w.safetensors")
def sidecar_missing(good: Path, folder: Path) -> Path:
    path = _copy(good, folder)
    sidecar(path).unlink()
    return path


@weight_fault("damaged config sidecar")
def sidecar_not_json(good: Path, folder: Path) -> Path:
    return _copy(good, folder, side=sidecar(good).read_text()[:40])


@weight_fault("damaged config sidecar")
def sidecar_a_folder(good: Path, folder: Path) -> Path:
    path = _copy(good, folder)
    sidecar(path).unlink()
    sidecar(path).mkdir()
    return path


@weight_fault("no 'model' config in sidecar")
def sidecar_without_model(good: Path, folder: Path) -> Path:
    return _copy(good, folder, side=json.dumps({"step": 3}))


@weight_fault("unknown ModelConfig key(s): colour")
def sidecar_unknown_key(good: Path, folder: Path) -> Path:
    info = json.loads(sidecar(good).read_text())
    return _copy(good, folder, side=json.dumps({"model": {**info["model"], "colour": "red"}}))


@weight_fault("invalid model config")
def sidecar_width_as_text(good: Path, folder: Path) -> Path:
    info = json.loads(sidecar(good).read_text())
    return _copy(good, folder, side=json.dumps({"model": {**info["model"], "width": "8"}}))


@weight_fault("invalid model config")
def sidecar_heads_null(good: Path, folder: Path) -> Path:
    info = json.loads(sidecar(good).read_text())
    return _copy(good, folder, side=json.dumps({"model": {**info["model"], "heads": None}}))


@weight_fault("has shape")
def config_of_another_width(good: Path, folder: Path) -> Path:
    info = json.loads(sidecar(good).read_text())
    return _copy(good, folder, side=json.dumps({"model": {**info["model"], "width": 12}}))


@weight_fault("weights do not match the config")
def tensors_of_another_preset(good: Path, folder: Path) -> Path:
    path = _copy(good, folder)
    torch.manual_seed(0)
    save_file(dict(build_model("small").state_dict()), str(path))
    return path


@weight_fault("weights do not match the config")
def tensors_of_another_variant(good: Path, folder: Path) -> Path:
    path = _copy(good, folder)
    save_file(dict(small_net(routing="shared").state_dict()), str(path))
    return path


@weight_fault("hold NaN or infinity")
def nan_in_a_tensor(good: Path, folder: Path) -> Path:
    tensors = _tensors(good)
    name = sorted(tensors)[5]
    tensors[name] = tensors[name].clone()
    tensors[name].view(-1)[0] = float("nan")
    path = _copy(good, folder)
    save_file(tensors, str(path))
    return path


@pytest.mark.parametrize("fault", sorted(WEIGHT_FAULTS))
def test_damaged_or_mismatched_weights_are_one_line_naming_the_file(tmp_path: Path, weights: Path, fault: str) -> None:
    damage, problem = WEIGHT_FAULTS[fault]
    path = damage(weights, tmp_path)
    faulty = sidecar(path) if "sidecar" in fault else path
    with pytest.raises(WeightsError, match=re.escape(problem)) as info:
        load_weights(path)
    assert str(info.value).startswith(f"{faulty}: ") and "\n" not in str(info.value)
    Image.fromarray(noise((8, 8, 3))).save(tmp_path / "a.png")
    run = run_cli(restore_args(path, tmp_path / "a.png", "-o", tmp_path / "out"))
    assert run.code == 2 and run.err == f"smartassign: error: {info.value}\n"
    assert not (tmp_path / "out").exists()  # OUTDIR is created with the first image, and none was written
    assert not (tmp_path / "UNPICKLED").exists()  # nothing was ever unpickled


# --- configs --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("config", "overrides", "problem"),
    [
        ({"train": {"learning_rate": 1e-3}}, [], r"x\.yaml: unknown key 'train\.learning_rate'; valid keys: "),
        ({"optimiser": {"lr": 1e-3}}, [], r"x\.yaml: unknown key\(s\) optimiser; valid: "),
        ({"model": {"widht": 8}}, [], r"x\.yaml: unknown key 'model\.widht'"),
        ({}, ["train.stpes=3"], r"command line: unknown key 'train\.stpes'"),
        ({}, ["optimiser.lr=3"], r"command line: unknown key 'optimiser\.lr'"),
    ],
)
def test_config_with_unknown_keys_is_one_line_and_trains_nothing(
    tmp_path: Path, config: dict[str, Any], overrides: list[str], problem: str
) -> None:
    path = tmp_path / "x.yaml"
    path.write_text(yaml.safe_dump({"preset": "tiny", **config}))
    run_dir = tmp_path / "run"
    run = run_cli(["train", "--config", str(path), f"train.out_dir={run_dir}", *overrides])
    assert run.code == 2 and re.fullmatch(f"smartassign: error: .*{problem}.*\n", run.err)
    assert not run_dir.exists()


# --- nothing unpickles --------------------------------------------------------------------------------------

# Calls that unpickle (or run code from) a file, and the safe forms that are allowed.
UNSAFE = re.compile(
    r"\btorch\.load\(|\btorch\.jit\.load\(|\bimport (c?pickle|dill|joblib|cloudpickle|shelve|marshal)\b"
    r"|\bfrom (c?pickle|dill|joblib|cloudpickle|shelve|marshal) import|allow_pickle\s*=\s*True"
    r"|weights_only\s*=\s*False|\byaml\.(load|unsafe_load|full_load)\(|\bpd\.read_pickle\("
)


def test_no_source_file_can_unpickle() -> None:
    found = [
        f"{path.relative_to(ROOT)}:{number}: {line.strip()}"
        for path in sorted((ROOT / "src").rglob("*.py"))
        for number, line in enumerate(path.read_text().splitlines(), 1)
        if UNSAFE.search(line) and not re.search(r"torch\.load\(.*weights_only\s*=\s*True", line)
    ]
    assert found == []


def test_loading_weights_never_touches_pickle(tmp_path: Path, weights: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def forbidden(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("a weights loader tried to unpickle")

    for module, name in [(pickle, "load"), (pickle, "loads"), (pickle, "Unpickler"), (torch, "load"), (np, "load")]:
        monkeypatch.setattr(module, name, forbidden)
    expected = small_net().state_dict()
    for model in (load_weights(weights), smartassign.load(weights, "cpu").model, Restorer.from_weights(weights).model):
        state = model.state_dict()
        assert state.keys() == expected.keys() and all(torch.equal(state[k], expected[k]) for k in expected)


# --- first-run faults (issue 16): globs through folder links, eval with a missing partner, -o the input folder,
# an interrupt while starting, empty output folders, progress bars into a pipe -------------------------------


@pytest.mark.timeout(60)  # before the fix the first glob never ended
def test_recursive_glob_restores_each_real_file_once_and_never_follows_a_folder_link(
    tmp_path: Path, weights: Path
) -> None:
    loop, loop1 = tmp_path / "loop", tmp_path / "loop1"
    (loop / "sub").mkdir(parents=True)
    loop1.mkdir()
    Image.fromarray(noise((8, 8, 3))).save(loop / "one.png")
    Image.fromarray(noise((8, 8, 3))).save(loop / "sub" / "deep.png")  # a real sub-folder is still searched
    (loop / "sub" / "up").symlink_to("..")  # links back up the tree: glob.glob walked them without end
    (loop / "self").symlink_to("../loop")
    shutil.copy(loop / "one.png", loop1 / "one.png")
    (loop1 / "self").symlink_to(".")  # glob.glob found one.png through 40 paths: 1 restored, 40 failed
    (loop1 / "two.png").symlink_to("one.png")  # the same real file under a second name: restored once
    for folder, expected in ((loop, ["deep.png", "one.png"]), (loop1, ["one.png"])):
        out = tmp_path / f"out_{folder.name}"
        run = run_cli(restore_args(weights, f"{folder}/**/*.png", "-o", out, "--recursive"))
        assert run.code == 0 and f"{len(expected)} restored, 0 skipped, 0 failed" in run.out, run.err
        assert files_in(out) == expected
    # The same as giving the folder, which never followed a folder link.
    run = run_cli(restore_args(weights, loop, "-o", tmp_path / "by_folder", "--recursive"))
    assert run.code == 0 and files_in(tmp_path / "by_folder") == ["one.png", "sub"]
    assert files_in(tmp_path / "by_folder" / "sub") == ["deep.png"]


def _paired_folder(root: Path, names: list[str]) -> None:
    """``root/input`` and ``root/target`` holding the same file names, 16x16 noise."""
    for side in ("input", "target"):
        (root / side).mkdir(parents=True)
        for name in names:
            Image.fromarray(noise((16, 16, 3))).save(root / side / name)


@pytest.mark.parametrize(
    ("removed", "problem"),
    [
        ("rain/target/00002.png", "rain/input/00002.png: no clean partner ({root}/rain/target/00002.*)"),
        ("snow/input/00001.png", "snow/target/00001.png: no degraded partner ({root}/snow/input/00001.*)"),
    ],
)
def test_eval_with_a_missing_partner_is_one_line_naming_it_unless_skip_missing(
    tmp_path: Path, weights: Path, removed: str, problem: str
) -> None:
    root = tmp_path / "syn"  # a `smartassign data synth` folder: rain/ and snow/, each input/ + target/
    names = [f"{i:05d}.png" for i in range(4)]
    for task in ("rain", "snow"):
        _paired_folder(root / task, names)
    (root / removed).unlink()
    report = tmp_path / "report" / "syn"
    argv = ["eval", "--weights", str(weights), "--data", str(root), "--device", "cpu", "--report", str(report)]
    run = run_cli(argv)
    assert run.code == 2 and run.out == ""
    line = f"smartassign: error: {root}/{problem.format(root=root)}; `smartassign data check "
    assert run.err.startswith(line) and run.err.count("\n") == 1 and "--skip-missing" in run.err
    assert not report.parent.exists()  # no report that looks complete

    run = run_cli([*argv, "--skip-missing"])
    task = removed.split("/")[0]
    assert run.code == 0 and f"| syn | {task} | 3 |" in run.out and "Not scored (--skip-missing): 1 " in run.out
    data = json.loads(report.with_suffix(".json").read_text())
    assert data["results"][task]["skipped_missing"] == 1 and data["results"][task]["images"] == 3
    assert data["missing"] == {task: [f"{root}/{problem.format(root=root)}"]}
    assert "Not scored (--skip-missing)" in report.with_suffix(".md").read_text()


def test_eval_of_a_generic_folder_with_a_missing_partner_is_an_error(tmp_path: Path, weights: Path) -> None:
    root = tmp_path / "pairs"
    _paired_folder(root, ["a.png", "b.png"])
    (root / "target" / "b.png").unlink()
    argv = ["eval", "--weights", str(weights), "--data", str(root), "--task", "rain", "--device", "cpu"]
    run = run_cli([*argv, "--report", str(tmp_path / "r")])
    assert run.code == 2 and run.err.startswith(
        f"smartassign: error: {root / 'input' / 'b.png'}: no clean partner ({root / 'target' / 'b'}.*)"
    )
    run = run_cli([*argv, "--report", str(tmp_path / "r"), "--skip-missing"])
    assert run.code == 0 and "| pairs | rain | 1 |" in run.out


def test_output_folder_that_is_the_input_folder_needs_a_suffix_and_never_touches_an_input(
    tmp_path: Path, weights: Path
) -> None:
    same = tmp_path / "same"
    same.mkdir()
    for name in ("a.png", "b.png", "c.jpg"):
        Image.fromarray(noise((8, 8, 3))).save(same / name)
    before = {name: (same / name).read_bytes() for name in files_in(same)}
    run = run_cli(restore_args(weights, same, "-o", same))  # it used to say "no images found in: same"
    assert run.code == 2 and run.err == (
        f"smartassign: error: -o {same} is the input folder {same}: the restored images would replace the inputs; "
        "choose another -o, or add --suffix (e.g. --suffix _restored) to write NAME_restored.EXT beside each\n"
    )
    assert files_in(same) == sorted(before)
    run = run_cli(restore_args(weights, same, "-o", same, "--suffix", "_r"))
    assert run.code == 0 and "3 restored, 0 skipped, 0 failed" in run.out
    assert files_in(same) == ["a.png", "a_r.png", "b.png", "b_r.png", "c.jpg", "c_r.jpg"]
    assert read_image(same / "c_r.jpg").pixels.shape == (8, 8, 3)
    # Again (and with --overwrite): the outputs of the first run are not taken for inputs (no a_r_r.png).
    for extra, summary in (([], "0 restored, 3 skipped"), (["--overwrite"], "3 restored, 0 skipped")):
        run = run_cli(restore_args(weights, same, "-o", same, "--suffix", "_r", *extra))
        assert run.code == 0 and f"{summary}, 0 failed" in run.out
        assert "left out 3 file(s) named as the output of another input" in run.err
        assert files_in(same) == ["a.png", "a_r.png", "b.png", "b_r.png", "c.jpg", "c_r.jpg"]
    assert all((same / name).read_bytes() == data for name, data in before.items())


INTERRUPTED_WHILE_IMPORTING = """
import sys

class Interrupt:  # Ctrl-C while torch loads: the slow part of start-up
    def find_spec(self, name, path=None, target=None):
        if name == "torch":
            raise KeyboardInterrupt

sys.meta_path.insert(0, Interrupt())
from smartassign.cli import main  # what the `smartassign` console script runs
sys.exit(main(sys.argv[1:]))
"""


def test_interrupt_while_starting_or_running_is_one_line_and_exit_130(
    tmp_path: Path, weights: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    proc = subprocess.run(
        [sys.executable, "-c", INTERRUPTED_WHILE_IMPORTING, "restore", "x.png", "-o", str(tmp_path / "out")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert (proc.returncode, proc.stderr, proc.stdout) == (130, "smartassign: interrupted\n", "")
    Image.fromarray(noise((8, 8, 3))).save(tmp_path / "a.png")

    def interrupt(*args: Any, **kwargs: Any) -> Any:
        raise KeyboardInterrupt

    monkeypatch.setattr(Restorer, "from_weights", interrupt)  # Ctrl-C while the weights load
    run = run_cli(restore_args(weights, tmp_path / "a.png", "-o", tmp_path / "out"))
    assert (run.code, run.err) == (130, "smartassign: interrupted\n")
    assert not (tmp_path / "out").exists()


def test_a_run_that_writes_nothing_leaves_no_output_folder(tmp_path: Path, weights: Path) -> None:
    Image.fromarray(noise((8, 8, 3))).save(tmp_path / "a.png")
    (tmp_path / "bad.png").write_bytes(b"not an image")
    (tmp_path / "w.safetensors").write_bytes(b"not weights")
    shutil.copy(sidecar(weights), tmp_path / "w.json")
    runs = {
        "bad weights": (restore_args(tmp_path / "w.safetensors", tmp_path / "a.png", "-o", tmp_path / "o1"), 2),
        "glob matching nothing": (restore_args(weights, tmp_path / "*.tif", "-o", tmp_path / "o2"), 1),
        "only a bad image": (restore_args(weights, tmp_path / "bad.png", "-o", tmp_path / "o3"), 1),
    }
    for why, (argv, code) in runs.items():
        assert run_cli(argv).code == code, why
    assert files_in(tmp_path) == ["a.png", "bad.png", "w.json", "w.safetensors"]  # no empty o1, o2, o3
    run = run_cli(restore_args(weights, tmp_path / "a.png", "-o", tmp_path / "new" / "deeper"))
    assert run.code == 0 and files_in(tmp_path / "new" / "deeper") == ["a.png"]  # made with the first image


def test_no_progress_bar_when_stderr_is_not_a_terminal(
    tmp_path: Path, weights: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pairs = tmp_path / "pairs"
    _paired_folder(pairs, ["a.png", "b.png"])
    scoring = ["--data", str(pairs), "--task", "rain", "--device", "cpu", "--report", str(tmp_path / "r")]
    runs = [
        restore_args(weights, pairs / "input", "-o", tmp_path / "out"),
        ["data", "check", str(pairs), "--layout", "generic"],
        ["data", "synth", "--out", str(tmp_path / "synth"), "--n", "1", "--size", "16"],
        ["eval", "--weights", str(weights), *scoring],
    ]
    for argv in runs:
        run = run_cli(argv)
        assert run.code == 0 and "\r" not in run.err and "it/s" not in run.err, (argv, run.err)
    import smartassign.cli.train as train_cli

    seen: list[bool] = []

    def fit(exp: Any, resume: bool) -> Any:
        seen.append(exp.train.progress)
        raise KeyboardInterrupt  # stop here: only the configuration handed to training matters

    monkeypatch.setattr(train_cli, "fit", fit)
    assert run_cli(["train", "--config", str(ROOT / "configs" / "synthetic_tiny.yaml")]).code == 130
    assert seen == [False]  # the YAML says progress: true (the default); stderr is no terminal
