"""Turn a training run's weights into the bundled file: float16 safetensors plus its JSON sidecar.

    python scripts/bundle_weights.py runs/synthetic_small/best.safetensors src/smartassign/weights/small.safetensors

Float16 halves the file (the package ships it); loading casts back to the model's float32.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from safetensors.torch import load_file, save_file

from smartassign.checkpoint import atomic_write, atomic_write_text, read_sidecar, sidecar


def main() -> None:
    """Convert ``src`` to float16 at ``dst`` and copy its sidecar, adding ``--meta`` JSON."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("src", type=Path)
    p.add_argument("dst", type=Path)
    p.add_argument("--meta", default="{}", help="JSON object merged into the sidecar (e.g. how it was trained)")
    args = p.parse_args()
    state = {k: v.half() if v.is_floating_point() else v for k, v in load_file(str(args.src)).items()}
    info = {**read_sidecar(args.src), **json.loads(args.meta), "dtype": "float16"}
    atomic_write(args.dst, lambda tmp: save_file(state, str(tmp)))
    atomic_write_text(sidecar(args.dst), json.dumps(info, indent=2) + "\n")
    print(f"wrote {args.dst} ({args.dst.stat().st_size / 1e6:.1f} MB) and {sidecar(args.dst)}")


if __name__ == "__main__":
    main()
