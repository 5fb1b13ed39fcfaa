"""The FastAPI app behind ``smartassign serve``: one static page and a small image API over a ``Restorer``.

An upload is parsed in memory (Starlette's spill-to-disk is turned off) and checked: body size (413), image
type sniffed from its first bytes (415), header readable (422), pixel count (413). It is then decoded,
restored and encoded in a worker thread, through ``smartassign.io`` so that EXIF orientation, 16-bit PNGs and
ICC profiles are handled as by ``smartassign restore``; that module works on files, so the bytes pass
through a private ``TemporaryDirectory`` that is deleted before the response is sent. A bounded queue keeps
memory bounded: ``max_concurrent`` requests run at once, ``queue_size`` more wait, further ones get 503.
"""

from __future__ import annotations

import asyncio
import io
import socket
import tempfile
import threading
import time
import warnings
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import uvicorn
from fastapi import FastAPI, HTTPException, Request
from fastapi.responses import FileResponse, Response
from fastapi.staticfiles import StaticFiles
from PIL import Image, UnidentifiedImageError
from pydantic import BaseModel
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile
from starlette.formparsers import MultiPartException, MultiPartParser

from smartassign import __version__
from smartassign.errors import ConfigError, ImageError
from smartassign.io import DECODE_ERRORS, read_image, write_image
from smartassign.model import count_parameters
from smartassign.restore import Restorer
from smartassign.web import MAX_CONCURRENT, MAX_PIXELS, MAX_UPLOAD_MB, QUEUE_SIZE

STATIC = Path(__file__).parent / "static"
TASKS = ("auto", "rain", "snow")
# Output formats: form value -> (Pillow format, media type).
FORMATS = {"png": ("PNG", "image/png"), "jpeg": ("JPEG", "image/jpeg")}
ACCEPTED = "PNG, JPEG or WebP"
# Room for the multipart boundaries, part headers and the small text fields around the file.
FORM_OVERHEAD = 64 * 1024


class ErrorMessage(BaseModel):
    """Body of every error response."""

    detail: str


class Limits(BaseModel):
    """The server's limits, so clients can check before uploading."""

    max_upload_mb: float
    max_pixels: int
    max_concurrent: int
    queue_size: int


class Health(BaseModel):
    """Body of ``GET /api/health``."""

    status: str
    version: str
    tasks: list[str]
    parameters: int
    device: str
    running: int
    waiting: int
    limits: Limits


class Admission:
    """A bounded queue: ``slots`` requests run at once, ``queue_size`` more wait, further ones are refused."""

    def __init__(self, slots: int, queue_size: int) -> None:
        self.slots = slots
        self.queue_size = queue_size
        self.admitted = 0
        self.running = 0
        self._semaphore = asyncio.Semaphore(slots)

    @asynccontextmanager
    async def place(self) -> AsyncIterator[None]:
        """Hold a place (running or waiting) for the whole request, or raise 503 when none is free."""
        # The event loop runs one coroutine at a time, so this check-then-increment cannot race.
        if self.admitted >= self.slots + self.queue_size:
            raise HTTPException(503, "the server is busy; try again in a moment", headers={"Retry-After": "1"})
        self.admitted += 1
        try:
            yield
        finally:
            self.admitted -= 1

    @asynccontextmanager
    async def slot(self) -> AsyncIterator[None]:
        """Wait for one of the ``slots`` in which decoding and inference may run."""
        async with self._semaphore:
            self.running += 1
            try:
                yield
            finally:
                self.running -= 1


@dataclass(frozen=True)
class Result:
    """An encoded restoration and what the restorer said about it."""

    body: bytes
    task: str
    confidence: float | None  # None when the client chose the task
    seconds: float


class PixelLimitError(ImageError):
    """The image has more pixels than the server allows."""


def sniff(data: bytes) -> str | None:
    """The Pillow format of an upload from its first bytes (never its name or declared type), or None."""
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return "PNG"
    if data.startswith(b"\xff\xd8\xff"):
        return "JPEG"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "WEBP"
    return None


def check_pixels(data: bytes, fmt: str, max_pixels: int, name: str) -> None:
    """Read only the header and refuse images above ``max_pixels`` before anything is decoded."""
    try:
        with warnings.catch_warnings():
            # Our limit is the one that matters; Pillow's softer warning for large images is noise here.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data), formats=[fmt]) as image:
                w, h = image.size
    except Image.DecompressionBombError as exc:
        raise PixelLimitError(f"{name}: too many pixels ({exc})") from None
    except (UnidentifiedImageError, *DECODE_ERRORS) as exc:
        raise ImageError(f"{name}: corrupt {fmt} header ({exc})") from None
    if w * h > max_pixels:
        raise PixelLimitError(
            f"{name}: {w}x{h} is {w * h / 1e6:.1f} MP, above this server's limit of {max_pixels / 1e6:.1f} MP "
            "(shrink the image, or restart the server with a larger --max-pixels)"
        )


def _too_large(limit_mb: float) -> HTTPException:
    """The 413 for a body over the upload limit."""
    return HTTPException(
        413,
        f"upload larger than {limit_mb:g} MB; shrink the image, or restart the server with a larger --max-upload-mb",
    )


async def read_form(request: Request, max_bytes: int, limit_mb: float) -> dict[str, Any]:
    """Parse the multipart body in memory, refusing bodies over ``max_bytes`` with 413 before reading them all."""
    if not request.headers.get("content-type", "").startswith("multipart/form-data"):
        raise HTTPException(415, "send the image as multipart/form-data in a field named 'file'")
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > max_bytes:
        raise _too_large(limit_mb)

    async def limited() -> AsyncIterator[bytes]:
        # Content-Length may be absent (chunked) or wrong, so count what actually arrives.
        total = 0
        async for chunk in request.stream():
            total += len(chunk)
            if total > max_bytes:
                raise _too_large(limit_mb)
            yield chunk

    parser = MultiPartParser(request.headers, limited(), max_files=1, max_fields=4)
    # Starlette spools parts above 1 MB to a temporary file; keep whole uploads in memory instead.
    parser.spool_max_size = max_bytes
    try:
        form = await parser.parse()
    except MultiPartException as exc:
        raise HTTPException(400, f"malformed multipart body: {exc}") from None
    return dict(form.items())


def _choice(form: dict[str, Any], name: str, choices: tuple[str, ...] | dict[str, Any], default: str) -> str:
    """The form field ``name`` (``default`` when absent), or 422 when it is not one of ``choices``."""
    value = form.get(name, default)
    if not isinstance(value, str) or value not in choices:
        raise HTTPException(422, f"'{name}' must be one of {', '.join(choices)}")
    return value


def create_app(
    restorer: Restorer,
    max_upload_mb: float = MAX_UPLOAD_MB,
    max_pixels: int = MAX_PIXELS,
    max_concurrent: int = MAX_CONCURRENT,
    queue_size: int = QUEUE_SIZE,
) -> FastAPI:
    """The web app around an already loaded ``restorer`` (the model is loaded once, by the caller)."""
    max_upload = int(max_upload_mb * 1024 * 1024)
    admission = Admission(max_concurrent, queue_size)
    app = FastAPI(
        title="SmartAssign",
        version=__version__,
        description="Remove rain and snow from photos. The page is at `/`; the API is below.",
    )
    app.mount("/static", StaticFiles(directory=STATIC), name="static")

    @app.get("/", include_in_schema=False)
    async def page() -> FileResponse:
        return FileResponse(STATIC / "index.html")

    @app.get("/api/health", response_model=Health, summary="Liveness, model and queue state")
    async def health() -> Health:
        """Whether the server is up, which model it runs, and how busy it is."""
        return Health(
            status="ok",
            version=__version__,
            tasks=list(restorer.tasks),
            parameters=count_parameters(restorer.model),
            device=str(restorer.device),
            running=admission.running,
            waiting=admission.admitted - admission.running,
            limits=Limits(
                max_upload_mb=max_upload_mb,
                max_pixels=max_pixels,
                max_concurrent=max_concurrent,
                queue_size=queue_size,
            ),
        )

    def process(data: bytes, name: str, task: str, fmt: str) -> Result:
        """Decode, restore and encode one upload (runs in a worker thread)."""
        with tempfile.TemporaryDirectory(prefix="smartassign-web-") as tmp:
            src, dst = Path(tmp) / "upload", Path(tmp) / "restored"
            src.write_bytes(data)
            try:
                picture = read_image(src, max_pixels)
                restored = restorer.restore(picture.pixels, task=task)
                write_image(dst, restored.image, FORMATS[fmt][0], picture.icc_profile, picture.exif)
            except ImageError as exc:
                # Name the client's file, not our temporary path.
                raise ImageError(str(exc).replace(str(src), name)) from None
            return Result(dst.read_bytes(), restored.task, restored.confidence, restored.seconds)

    @app.post(
        "/api/restore",
        summary="Restore one image",
        response_class=Response,
        responses={
            200: {
                "description": "The restored image, same size as the upload; task, confidence and seconds in headers.",
                "content": {media: {} for _, media in FORMATS.values()},
                "headers": {
                    "X-SmartAssign-Task": {"description": "rain or snow", "schema": {"type": "string"}},
                    "X-SmartAssign-Confidence": {
                        "description": "probability of that task from the recognition head, 0..1; "
                        "absent when the task was chosen by the client",
                        "schema": {"type": "number"},
                    },
                    "X-SmartAssign-Seconds": {"description": "time spent restoring", "schema": {"type": "number"}},
                },
            },
            400: {"model": ErrorMessage, "description": "Malformed multipart body"},
            413: {"model": ErrorMessage, "description": "Upload or pixel count over the limit"},
            415: {"model": ErrorMessage, "description": f"Not multipart, or not a {ACCEPTED} image"},
            422: {"model": ErrorMessage, "description": "Corrupt image, missing file, or a task the model lacks"},
            503: {"model": ErrorMessage, "description": "Queue full; retry after the Retry-After header"},
        },
        openapi_extra={
            "requestBody": {
                "required": True,
                "content": {
                    "multipart/form-data": {
                        "schema": {
                            "type": "object",
                            "required": ["file"],
                            "properties": {
                                "file": {"type": "string", "format": "binary", "description": ACCEPTED},
                                "task": {"type": "string", "enum": list(TASKS), "default": "auto"},
                                "format": {"type": "string", "enum": list(FORMATS), "default": "png"},
                            },
                        }
                    }
                },
            }
        },
    )
    async def restore(request: Request) -> Response:
        """Upload one image as the multipart field ``file``; get the restored image back."""
        async with admission.place():
            form = await read_form(request, max_upload + FORM_OVERHEAD, max_upload_mb)
            upload = form.get("file")
            if not isinstance(upload, UploadFile):
                raise HTTPException(422, "no image: send it as the multipart file field 'file'")
            task = _choice(form, "task", TASKS, "auto")
            fmt = _choice(form, "format", FORMATS, "png")
            data = await upload.read()
            name = upload.filename or "upload"
            if len(data) > max_upload:
                raise _too_large(max_upload_mb)
            fmt_in = sniff(data)
            if fmt_in is None:
                raise HTTPException(415, f"{name}: not a {ACCEPTED} image")
            try:
                check_pixels(data, fmt_in, max_pixels, name)
                async with admission.slot():
                    result = await run_in_threadpool(process, data, name, task, fmt)
            except PixelLimitError as exc:
                raise HTTPException(413, str(exc)) from None
            except (ImageError, ConfigError) as exc:
                raise HTTPException(422, str(exc)) from None
        headers = {"X-SmartAssign-Task": result.task, "X-SmartAssign-Seconds": f"{result.seconds:.3f}"}
        if result.confidence is not None:
            headers["X-SmartAssign-Confidence"] = f"{result.confidence:.4f}"
        return Response(result.body, media_type=FORMATS[fmt][1], headers=headers)

    return app


@contextmanager
def serve_in_background(app: FastAPI, host: str = "127.0.0.1", port: int = 0) -> Iterator[str]:
    """Run ``app`` on uvicorn in a daemon thread (port 0: a free one); yields its base URL and stops it on exit."""
    # Bind here and hand the socket over, so nothing else can take a free port between choosing and listening.
    with socket.socket() as sock:
        sock.bind((host, port))
        server = uvicorn.Server(uvicorn.Config(app, log_level="warning"))
        thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
        thread.start()
        deadline = time.monotonic() + 30
        while not server.started:
            if not thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError(f"uvicorn did not start on {host}:{sock.getsockname()[1]}")
            time.sleep(0.02)
        try:
            yield f"http://{host}:{sock.getsockname()[1]}/"
        finally:
            server.should_exit = True
            thread.join(10)
