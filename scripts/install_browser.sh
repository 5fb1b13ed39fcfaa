#!/usr/bin/env bash
# Install Debian's Chromium for the end-to-end web test (tests/test_web_browser.py) and the docs screenshot
# (scripts/web_screenshot.py). Idempotent: does nothing when /usr/bin/chromium is already there. Needs root
# (or sudo) and Debian's package mirror; `playwright install` is not used because it downloads its own browsers.
set -euo pipefail

if [ -x /usr/bin/chromium ]; then
    echo "install_browser: $(/usr/bin/chromium --version 2>/dev/null || echo chromium) already installed"
    exit 0
fi

SUDO=""
if [ "$(id -u)" -ne 0 ]; then
    SUDO="sudo"
fi

$SUDO apt-get update -qq
$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium
/usr/bin/chromium --version
