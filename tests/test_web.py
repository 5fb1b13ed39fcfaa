"""The web API (``smartassign serve``) through FastAPI's TestClient, on a random tiny model and small images."""

from __future__ import annotations

import io
import re
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import imagecodecs
import numpy as np
import pytest
import torch
from PIL import Image, ImageCms

for module in ("fastapi", "multipart", "uvicorn"):
    pytest.importorskip(module, reason="the 'serve' extra (fastapi, python-multipart, uvicorn) is not installed")
from fastapi.testclient import TestClient  # noqa: E402

from smartassign import build_model  # noqa: E402
from smartassign.checkpoint import save_weights  # noqa: E402
from smartassign.cli import main  # noqa: E402
from smartassign.restore import Restored, Restorer  # noqa: E402
from smartassign.web.app import STATIC, create_app  # noqa: E402

W, H = 64, 48


@pytest.fixture(scope="module")
def restorer() -> Iterator[Restorer]:
    """A Restorer around a randomly initialised tiny network on the CPU."""
    # On a busy shared runner, OpenMP threads spin-waiting on each other make a 64x48 image 50x slower.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    yield Restorer(build_model("tiny"), device="cpu")
    torch.set_num_threads(threads)


def encode(fmt: str = "PNG", size: tuple[int, int] = (W, H), mode: str = "RGB") -> bytes:
    """Bytes of a noise image in ``fmt``."""
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 256, (size[1], size[0], len(mode)), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(pixels.squeeze(-1) if mode == "L" else pixels, mode).save(buf, format=fmt)
    return buf.getvalue()


def post(client: TestClient, data: bytes, name: str = "photo.png", **fields: str) -> httpx.Response:
    """POST ``data`` as the file field of /api/restore."""
    return client.post("/api/restore", files={"file": (name, data, "application/octet-stream")}, data=fields)


@pytest.fixture(scope="module")
def client(restorer: Restorer) -> TestClient:
    """A client of an app with the default limits."""
    return TestClient(create_app(restorer))


@pytest.mark.parametrize("fmt", ["PNG", "JPEG", "WEBP"])
def test_restore_returns_image_of_same_size(client: TestClient, fmt: str) -> None:
    response = post(client, encode(fmt), name=f"photo.{fmt.lower()}")
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "image/png"
    with Image.open(io.BytesIO(response.content)) as out:
        assert (out.format, out.size, out.mode) == ("PNG", (W, H), "RGB")
    assert response.headers["x-smartassign-task"] in ("rain", "snow")
    assert 0.5 <= float(response.headers["x-smartassign-confidence"]) <= 1.0
    assert float(response.headers["x-smartassign-seconds"]) > 0


def test_chosen_task_and_jpeg_output(client: TestClient) -> None:
    response = post(client, encode(mode="RGBA"), task="snow", format="jpeg")
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "image/jpeg"
    assert response.headers["x-smartassign-task"] == "snow"
    assert "x-smartassign-confidence" not in response.headers
    with Image.open(io.BytesIO(response.content)) as out:
        assert (out.format, out.size, out.mode) == ("JPEG", (W, H), "RGB")


@pytest.mark.parametrize(
    ("mode", "channels", "dtype"), [("L", 1, np.uint8), ("RGBA", 4, np.uint8), ("RGB16", 3, np.uint16)]
)
def test_png_layout_is_kept(client: TestClient, mode: str, channels: int, dtype: type) -> None:
    """Gray stays gray, alpha is passed through, 16-bit colour stays 16-bit."""
    rng = np.random.default_rng(1)
    if mode == "RGB16":
        data = imagecodecs.png_encode(rng.integers(0, 65536, (H, W, 3), dtype=np.uint16))
    else:
        data = encode(mode=mode)
    response = post(client, data)
    assert response.status_code == 200, response.text
    pixels = imagecodecs.png_decode(response.content)
    assert pixels.shape[:2] == (H, W) and (pixels.shape[2] if pixels.ndim == 3 else 1) == channels
    assert pixels.dtype == dtype
    if mode == "RGBA":
        assert np.array_equal(pixels[..., 3], imagecodecs.png_decode(data)[..., 3])


def test_exif_orientation_is_applied_and_icc_profile_kept(client: TestClient) -> None:
    buf = io.BytesIO()
    exif = Image.Exif()
    exif[0x0112] = 6  # stored landscape, displayed portrait
    icc = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    Image.new("RGB", (W, H), "gray").save(buf, format="JPEG", exif=exif, icc_profile=icc)
    response = post(client, buf.getvalue(), name="rotated.jpg")
    assert response.status_code == 200, response.text
    with Image.open(io.BytesIO(response.content)) as out:
        assert out.size == (H, W)
        assert out.info["icc_profile"] == icc


@pytest.mark.parametrize(
    ("data", "name"),
    [(b"hello, I am text\n", "notes.txt"), (b"GIF89a" + bytes(64), "anim.gif"), (b"", "empty.png")],
)
def test_non_image_is_415(client: TestClient, data: bytes, name: str) -> None:
    response = post(client, data, name=name)
    assert response.status_code == 415
    assert response.json()["detail"] == f"{name}: not a PNG, JPEG or WebP image"


def test_non_multipart_body_is_415(client: TestClient) -> None:
    response = client.post("/api/restore", content=encode(), headers={"content-type": "image/png"})
    assert response.status_code == 415
    assert "multipart/form-data" in response.json()["detail"]


@pytest.mark.parametrize(
    "data",
    [encode()[:200], encode("JPEG")[:300], b"\x89PNG\r\n\x1a\n" + b"garbage" * 20],
    ids=["truncated-png", "truncated-jpeg", "png-signature-garbage"],
)
def test_corrupt_image_is_422(client: TestClient, data: bytes) -> None:
    response = post(client, data, name="broken.png")
    assert response.status_code == 422
    detail = response.json()["detail"]
    assert detail.startswith("broken.png: ") and "corrupt" in detail
    assert tempfile.gettempdir() not in detail


def test_bad_fields_are_422(client: TestClient) -> None:
    assert post(client, encode(), task="fog").json()["detail"] == "'task' must be one of auto, rain, snow"
    assert post(client, encode(), format="gif").status_code == 422
    response = client.post("/api/restore", data={"task": "rain"}, files={"other": ("x.png", encode())})
    assert response.status_code == 422
    assert "'file'" in response.json()["detail"]


def test_task_the_model_lacks_is_422() -> None:
    rain_only = Restorer(build_model("tiny", "V4r"), device="cpu")
    response = post(TestClient(create_app(rain_only)), encode(), task="snow")
    assert response.status_code == 422
    assert "snow" in response.json()["detail"]


def test_upload_over_limit_is_413(restorer: Restorer) -> None:
    client = TestClient(create_app(restorer, max_upload_mb=0.01))  # 10 KiB; a 64x48 noise PNG is ~9 KiB
    small, big = encode(size=(32, 32)), encode(size=(80, 80))
    assert post(client, small).status_code == 200
    response = post(client, big)
    assert response.status_code == 413
    assert "larger than 0.01 MB" in response.json()["detail"]


@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
def test_body_over_limit_is_refused_while_streaming(restorer: Restorer, chunked: bool) -> None:
    """A body far over the limit is refused whether or not it declares its length up front."""
    client = TestClient(create_app(restorer, max_upload_mb=0.01))
    boundary = "b0undary"
    body = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="big.png"\r\n\r\n'.encode()
        + bytes(200 * 1024)
        + f"\r\n--{boundary}--\r\n".encode()
    )
    content = iter([body[i : i + 8192] for i in range(0, len(body), 8192)]) if chunked else body
    response = client.post(
        "/api/restore", content=content, headers={"content-type": f"multipart/form-data; boundary={boundary}"}
    )
    assert response.status_code == 413
    assert "larger than" in response.json()["detail"]


def test_too_many_pixels_is_413(restorer: Restorer) -> None:
    client = TestClient(create_app(restorer, max_pixels=W * H - 1))
    response = post(client, encode())
    assert response.status_code == 413
    assert f"{W}x{H}" in response.json()["detail"] and "--max-pixels" in response.json()["detail"]
    assert post(client, encode(size=(W - 1, H))).status_code == 200


def test_uploads_are_not_left_on_disk(client: TestClient, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Large uploads stay in memory while parsing; the decoding folder is gone once the response is sent."""
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    made: list[str] = []
    original_mkdtemp = tempfile.mkdtemp

    def recording_mkdtemp(*args: object, **kwargs: object) -> str:
        made.append(original_mkdtemp(*args, **kwargs))
        return made[-1]

    monkeypatch.setattr(tempfile, "mkdtemp", recording_mkdtemp)

    def no_spooling(*args: object, **kwargs: object) -> None:
        raise AssertionError("an upload was spooled to a temporary file")

    monkeypatch.setattr(tempfile, "TemporaryFile", no_spooling)
    assert post(client, encode()).status_code == 200
    assert post(client, encode()[:200]).status_code == 422
    assert post(client, b"x" * (2 * 1024 * 1024), name="big.bin").status_code == 415  # above Starlette's 1 MB spool
    assert len(made) == 2
    assert list(tmp_path.iterdir()) == []


def test_health_reports_model_and_limits(restorer: Restorer) -> None:
    client = TestClient(create_app(restorer, max_upload_mb=3, max_pixels=1000, max_concurrent=2, queue_size=5))
    body = client.get("/api/health").json()
    assert body["status"] == "ok"
    assert body["tasks"] == ["rain", "snow"]
    assert body["device"] == "cpu"
    assert body["parameters"] == sum(p.numel() for p in restorer.model.parameters())
    assert (body["running"], body["waiting"]) == (0, 0)
    assert body["limits"] == {"max_upload_mb": 3, "max_pixels": 1000, "max_concurrent": 2, "queue_size": 5}


def test_page_and_openapi_work_offline(client: TestClient) -> None:
    page = client.get("/")
    assert page.status_code == 200 and "text/html" in page.headers["content-type"]
    assert 'type="file"' in page.text and "multiple" in page.text
    for name in ("app.js", "style.css"):
        assert client.get(f"/static/{name}").status_code == 200
    for path in STATIC.iterdir():
        assert not re.search(r"(https?:)?//[a-z0-9.-]+\.[a-z]{2,}", path.read_text()), f"{path.name} loads from the web"
    spec = client.get("/openapi.json").json()
    assert set(spec["paths"]) == {"/api/restore", "/api/health"}
    body = spec["paths"]["/api/restore"]["post"]["requestBody"]["content"]["multipart/form-data"]["schema"]
    assert body["required"] == ["file"]


class GatedRestorer:
    """Wraps a Restorer; every restore waits until ``release`` is set, and the peak overlap is recorded."""

    def __init__(self, inner: Restorer) -> None:
        self.inner = inner
        self.tasks, self.model, self.device = inner.tasks, inner.model, inner.device
        self.release = threading.Event()
        self.active = self.peak = 0
        self._lock = threading.Lock()

    def restore(self, image: np.ndarray, task: str = "auto") -> Restored:
        """Wait for the gate, then restore."""
        with self._lock:
            self.active += 1
            self.peak = max(self.peak, self.active)
        try:
            assert self.release.wait(20), "test never opened the gate"
            return self.inner.restore(image, task=task)
        finally:
            with self._lock:
                self.active -= 1


def wait_for(client: TestClient, condition: Callable[[dict], bool]) -> dict:
    """Poll /api/health until ``condition`` holds (the event loop stays free while restores block)."""
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        health = client.get("/api/health").json()
        if condition(health):
            return health
        time.sleep(0.02)
    raise AssertionError(f"health never satisfied the condition: {health}")


def start(client: TestClient, results: list, n: int) -> list[threading.Thread]:
    """Send ``n`` uploads from ``n`` threads; responses' status codes go to ``results``."""
    threads = [threading.Thread(target=lambda: results.append(post(client, encode()).status_code)) for _ in range(n)]
    for thread in threads:
        thread.start()
    return threads


def test_concurrent_requests_wait_their_turn(restorer: Restorer) -> None:
    gated = GatedRestorer(restorer)
    results: list[int] = []
    with TestClient(create_app(gated, max_concurrent=1, queue_size=3)) as client:
        threads = start(client, results, 4)
        wait_for(client, lambda h: h["running"] == 1 and h["waiting"] == 3)
        gated.release.set()
        for thread in threads:
            thread.join(30)
        assert results == [200] * 4
        assert gated.peak == 1
        assert wait_for(client, lambda h: True)["running"] == 0


def test_full_queue_is_503_then_recovers(restorer: Restorer) -> None:
    gated = GatedRestorer(restorer)
    results: list[int] = []
    with TestClient(create_app(gated, max_concurrent=1, queue_size=1)) as client:
        threads = start(client, results, 2)
        wait_for(client, lambda h: h["running"] == 1 and h["waiting"] == 1)
        refused = post(client, encode())
        assert refused.status_code == 503
        assert refused.headers["retry-after"] == "1"
        assert "busy" in refused.json()["detail"]
        gated.release.set()
        for thread in threads:
            thread.join(30)
        assert results == [200, 200]
        assert wait_for(client, lambda h: h["running"] == 0 and h["waiting"] == 0)
        assert post(client, encode()).status_code == 200


def test_serve_command_passes_address_and_limits(
    restorer: Restorer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import uvicorn

    weights = tmp_path / "tiny.safetensors"
    save_weights(restorer.model, weights)
    calls: list[dict] = []
    monkeypatch.setattr(uvicorn, "run", lambda app, **kw: calls.append({"app": app, **kw}))
    argv = ["serve", "--weights", str(weights), "--device", "cpu", "--port", "8123", "--max-pixels", "5000"]
    assert main([*argv, "--max-upload-mb", "2", "--queue-size", "0"]) == 0
    (call,) = calls
    assert (call["host"], call["port"]) == ("127.0.0.1", 8123)
    limits = TestClient(call["app"]).get("/api/health").json()["limits"]
    assert limits == {"max_upload_mb": 2, "max_pixels": 5000, "max_concurrent": 1, "queue_size": 0}


def test_serve_command_errors_are_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["serve", "--weights", str(tmp_path / "missing.safetensors")]) == 2
    assert re.fullmatch(r"smartassign: error: [^\n]*missing\.safetensors[^\n]*\n", capsys.readouterr().err)
    assert main(["serve", "--max-pixels", "0"]) == 2
    assert capsys.readouterr().err == "smartassign: error: --max-pixels must be positive\n"
