"""End to end: the page in real headless Chromium, against uvicorn on a free localhost port."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

pytest.importorskip("uvicorn", reason="the 'serve' extra (fastapi, uvicorn) is not installed")
sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed (the 'dev' extra)")

from smartassign import build_model  # noqa: E402
from smartassign.restore import Restorer  # noqa: E402
from smartassign.web import CHROMIUM_ARGS  # noqa: E402
from smartassign.web.app import create_app, serve_in_background  # noqa: E402

CHROMIUM = Path("/usr/bin/chromium")

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(
        not CHROMIUM.exists(), reason=f"{CHROMIUM} not found; install it with scripts/install_browser.sh"
    ),
]


@pytest.fixture()
def server() -> Iterator[str]:
    """Serve a random tiny model on a free 127.0.0.1 port; yields the page's URL."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # see tests/test_web.py: on a busy shared runner OpenMP spin-waits are very slow
    torch.manual_seed(0)
    with serve_in_background(create_app(Restorer(build_model("tiny"), device="cpu"))) as url:
        yield url
    torch.set_num_threads(threads)


def test_upload_shows_restored_images(server: str, tmp_path: Path) -> None:
    sizes = {"first.png": (64, 48), "second.jpg": (40, 56)}
    rng = np.random.default_rng(0)
    for name, (w, h) in sizes.items():
        Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(tmp_path / name)
    (tmp_path / "notes.txt").write_text("not an image")
    outside: list[str] = []
    errors: list[str] = []
    with sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            page = browser.new_page()

            def only_localhost(route: sync_api.Route) -> None:
                # The page must work offline: record and block anything not served by us.
                if route.request.url.startswith(server):
                    route.continue_()
                else:
                    outside.append(route.request.url)
                    route.abort()

            page.route("**/*", only_localhost)
            page.on("pageerror", lambda exc: errors.append(str(exc)))
            page.on("console", lambda msg: errors.append(msg.text) if msg.type == "error" else None)
            page.goto(server)
            limits = re.compile(r"^Up to 50 MB and 40 MP per image · \d+\.\d\d M-parameter model on cpu$")
            sync_api.expect(page.locator("#limits")).to_have_text(limits)
            page.set_input_files("#files", [str(tmp_path / name) for name in [*sizes, "notes.txt"]])
            for name, (w, h) in sizes.items():
                card = page.locator(".card", has_text=name)
                after = card.locator("img.after")
                sync_api.expect(after).to_have_attribute("src", re.compile(r"^blob:"), timeout=60_000)
                page.wait_for_function("img => img.complete && img.naturalWidth > 0", arg=after.element_handle())
                assert after.evaluate("img => [img.naturalWidth, img.naturalHeight]") == [w, h]
                status = card.locator(".status").inner_text()
                assert re.fullmatch(r"(rain|snow) \(detected, \d+% confident\) · \d+\.\d\d s", status), status
                link = card.locator("a.download")
                assert link.get_attribute("download") == f"{Path(name).stem}-restored.png"
                assert link.get_attribute("href") == after.get_attribute("src")
            compare = page.locator(".card", has_text="first.png").locator(".compare")
            compare.scroll_into_view_if_needed()
            box = compare.bounding_box()
            page.mouse.click(box["x"] + 0.2 * box["width"], box["y"] + 0.5 * box["height"])
            split = compare.evaluate("c => c.style.getPropertyValue('--split')")
            assert 15 <= int(split.rstrip("%")) <= 25, split
            rejected = page.locator(".card.error", has_text="notes.txt")
            sync_api.expect(rejected.locator(".status")).to_have_text("notes.txt: not a PNG, JPEG or WebP image")
            assert rejected.locator(".result").is_hidden() and rejected.locator("a.download").is_hidden()
        finally:
            browser.close()
    assert outside == []
    # The rejected upload's 415 is logged by Chromium as a failed resource; nothing else may be.
    assert [e for e in errors if "415" not in e] == []
