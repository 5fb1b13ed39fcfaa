"""The local web page and HTTP API (``smartassign serve``); the app is ``smartassign.web.app.create_app``.

This module holds only the default limits shared by the app and the CLI, so importing it needs no FastAPI.
"""

MAX_UPLOAD_MB = 50.0
MAX_PIXELS = 40_000_000
MAX_CONCURRENT = 1
QUEUE_SIZE = 8

# Headless Chromium flags for driving the page offline (the browser test and scripts/web_screenshot.py):
# without the background-networking ones Chromium keeps dialling out, which a closed network refuses.
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
