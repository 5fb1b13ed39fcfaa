"""``smartassign serve``: the local web page and HTTP API on uvicorn."""

from __future__ import annotations

import argparse
import ipaddress
import logging
from pathlib import Path

from smartassign import web
from smartassign.cli.restore import add_precision, set_threads
from smartassign.errors import ConfigError
from smartassign.restore import Restorer

log = logging.getLogger(__name__)


def register(sub: argparse._SubParsersAction) -> None:
    """Add the ``serve`` subcommand."""
    p = sub.add_parser("serve", help="local web page and HTTP API (needs the 'serve' extra)")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default: this computer only)")
    p.add_argument("--port", type=int, default=8000, help="port to listen on")
    p.add_argument("--weights", type=Path, default=None, help="weights .safetensors (default: the bundled small model)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N or mps")
    p.add_argument("--max-upload-mb", type=float, default=web.MAX_UPLOAD_MB, help="largest upload in MB (413 above)")
    p.add_argument("--max-pixels", type=int, default=web.MAX_PIXELS, help="largest image in pixels (413 above)")
    p.add_argument("--max-concurrent", type=int, default=web.MAX_CONCURRENT, help="images restored at once")
    p.add_argument("--queue-size", type=int, default=web.QUEUE_SIZE, help="requests that may wait (503 beyond)")
    p.add_argument("--threads", type=int, help="CPU threads per restoration (default: one per core)")
    add_precision(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Load the model once, then serve until interrupted."""
    for name in ("max_upload_mb", "max_pixels", "max_concurrent", "port"):
        if getattr(args, name) <= 0:
            raise ConfigError(f"--{name.replace('_', '-')} must be positive")
    if args.queue_size < 0:
        raise ConfigError("--queue-size must be 0 or more")
    try:
        import uvicorn

        from smartassign.web.app import create_app
    except ImportError as exc:
        raise ConfigError(f"serve needs {exc.name}; install it with: pip install 'smartassign[serve]'") from None
    set_threads(args.threads)
    restorer = Restorer.from_weights(args.weights, device=args.device, dtype=args.precision)
    app = create_app(
        restorer,
        max_upload_mb=args.max_upload_mb,
        max_pixels=args.max_pixels,
        max_concurrent=args.max_concurrent,
        queue_size=args.queue_size,
    )
    if not _is_loopback(args.host):
        log.warning(
            "listening on %s: anyone who can reach this address can use the server (no authentication)", args.host
        )
    log.info("SmartAssign: open http://%s:%d/ (API docs at /docs)", args.host, args.port)
    uvicorn.run(app, host=args.host, port=args.port, log_level="info")
    return 0


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
