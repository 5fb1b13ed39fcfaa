"""The local web page and HTTP API (``smartassign serve``); the app is ``smartassign.web.app.create_app``.

This module holds only the default limits shared by the app and the CLI, so importing it needs no FastAPI.
"""

MAX_UPLOAD_MB = 50.0
MAX_PIXELS = 40_000_000
MAX_CONCURRENT = 1
QUEUE_SIZE = 8
