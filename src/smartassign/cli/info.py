"""``smartassign info``: parameters and GFLOPs of presets or a weights file."""

from __future__ import annotations

import argparse

from smartassign.config import PRESETS, model_config
from smartassign.model import SmartAssignNet, count_flops, count_parameters


def register(sub: argparse._SubParsersAction) -> None:
    """Add the ``info`` subcommand."""
    p = sub.add_parser("info", help="parameter count and GFLOPs per preset")
    p.add_argument("models", nargs="*", default=list(PRESETS), help=f"presets ({', '.join(PRESETS)}); default all")
    p.add_argument("--variant", default="V6", help="ablation variant (V1..V6, K1, K2)")
    p.add_argument("--size", type=int, default=256, help="square input side for the FLOP count")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Print a Markdown table of params and GFLOPs."""
    print(f"| model | variant | params (M) | GFLOPs @ {args.size}x{args.size} |")
    print("|---|---|---:|---:|")
    for name in args.models:
        model = SmartAssignNet(model_config(name, args.variant)).eval()
        params, gflops = count_parameters(model) / 1e6, count_flops(model, args.size) / 1e9
        print(f"| {name} | {args.variant} | {params:.3f} | {gflops:.2f} |")
    return 0
