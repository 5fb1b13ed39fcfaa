"""``smartassign bundle RUN``: score a run's weights on the held-out sets (the engine's and the unseen synthesizer's)
and bundle them only if they are better.

Always appends the run to the training ledger (docs/training_log.json and .md), bundled or not.
"""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path

from smartassign.checkpoint import BEST
from smartassign.config import TASKS
from smartassign.errors import ConfigError


def register(sub: argparse._SubParsersAction) -> None:
    """Add the ``bundle`` subcommand."""
    p = sub.add_parser("bundle", help="gate a training run's weights against the bundled ones; bundle if better")
    p.add_argument("run", type=Path, nargs="?", help="training run folder (its best.safetensors: EMA weights when on)")
    p.add_argument(
        "--score-bundled", action="store_true",
        help="only (re)score the bundled weights: write their gate and CI figures and the model card's tables",
    )
    p.add_argument("--weights", type=Path, help="score this weights file instead of RUN/best.safetensors")
    p.add_argument("--ledger", type=Path, default=Path("docs/training_log.json"), help="the ledger to append to")
    p.add_argument("--card", type=Path, default=Path("docs/MODEL_CARD.md"), help="model card whose scores to rewrite")
    p.add_argument(
        "--frontier", type=Path, default=Path("frontier/small.safetensors"),
        help="where a refused run's weights are kept when they are the best overall yet, for the next session's "
        "--init (default: %(default)s; commit it with the ledger)",
    )
    p.add_argument("--note", default="", help="free text for the ledger (how and where it ran)")
    p.add_argument("--command", default="", help="the training command, for the ledger")
    p.add_argument("--machine", default="", help="where it trained (default: this machine)")
    p.add_argument(
        "--blend", type=float, nargs="+", metavar="ALPHA",
        help="score the weights (1 - ALPHA) * bundled + ALPHA * RUN's instead (weight-space ensembling, WiSE-FT; "
        "written to RUN/blend_ALPHA.safetensors); of several, the best that passes the gate ships",
    )
    p.add_argument("--dry-run", action="store_true", help="score and decide, change nothing")
    p.add_argument("--device", default="cpu")
    p.set_defaults(func=run)


def scores_table(scores: dict) -> str:
    """Markdown table of one weights file's gate scores."""
    rows = [
        "| task | images | PSNR-Y restored / input | gain | gain, head recognised (`--task auto`) "
        "| SSIM-Y restored / input | recognition |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for t in TASKS:
        s = scores[t]
        auto = s.get("automatic")
        auto_gain = "—" if not auto else f"{auto['psnr_y'] - s['input']['psnr_y']:+.2f} dB"
        rows.append(
            f"| {t} | {s['images']} | {s['restored']['psnr_y']:.2f} / {s['input']['psnr_y']:.2f} | "
            f"**{s['gain_psnr_y']:+.2f} dB** | {auto_gain} | {s['restored']['ssim_y']:.4f} / "
            f"{s['input']['ssim_y']:.4f} | {100 * (s['accuracy'] or 0):.1f} % |"
        )
    return "\n".join(rows)


def unseen_table(scores: dict) -> str:
    """Markdown table of one weights file's scores on the unseen set ("" when it was not scored there)."""
    if "unseen" not in scores:
        return ""
    rows = [
        "| task | images | PSNR-Y restored / input (`--task auto`) | gain | recognition |",
        "|---|---:|---:|---:|---:|",
    ]
    for t in TASKS:
        s = scores["unseen"][t]
        rows.append(
            f"| {t} | {s['images']} | {s['automatic_psnr_y']:.2f} / {s['input_psnr_y']:.2f} | "
            f"**{s['gain_psnr_y']:+.2f} dB** | {100 * s['accuracy']:.1f} % |"
        )
    return "\n".join(rows)


def both_tables(scores: dict) -> str:
    """The engine's gate set and, when scored, the unseen set."""
    unseen = unseen_table(scores)
    return scores_table(scores) + (f"\n\nunseen weather (smartassign.unseen):\n{unseen}" if unseen else "")


def rewrite_card(card: Path, scores: dict, ci: dict) -> None:
    """Replace the text between the card's ``<!-- gate-scores -->`` markers with the new tables."""
    from smartassign.checkpoint import atomic_write_text
    from smartassign.gate import CI_SET, GATE_SET, UNSEEN_SET

    if not card.is_file():
        return
    text = card.read_text()
    unseen = unseen_table(scores)
    block = (
        "<!-- gate-scores:begin (written by `smartassign bundle`) -->\n"
        f"Gate set: {GATE_SET.n} pairs per task, {GATE_SET.size}² crops of the held-out photographs, "
        f"`{GATE_SET.mix}` degradations, seed {GATE_SET.seed}:\n\n{scores_table(scores)}\n\n"
        + (
            f"Unseen set (`smartassign.unseen`, the set of `benchmarks/unseen_eval.py`): {UNSEEN_SET.n} images per "
            f"style, {UNSEEN_SET.size}² crops of the held-out photographs, seed {UNSEEN_SET.seed}:\n\n{unseen}\n\n"
            if unseen
            else ""
        )
        +
        f"CI set (`tests/test_quality.py`): {CI_SET.n} pairs per task, {CI_SET.size}² crops, seed {CI_SET.seed}:\n\n"
        f"{scores_table(ci)}\n<!-- gate-scores:end -->"
    )
    pattern = re.compile(r"<!-- gate-scores:begin.*?<!-- gate-scores:end -->", re.S)
    if not pattern.search(text):
        raise ConfigError(f"{card}: no <!-- gate-scores:begin --> ... <!-- gate-scores:end --> markers")
    atomic_write_text(card, pattern.sub(lambda _: block, text))


def run(args: argparse.Namespace) -> int:
    """Score, decide, record, and bundle when better."""
    from smartassign import gate
    from smartassign.checkpoint import atomic_write_text

    if args.score_bundled:
        current = gate.score_weights(gate.BUNDLED, gate.GATE_SET, args.device, unseen=gate.UNSEEN_SET)
        ci = gate.score_weights(gate.BUNDLED, gate.CI_SET, args.device)
        record = {"sha256": gate.sha256(gate.BUNDLED), "gate": current, "ci": ci}
        atomic_write_text(gate.SCORES, json.dumps(record, indent=1) + "\n")
        rewrite_card(args.card, current, ci)
        print(f"{both_tables(current)}\n\nCI set:\n{scores_table(ci)}\nwritten to {gate.SCORES} and {args.card}")
        return 0
    if args.run is None:
        raise ConfigError("give a training run folder to bundle, or --score-bundled")
    candidate = args.weights or args.run / BEST
    if not candidate.is_file():
        raise ConfigError(f"{candidate}: no weights to bundle (train first, or give --weights)")
    record = gate.run_record(args.run)
    current_sha = gate.sha256(gate.BUNDLED)
    saved = json.loads(gate.SCORES.read_text()) if gate.SCORES.is_file() else {}
    kept = saved.get("gate", {})
    if saved.get("sha256") == current_sha and (kept.get("set"), kept.get("scoring")) == (
        gate.GATE_SET.as_dict(),
        gate.SCORING,
    ):
        current = saved["gate"]
    else:
        print(f"scoring the bundled weights {gate.BUNDLED} on the gate and unseen sets ...")
        current = gate.score_weights(gate.BUNDLED, gate.GATE_SET, args.device, unseen=gate.UNSEEN_SET)
    trained = candidate
    for alpha in args.blend or []:  # all checked before any blend is written
        if not 0.0 <= alpha <= 1.0:
            raise ConfigError(f"--blend {alpha}: not in [0, 1]")
    points: list[tuple[Path, float | None]] = (
        [(gate.interpolate(gate.BUNDLED, trained, a, args.run / f"blend_{a:.2f}.safetensors"), a) for a in args.blend]
        if args.blend
        else [(trained, None)]
    )
    tried = []
    for path, alpha in points:
        print(f"scoring {path} on the gate and unseen sets ...")
        got = gate.score_weights(path, gate.GATE_SET, args.device, unseen=gate.UNSEEN_SET)
        passed, reason = gate.better(got, current)
        print(f"{path.name}:\n{both_tables(got)}\n{'BETTER: ' if passed else 'NOT BETTER: '}{reason}\n")
        tried.append({"path": path, "alpha": alpha, "scores": got, "ok": passed, "why": reason})
    # The one to ship (or, when none passes, to record): the best overall among those that pass, else among all.
    pick = max([t for t in tried if t["ok"]] or tried, key=lambda t: gate.overall(t["scores"]))
    candidate, scores, ok, why = pick["path"], pick["scores"], pick["ok"], pick["why"]
    if pick["alpha"] is not None:
        why = f"blend {pick['alpha']:.2f} of the bundled and the run's weights: {why}"
    print(f"bundled ({current_sha[:10]}):\n{both_tables(current)}\n\ncandidate {candidate}:\n{both_tables(scores)}\n")
    print(("BETTER: " if ok else "NOT BETTER: ") + why)
    if args.dry_run:
        return 0 if ok else 1
    entry = {
        "date": gate.now(),
        "machine": args.machine or gate.machine(),
        "run": str(args.run),
        "command": args.command,
        "note": args.note,
        "start_sha256": gate.sha256(init) if record["init_from"] and (init := Path(record["init_from"])).is_file()
        else "",
        "end_sha256": gate.sha256(candidate),
        **(
            {
                "trained_sha256": gate.sha256(trained),
                "blend_alpha": pick["alpha"],
                "blends": [
                    {"alpha": t["alpha"], "sha256": gate.sha256(t["path"]), "scores": t["scores"], "verdict": t["why"]}
                    for t in tried
                ],
            }
            if args.blend
            else {}
        ),
        **{k: record[k] for k in ("steps", "crops_seen", "minutes", "preset", "crop")},
        "scores": scores,
        "bundled": ok,
        "verdict": why,
    }
    meta = {"ledger_entry": len(json.loads(args.ledger.read_text())) + 1 if args.ledger.is_file() else 1}
    if ok:
        entry["frontier"] = gate.clear_frontier(args.frontier, scores)
    else:  # the run's own weights (not a blend) continue the chain if they are the best overall yet
        own = next((t["scores"] for t in tried if t["alpha"] in (None, 1.0)), None)
        entry["frontier"] = gate.keep_frontier(args.frontier, trained, own, current, {**meta, "run": str(args.run)})[1]
    print(entry["frontier"])
    if ok:
        gate.write_bundle(candidate, gate.BUNDLED, meta)
        ci = gate.score_weights(gate.BUNDLED, gate.CI_SET, args.device)
        atomic_write_text(
            gate.SCORES,
            json.dumps({"sha256": gate.sha256(gate.BUNDLED), "gate": scores, "ci": ci}, indent=1) + "\n",
        )
        rewrite_card(args.card, scores, ci)
        print(f"bundled -> {gate.BUNDLED}; scores -> {gate.SCORES}; model card {args.card} rewritten")
    gate.append_ledger(args.ledger, entry)
    print(f"ledger -> {args.ledger} and {args.ledger.with_suffix('.md')}")
    return 0 if ok else 1
