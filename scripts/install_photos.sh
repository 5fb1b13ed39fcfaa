#!/usr/bin/env bash
# Install the Debian packages whose photographs form the training corpus (smartassign.data.corpus), then
# index them and decode each once into the downscaled cache. Needs root (or sudo) and Debian's package mirror;
# nothing is fetched at training time. Packages missing from this Debian release are skipped with a note.
set -euo pipefail

PACKAGES=(mate-backgrounds plasma-workspace-wallpapers lomiri-wallpapers-16.04 lomiri-wallpapers-20.04 tuxpaint-data)
CLI="${SMARTASSIGN:-.venv/bin/smartassign}"
[ -x "$CLI" ] || CLI=smartassign

SUDO=""
if [ "$(id -u)" -ne 0 ]; then
    SUDO="sudo"
fi

$SUDO apt-get update -qq
available=()
for pkg in "${PACKAGES[@]}"; do
    if apt-cache show "$pkg" >/dev/null 2>&1; then
        available+=("$pkg")
    else
        echo "install_photos: $pkg is not in this Debian release; skipping" >&2
    fi
done
if [ "${#available[@]}" -gt 0 ]; then
    # --no-install-recommends: the photos are all we need, not the desktops they belong to.
    $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${available[@]}"
fi

"$CLI" data photos --cache
