"""``smartassign train --config FILE.yaml [--variant V] [--resume] [KEY=VALUE ...]``: train, or resume, a run.

Several GPUs or nodes: ``torchrun --nproc_per_node N $(which smartassign) train --config ...``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys

import yaml

from smartassign.config import VARIANTS, experiment_to_dict, load_experiment
from smartassign.train import fit


def register(sub: argparse._SubParsersAction) -> None:
    """Add the ``train`` subcommand."""
    p = sub.add_parser("train", help="train from a YAML config (see configs/); torchrun for several GPUs")
    p.add_argument("--config", required=True, help="YAML experiment, e.g. configs/synthetic_tiny.yaml")
    p.add_argument("--variant", choices=list(VARIANTS), help="ablation variant (overrides the file's)")
    p.add_argument("--resume", action="store_true", help="continue from the newest checkpoint in train.out_dir")
    p.add_argument(
        "--init", metavar="WEIGHTS",
        help="warm start from this weights file (tensors that fit are copied); same as train.init_from=WEIGHTS. "
        "configs/continue_small.yaml starts from the bundled weights",
    )
    p.add_argument("--print-config", action="store_true", help="print the resolved configuration and exit")
    p.add_argument(
        "overrides", nargs="*", metavar="KEY=VALUE", help="e.g. train.lr=2e-4 data.crop=128 train.out_dir=runs/x"
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Resolve the config, train, and (on rank 0) print where the results are."""
    overrides = [*args.overrides, f"train.init_from={args.init}"] if args.init else args.overrides
    exp = load_experiment(args.config, overrides, args.variant)
    if args.print_config:
        print(yaml.safe_dump(experiment_to_dict(exp), sort_keys=False), end="")
        return 0
    if not sys.stderr.isatty():  # no progress bar into a log file or pipe, as for every other command
        exp = dataclasses.replace(exp, train=dataclasses.replace(exp.train, progress=False))
    result = fit(exp, resume=args.resume)
    if int(os.environ.get("RANK", "0")) == 0:
        print(f"trained {result.step} steps; checkpoints, logs and samples in {result.run_dir}")
        if result.val:
            print(json.dumps(result.val, indent=2))
    return 0
