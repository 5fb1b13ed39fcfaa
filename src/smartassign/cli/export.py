"""``smartassign export --format onnx -o model.onnx``: the network as an ONNX graph with dynamic height and width."""

from __future__ import annotations

import argparse
from pathlib import Path

from smartassign.checkpoint import load_weights
from smartassign.export import DEFAULT_OPSET, export_onnx, output_names
from smartassign.restore import bundled_weights


def register(sub: argparse._SubParsersAction) -> None:
    """Add the ``export`` subcommand."""
    p = sub.add_parser("export", help="export the network to ONNX (dynamic height and width)")
    p.add_argument("--weights", type=Path, help="a .safetensors file with its .json beside it; default: bundled small")
    p.add_argument("--format", choices=["onnx"], default="onnx", help="output format")
    p.add_argument("-o", "--output", type=Path, required=True, help="file to write, e.g. model.onnx")
    p.add_argument("--opset", type=int, default=DEFAULT_OPSET, help=f"ONNX opset (>= {DEFAULT_OPSET})")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Load the weights, export, and say what the graph takes and returns."""
    model = load_weights(args.weights if args.weights is not None else bundled_weights("small"))
    export_onnx(model, args.output, args.opset)
    outputs = ", ".join(output_names(model.cfg))
    print(f"wrote {args.output}: image (1, 3, H, W) in [0, 1] -> {outputs}")
    return 0
