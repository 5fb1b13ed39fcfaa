"""Only better weights ship: score a candidate on held-out sets, bundle it if it beats the bundled weights, and
keep the ledger of every run behind the bundled file.

Every set is made in memory from the held-out photographs (never trained on) with a fixed seed, so every machine
scores the same pairs:

* ``GATE_SET`` (the training engine's ``mixed`` degradations) and ``UNSEEN_SET`` (rain and snow of
  :mod:`smartassign.unseen`, a synthesizer the weights never trained on: the set of ``benchmarks/unseen_eval.py``)
  decide whether a candidate ships (:func:`better`). The engine's set alone is not enough: a continuation trained
  on the engine can gain there and lose on weather built another way (ledger run 5);
* ``CI_SET`` is small enough for the test suite: the bundle step records the bundled weights' figures on it,
  and ``tests/test_quality.py`` fails when the bundled weights fall below them by more than ``CI_MARGIN_DB``.
"""

from __future__ import annotations

import hashlib
import json
import platform
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from smartassign.checkpoint import atomic_write, atomic_write_text, load_state, load_weights, read_sidecar, sidecar
from smartassign.config import TASKS
from smartassign.errors import WeightsError

WEIGHTS_DIR = Path(__file__).parent / "weights"
BUNDLED = WEIGHTS_DIR / "small.safetensors"
SCORES = WEIGHTS_DIR / "small.scores.json"
# Version of how score_weights scores; saved scores of another version are rescored, never compared. 2: TLC over
# the weights' training crop, and the restoration with the recognised head ("automatic") beside the true head's.
# 3: the unseen set too.
SCORING = 3
CI_MARGIN_DB = 0.3  # PSNR-Y gain the bundled weights may lose on the CI set before the quality test fails
CI_MARGIN_ACC = 0.125  # recognition accuracy likewise (one image of eight per task)


@dataclass(frozen=True)
class HeldoutSet:
    """Which held-out synthetic pairs to score: ``n`` per task, ``size``² crops, engine ``mix``, ``seed``."""

    n: int
    size: int
    seed: int = 0
    mix: str = "mixed"

    def as_dict(self) -> dict[str, Any]:
        """JSON form."""
        return {"n": self.n, "size": self.size, "seed": self.seed, "mix": self.mix, "split": "heldout"}


GATE_SET = HeldoutSet(n=24, size=256, seed=0)
CI_SET = HeldoutSet(n=8, size=128, seed=1)


@dataclass(frozen=True)
class UnseenSet:
    """Which images of :func:`smartassign.unseen.unseen_set` to score: ``n`` per style, ``size``² crops, ``seed``."""

    n: int = 8
    size: int = 256
    seed: int = 0

    def as_dict(self) -> dict[str, Any]:
        """JSON form."""
        return {"n": self.n, "size": self.size, "seed": self.seed, "split": "heldout", "synthesizer": "unseen"}


UNSEEN_SET = UnseenSet()  # 16 images per task, the default set of benchmarks/unseen_eval.py


def sha256(path: Path) -> str:
    """Hex digest of a file."""
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def score_unseen(weights: Path, which: UnseenSet = UNSEEN_SET, device: str = "cpu") -> dict[str, Any]:
    """``weights`` on the unseen set, restored as a user gets it (``task="auto"``, TLC over the weights' crop): per
    task the mean input and restored PSNR-Y, the gain, and how often the recognised task was the true one."""
    from smartassign.restore import Restorer
    from smartassign.unseen import score_item, unseen_set

    restorer = Restorer.from_weights(Path(weights), device)
    rows: dict[str, list[tuple[float, float, bool]]] = {t: [] for t in TASKS}
    for it in unseen_set(which.n, which.size, which.seed):
        got = score_item(restorer, it["input"], it["target"], it["task"])
        rows[it["task"]].append((got["input"]["psnr_y"], got["auto"]["psnr_y"], got["correct"]))
    out: dict[str, Any] = {"set": which.as_dict()}
    for task, r in rows.items():
        n = len(r)
        inp, res = sum(x[0] for x in r) / n, sum(x[1] for x in r) / n
        out[task] = {
            "images": n,
            "input_psnr_y": inp,
            "automatic_psnr_y": res,
            "gain_psnr_y": res - inp,
            "accuracy": sum(x[2] for x in r) / n,
        }
    out["mean_psnr_y"] = sum(out[t]["automatic_psnr_y"] for t in TASKS) / len(TASKS)
    return out


def score_weights(
    weights: Path, which: HeldoutSet, device: str = "cpu", unseen: UnseenSet | None = None
) -> dict[str, Any]:
    """Scores of ``weights`` on ``which``: per task PSNR/SSIM of restored and input, gain, recognition accuracy;
    with ``unseen``, also :func:`score_unseen` under ``"unseen"``."""
    from smartassign.data import SyntheticPairs, clean_photos
    from smartassign.restore import trained_crop
    from smartassign.train import evaluate

    model = load_weights(Path(weights), device=device)
    tlc = trained_crop(Path(weights))  # as a user restores with these weights
    photos = clean_photos("heldout")
    out: dict[str, Any] = {"set": which.as_dict(), "scoring": SCORING, "tlc": tlc}
    for task in TASKS:
        ds = SyntheticPairs(photos, task, crop=which.size, length=which.n, seed=which.seed, degradation=which.mix)
        ev = evaluate(model, ds, task, device=device, tile=None, tlc=tlc)
        out[task] = {
            **ev.summary(),
            "gain_psnr_y": ev.mean.psnr_y - ev.input_mean.psnr_y,
        }
    out["mean_psnr_y"] = sum(out[t]["restored"]["psnr_y"] for t in TASKS) / len(TASKS)
    out["accuracy"] = sum(out[t]["accuracy"] or 0.0 for t in TASKS) / len(TASKS)
    if unseen is not None:
        out["unseen"] = score_unseen(weights, unseen, device)
    return out


def overall(scores: dict[str, Any]) -> float:
    """The figure the gate asks to rise: the mean PSNR-Y of the engine's set (true heads), averaged with the unseen
    set's (recognised heads) when it was scored."""
    parts = [scores["mean_psnr_y"]] + ([scores["unseen"]["mean_psnr_y"]] if "unseen" in scores else [])
    return sum(parts) / len(parts)


# Scores of the same restorations differ in the last digits with the thread count and the order of float sums
# (ledger run 10: frozen restorations, 23.99 "<" 23.99 dB); a task is worse only below this margin.
NUMERIC_TOLERANCE_DB = 0.005


def better(candidate: dict[str, Any], current: dict[str, Any]) -> tuple[bool, str]:
    """The gate: every task at least as good in PSNR-Y on the engine's set, both with its own head and with the head
    its recognition picks (``automatic``: what a user gets from ``--task auto``), and on the unseen set (recognised
    head) when both were scored there (to within :data:`NUMERIC_TOLERANCE_DB`); and the :func:`overall` mean
    better. Returns the decision and why.
    Recognition accuracy itself is reported, not gated: on 16-24 images per task its standard error is 7-10
    points, and a candidate whose recognition slips only ships if users still get better pictures."""

    def psnr(scores: dict[str, Any], kind: str, task: str) -> float | None:
        if kind == "unseen":
            return scores["unseen"][task]["automatic_psnr_y"] if "unseen" in scores else None
        return scores[task][kind]["psnr_y"] if scores[task].get(kind) else None

    for kind, what in (("restored", ""), ("automatic", " with the recognised head"), ("unseen", " on unseen weather")):
        have = [t for t in TASKS if psnr(candidate, kind, t) is not None and psnr(current, kind, t) is not None]
        worse = [
            t for t in have if psnr(candidate, kind, t) < psnr(current, kind, t) - NUMERIC_TOLERANCE_DB  # type: ignore[operator]
        ]
        if worse:
            diffs = ", ".join(f"{t} {psnr(candidate, kind, t):.2f} < {psnr(current, kind, t):.2f} dB" for t in worse)
            return False, f"worse{what} on {diffs}"
    new, old = overall(candidate), overall(current)
    if new <= old:
        return False, f"mean PSNR-Y {new:.2f} dB is not above {old:.2f} dB"
    return True, f"mean PSNR-Y {old:.2f} -> {new:.2f} dB, no task worse"


def interpolate(start: Path, end: Path, alpha: float, dst: Path) -> Path:
    """Weights ``(1 - alpha) * start + alpha * end`` written (float32, atomically) to ``dst`` with ``end``'s sidecar
    and an ``"interpolated"`` note; returns ``dst``.

    Weight-space ensembling of a fine-tuned model with the weights it started from (WiSE-FT: Wortsman et al.,
    *Robust fine-tuning of zero-shot models*, CVPR 2022): moving part of the way from the bundled weights towards a
    continuation can keep most of what it gained on the engine's weather while keeping more of what the start did
    on weather built another way. ``alpha`` 0 is ``start``, 1 is ``end``; both must hold the same tensors (one
    architecture). Tensors that are not floating point (counters) are taken from ``end``.
    """
    if not 0.0 <= alpha <= 1.0:
        raise WeightsError(f"interpolation weight {alpha} is not in [0, 1]")
    a, b = load_state(Path(start)), load_state(Path(end))
    if a.keys() != b.keys():
        diff = sorted(a.keys() ^ b.keys())
        raise WeightsError(f"{end}: cannot interpolate with {start}: different tensors ({', '.join(diff[:3])} ...)")
    out = {}
    for k, vb in b.items():
        va = a[k]
        if va.shape != vb.shape:
            shapes = f"{k} is {tuple(vb.shape)}, not {tuple(va.shape)}"
            raise WeightsError(f"{end}: cannot interpolate with {start}: {shapes}")
        out[k] = torch.lerp(va.float(), vb.float(), alpha) if vb.is_floating_point() else vb
    info = {**read_sidecar(Path(end)), "interpolated": {"start": sha256(start), "end": sha256(end), "alpha": alpha}}
    info.pop("dtype", None)
    atomic_write(Path(dst), lambda tmp: save_file(out, str(tmp)))
    atomic_write_text(sidecar(Path(dst)), json.dumps(info, indent=2) + "\n")
    return Path(dst)


def write_bundle(src: Path, dst: Path, meta: dict[str, Any]) -> None:
    """``src`` as float16 safetensors at ``dst`` with its sidecar plus ``meta`` (atomic, sidecar last)."""
    state = {k: v.half() if v.is_floating_point() else v for k, v in load_file(str(src)).items()}
    info = {**read_sidecar(src), **meta, "dtype": "float16"}
    atomic_write(dst, lambda tmp: save_file(state, str(tmp)))
    atomic_write_text(sidecar(dst), json.dumps(info, indent=2) + "\n")


def frontier_overall(frontier: Path) -> float | None:
    """The :func:`overall` figure recorded with the frontier weights at ``frontier`` (None: no frontier, or one
    scored by another :data:`SCORING` version, which any scored run may replace)."""
    if not Path(frontier).is_file():
        return None
    info = read_sidecar(Path(frontier)).get("frontier", {})
    return info.get("overall_psnr_y") if info.get("scoring") == SCORING else None


def keep_frontier(
    frontier: Path, weights: Path, scores: dict[str, Any] | None, bundled: dict[str, Any], meta: dict[str, Any]
) -> tuple[bool, str]:
    """Keep a refused run's weights as the training chain's head when they are the best overall yet.

    Run folders live on the machine that trained them and are gone on the next one; the frontier is a float16
    copy at ``frontier`` (committed with the ledger) that the next session continues with ``--init``, so compute
    spent on a run the gate refused is not lost. ``weights`` become the frontier only if they were scored
    (``scores``; a blend's scores do not describe them), their :func:`overall` is above the bundled weights'
    (``bundled``) and above the frontier's. Returns whether they were kept and why.
    """
    if scores is None:
        return False, "the run's own weights were not scored (only blends): frontier unchanged"
    new, floor = overall(scores), overall(bundled)
    if new <= floor:
        return False, f"overall {new:.2f} dB is not above the bundled weights' {floor:.2f} dB: frontier unchanged"
    old = frontier_overall(frontier)
    if old is not None and new <= old:
        return False, f"overall {new:.2f} dB is not above the frontier's {old:.2f} dB: frontier unchanged"
    Path(frontier).parent.mkdir(parents=True, exist_ok=True)
    write_bundle(weights, Path(frontier), {"frontier": {**meta, "overall_psnr_y": new, "scoring": SCORING}})
    return True, f"kept as the frontier {frontier} (overall {new:.2f} dB, bundled {floor:.2f} dB)"


def clear_frontier(frontier: Path, bundled: dict[str, Any]) -> str:
    """After a bundle: remove the frontier unless its :func:`overall` is still above the new bundled weights'."""
    old = frontier_overall(frontier)
    if not Path(frontier).is_file() or (old is not None and old > overall(bundled)):
        return "frontier unchanged"
    Path(frontier).unlink()
    sidecar(Path(frontier)).unlink(missing_ok=True)
    return f"frontier {frontier} removed: the bundled weights are the chain's head"


def machine() -> str:
    """A short description of this machine, for the ledger."""
    if torch.cuda.is_available():
        return f"{torch.cuda.get_device_name(0)} (torch {torch.__version__})"
    return f"{platform.machine()} CPU, {torch.get_num_threads()} threads (torch {torch.__version__})"


def run_record(run: Path) -> dict[str, Any]:
    """What a training run folder says about itself: config, steps, crops seen, minutes (from its CSV log)."""
    import csv

    cfg_path = run / "config.yaml"
    if not cfg_path.is_file():
        raise WeightsError(f"{run}: not a training run folder (no config.yaml)")
    import yaml

    cfg = yaml.safe_load(cfg_path.read_text())
    rows = list(csv.DictReader((run / "train.csv").open())) if (run / "train.csv").is_file() else []
    steps = int(rows[-1]["step"]) if rows else 0
    minutes = 0.0
    prev = 0
    for r in rows:  # images/s of each logging window and its step count give the window's duration
        rate = float(r["images_per_s"])
        n = int(r["step"]) - prev
        prev = int(r["step"])
        if rate > 0:
            minutes += n * cfg["train"]["batch_size"] / rate / 60
    return {
        "steps": steps,
        "crops_seen": steps * int(cfg["train"]["batch_size"]),
        "minutes": round(minutes, 1),
        "preset": cfg["preset"],
        "crop": cfg["data"]["crop"],
        "init_from": cfg["train"].get("init_from", ""),
        "config": cfg,
    }


def ledger_markdown(entries: list[dict[str, Any]]) -> str:
    """The ledger as the Markdown page docs/training_log.md."""
    lines = [
        "# Training ledger",
        "",
        "Every run that led to the bundled weights, oldest first, written by `smartassign bundle` from",
        "[training_log.json](training_log.json) (do not edit by hand). Scores: the gate's held-out synthetic set",
        f"({GATE_SET.n} pairs per task, {GATE_SET.size}² crops of the held-out photographs, `{GATE_SET.mix}` "
        f"degradations, seed {GATE_SET.seed}); PSNR-Y in dB, gain over the input.",
        "",
        "| # | date | machine | minutes | steps | crops seen | start → end weights (sha256) | rain gain | "
        "snow gain | recognition | bundled |",
        "|---:|---|---|---:|---:|---:|---|---:|---:|---:|---|",
    ]
    for i, e in enumerate(entries, 1):
        s = e.get("scores") or {}

        def gain(t: str, s: dict[str, Any] = s) -> str:
            return f"{s[t]['gain_psnr_y']:+.2f}" if t in s else "—"

        acc = f"{100 * s['accuracy']:.1f} %" if "accuracy" in s else "—"
        start = (e.get("start_sha256") or "scratch")[:10]
        lines.append(
            f"| {i} | {e['date']} | {e['machine']} | {e['minutes']} | {e['steps']} | {e['crops_seen']} | "
            f"{start} → {(e['end_sha256'] or 'not kept')[:10]} | {gain('rain')} | {gain('snow')} | {acc} | "
            f"{'yes' if e['bundled'] else 'no: ' + e.get('verdict', '')} |"
        )
    lines += ["", "Commands, configs and notes per run are in the JSON.", ""]
    return "\n".join(lines)


def append_ledger(ledger: Path, entry: dict[str, Any]) -> list[dict[str, Any]]:
    """Add ``entry`` to the JSON ledger and rewrite its Markdown page beside it; returns all entries."""
    entries = json.loads(ledger.read_text()) if ledger.is_file() else []
    entries.append(entry)
    atomic_write_text(ledger, json.dumps(entries, indent=1) + "\n")
    atomic_write_text(ledger.with_suffix(".md"), ledger_markdown(entries))
    return entries


def now() -> str:
    """UTC date for the ledger."""
    return datetime.now(timezone.utc).strftime("%Y-%m-%d")


__all__ = [
    "BUNDLED",
    "CI_MARGIN_ACC",
    "CI_MARGIN_DB",
    "CI_SET",
    "GATE_SET",
    "SCORES",
    "UNSEEN_SET",
    "HeldoutSet",
    "UnseenSet",
    "append_ledger",
    "better",
    "clear_frontier",
    "frontier_overall",
    "interpolate",
    "keep_frontier",
    "ledger_markdown",
    "machine",
    "overall",
    "run_record",
    "score_unseen",
    "score_weights",
    "sha256",
    "write_bundle",
]
