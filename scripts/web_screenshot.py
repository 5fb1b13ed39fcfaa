"""Screenshot of the ``smartassign serve`` page after restoring the given images, for docs/images/web.png.

Runs the server on a free localhost port and drives Debian's headless Chromium (scripts/install_browser.sh)
with Playwright, exactly as tests/test_web_browser.py does:

    .venv/bin/python scripts/web_screenshot.py samples/rain.jpg -o docs/images/web.png
"""

from __future__ import annotations

import argparse
from pathlib import Path

from playwright.sync_api import expect, sync_playwright

from smartassign.restore import Restorer
from smartassign.web import CHROMIUM_ARGS
from smartassign.web.app import create_app, serve_in_background


def main() -> None:
    """Restore ``images`` through the page and save a screenshot of it."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("images", nargs="+", type=Path, help="images to upload, in order")
    p.add_argument("-o", "--output", type=Path, default=Path("docs/images/web.png"))
    p.add_argument("--weights", type=Path, default=None, help="weights .safetensors (default: the bundled small model)")
    p.add_argument("--split", type=int, default=50, help="slider position, percent from the left")
    p.add_argument("--width", type=int, default=1100, help="browser window width")
    p.add_argument("--chromium", default="/usr/bin/chromium")
    args = p.parse_args()

    app = create_app(Restorer.from_weights(args.weights, device="cpu"))
    with serve_in_background(app) as url, sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=args.chromium, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": args.width, "height": 800})
        page.goto(url)
        page.set_input_files("#files", [str(image) for image in args.images])
        for image in args.images:
            card = page.locator(".card", has_text=image.name)
            expect(card.locator("a.download")).to_be_visible(timeout=600_000)
            card.locator(".slider").evaluate(
                "(s, v) => { s.value = v; s.dispatchEvent(new Event('input')); }", args.split
            )
        args.output.parent.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(args.output), full_page=True)
        browser.close()
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
