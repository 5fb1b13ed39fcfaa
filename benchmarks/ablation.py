"""The paper's ablation study (Tables 3 and 4) on synthetic rain and snow: mean ± std over seeds.

Trains V1, V2, V3, V4r, V4s, V5, V6 and the single-task baselines widened to V6's parameter count
("V4r=cap", "V4s=cap"), then K1 and K2 from each seed's trained V6 (everything before TKFF frozen), all with
the same config, steps and seeds. Each run's final weights are scored on held-out synthetic rain and snow test
sets (PSNR/SSIM on Y, MATLAB protocol), generated once from the held-out photographs and cached.

Writes ``--results PREFIX`` ``.json`` and ``.md`` (the tables in the paper's format) and a bar chart (``--plot``).

    # CPU study: about 1.6 h of two otherwise idle cores (docs/RESULTS.md)
    .venv/bin/python benchmarks/ablation.py
    # one GPU with 16 cores: ends within about 5.3 minutes whatever happens
    .venv/bin/python benchmarks/ablation.py --device cuda --parallel 8 --workers 1 --steps 500 --crop 64 \
        --batch 8 --time-limit-min 0.75 --deadline-min 5 --set train.amp=false

Every (variant, seed) runs in its own process (``--parallel`` at once) and leaves ``OUT/cells/NAME-sSEED.json``.
A second invocation skips cells already there; a run that was killed resumes from its last checkpoint, and one
that stopped at ``--time-limit-min`` (a short cell, marked † in the table) is resumed towards ``--steps``.
After ``--deadline-min`` no run starts, running ones are stopped, and the table is written with what exists.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import logging
import math
import os
import platform
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import cpu_name  # noqa: E402
from smartassign.config import TASKS, ModelConfig, load_experiment, replace_checked  # noqa: E402
from smartassign.errors import ConfigError  # noqa: E402

log = logging.getLogger("ablation")

DEFAULT_CONFIG = ROOT / "configs" / "ablation_tiny.yaml"
FINAL = "final.safetensors"
# The columns of the study, in the paper's order; "=cap" cells are widened single-task baselines.
DESIGN = ("V1", "V2", "V3", "V4r", "V4s", "V5", "V6")
KNOWLEDGE = ("K1", "K2")
CAPACITY = ("V4r=cap", "V4s=cap")
ALL_CELLS = (*DESIGN, *KNOWLEDGE, *CAPACITY)
TASK_NAMES = {"rain": "synthetic rain", "snow": "synthetic snow"}


# ----------------------------------------------------------------------------- what to run


@dataclass(frozen=True)
class Cell:
    """One training run of the study: a column of the table (``name``) for one ``seed``."""

    name: str  # "V6", "K1", "V4r=cap", ...
    seed: int
    model: tuple[tuple[str, Any], ...] = ()  # ModelConfig overrides (the widened single-task baselines)

    @property
    def variant(self) -> str:
        """The entry of ``smartassign.config.VARIANTS`` this run is built from."""
        return self.name.partition("=")[0]

    @property
    def key(self) -> str:
        """File-name form, e.g. ``V4r-cap-s0``."""
        return f"{self.name.replace('=', '-')}-s{self.seed}"

    @property
    def needs(self) -> str | None:
        """The cell whose trained weights this run starts from (K1/K2 start from V6), or None."""
        return "V6" if self.variant in KNOWLEDGE else None


def parameters(cfg: ModelConfig, trainable: bool = False) -> int:
    """Parameter count of the network ``cfg`` builds."""
    from smartassign.model import SmartAssignNet, count_parameters

    return count_parameters(SmartAssignNet(cfg), trainable)


def match_capacity(single: ModelConfig, target: int, step: float = 0.05) -> dict[str, Any]:
    """Width and MLP ratio that bring ``single`` closest to ``target`` parameters.

    Widths go up from the preset's in steps of 2; at each, the MLP ratio (``step`` grid, never below the preset's)
    is bisected for the count nearest ``target``. The search ends at the first width that overshoots by 5 % even
    at the preset's ratio. Returns the model overrides, e.g. ``{"width": 16, "mlp_ratio": 3.0}``.
    """
    best: tuple[float, dict[str, Any]] | None = None
    width = single.width
    while True:
        try:
            base = replace_checked(single, {"width": width})
        except ConfigError:  # head counts must divide every level's width
            width += 2
            continue
        if parameters(base) > 1.05 * target:
            break

        def count(k: int, base: ModelConfig = base) -> int:
            return parameters(dataclasses.replace(base, mlp_ratio=round(single.mlp_ratio + k * step, 4)))

        lo, hi = 0, 1
        while count(hi) < target and hi < 4096:
            lo, hi = hi, hi * 2
        while hi - lo > 1:  # smallest k with count(k) >= target lies in (lo, hi]
            mid = (lo + hi) // 2
            lo, hi = (mid, hi) if count(mid) < target else (lo, mid)
        for k in {lo, hi}:
            gap = abs(count(k) - target) / target
            if best is None or gap < best[0]:
                best = (gap, {"width": width, "mlp_ratio": round(single.mlp_ratio + k * step, 4)})
        width += 2
    if best is None:
        raise ConfigError(f"no width of the single-task model comes within 5 % of {target} parameters")
    return best[1]


def plan_cells(names: Sequence[str], seeds: Sequence[int], capacity: dict[str, dict[str, Any]]) -> list[Cell]:
    """The study's runs in launch priority: V6 of every seed first (K1/K2 wait for it), then seed by seed."""
    chosen = [n for n in ALL_CELLS if n in names]
    if any(n in KNOWLEDGE for n in chosen) and "V6" not in chosen:
        chosen.insert(0, "V6")
    cells = [Cell("V6", s) for s in seeds if "V6" in chosen]
    for s in seeds:
        cells += [Cell(n, s, tuple(sorted(capacity.get(n, {}).items()))) for n in chosen if n != "V6"]
    return cells


# ----------------------------------------------------------------------------- settings and files


@dataclass(frozen=True)
class Study:
    """Settings of one invocation. ``fingerprint`` holds those the results depend on; the rest only schedule."""

    config: Path
    out: Path
    overrides: tuple[str, ...]  # KEY=VALUE for every run (steps, crop, batch, preset, --set ...)
    device: str
    parallel: int
    threads: int
    workers: int
    time_limit_min: float
    deadline_min: float
    reserve_s: float
    min_train_s: float
    test_n: int
    test_size: int
    test_seed: int
    rerun_short: bool = True

    @property
    def testset(self) -> Path:
        """Held-out test pairs, ``testset/{rain,snow}/{input,target}``."""
        return self.out / f"testset-n{self.test_n}-px{self.test_size}-seed{self.test_seed}"

    def fingerprint(self) -> dict[str, Any]:
        """What the results depend on; a study folder holds cells of one fingerprint only."""
        return {
            "config": self.config.read_text(),
            "overrides": sorted(self.overrides),
            "test": [self.test_n, self.test_size, self.test_seed],
        }

    def cell_path(self, cell: Cell) -> Path:
        """The cached result of ``cell``."""
        return self.out / "cells" / f"{cell.key}.json"

    def run_dir(self, cell: Cell) -> Path:
        """The training folder of ``cell`` (checkpoints, logs, final weights)."""
        return self.out / "runs" / cell.key


def check_fingerprint(study: Study) -> None:
    """Record the study's fingerprint in ``OUT/study.json``, or refuse a folder made with other settings."""
    path = study.out / "study.json"
    mine = study.fingerprint()
    if path.is_file():
        theirs = json.loads(path.read_text())
        changed = sorted(k for k in mine if theirs.get(k) != mine[k])
        if changed:
            raise ConfigError(
                f"{study.out}: its cells were made with other settings ({', '.join(changed)} differ: "
                f"{[theirs.get(k) for k in changed if k != 'config']}); choose a new --out or the same settings"
            )
        return
    study.out.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(mine, indent=1) + "\n")


def read_cell(path: Path) -> dict[str, Any] | None:
    """A cached cell result, or None when absent or unreadable (then it is run again)."""
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None


def ensure_testset(study: Study) -> Path:
    """Generate the held-out test sets once (atomic); later invocations reuse them."""
    from smartassign.data.synthset import write_synthetic_set

    if not (study.testset / "manifest.json").is_file():
        log.info("writing %d rain + %d snow test pairs of %d px to %s", study.test_n, study.test_n,
                 study.test_size, study.testset)  # fmt: skip
        write_synthetic_set(study.testset, study.test_n, study.test_seed, size=study.test_size, split="heldout")
    return study.testset


def warm_photo_cache(threads: int) -> None:
    """Decode every training photo into the on-disk cache once, so that parallel runs do not all decode them."""
    from smartassign.data.corpus import clean_photos, load_downscaled

    with ThreadPoolExecutor(max(threads, 1)) as pool:
        list(pool.map(load_downscaled, clean_photos("train")))


# ----------------------------------------------------------------------------- one run (a child process)


def _cpu_seconds() -> float:
    """User + system CPU time of this process so far."""
    import resource

    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def run_job(spec_path: Path) -> int:
    """Train one cell (resuming its checkpoint if any), save its final weights, score them, write the cell JSON."""
    import torch

    from smartassign.checkpoint import atomic_write_text, list_checkpoints, save_weights
    from smartassign.config import config_to_dict, experiment_to_dict
    from smartassign.data import PairedDataset
    from smartassign.model import count_parameters
    from smartassign.train import evaluate, fit

    spec = json.loads(spec_path.read_text())
    torch.set_num_threads(spec["threads"])
    exp = load_experiment(spec["config"], spec["overrides"], spec["variant"])
    run_dir = Path(exp.train.out_dir)
    found = list_checkpoints(run_dir)
    start_step = found[-1][0] if found else 0
    began, cpu = time.monotonic(), time.process_time()
    result = fit(exp, resume=True)
    train_s, train_cpu_s = time.monotonic() - began, time.process_time() - cpu
    save_weights(result.model, run_dir / FINAL, {"step": result.step, "experiment": experiment_to_dict(exp)})
    began_eval = time.monotonic()
    scores = {}
    for task in exp.model.tasks:
        test = PairedDataset(Path(spec["testset"]) / task, "generic", TASKS.index(task))
        scores[task] = evaluate(result.model, test, task, exp.train.device, tile=None).summary()
    trained = max(result.step - start_step, 0)
    cell = {
        "name": spec["name"],
        "variant": exp.variant,
        "seed": exp.train.seed,
        "steps": exp.train.steps,
        "steps_done": result.step,
        "short": result.step < exp.train.steps,
        "init_from": exp.train.init_from,
        "init_step": spec.get("init_step"),
        "parameters": count_parameters(result.model),
        "trainable": count_parameters(result.model, True),
        "model": config_to_dict(exp.model),
        "device": torch.cuda.get_device_name() if exp.train.device.startswith("cuda") else cpu_name(),
        "steps_this_job": trained,
        "train_s": train_s,
        "train_cpu_s": train_cpu_s,
        "s_per_step": train_s / trained if trained else None,
        "cpu_s_per_step": train_cpu_s / trained if trained else None,
        "eval_s": time.monotonic() - began_eval,
        "job_cpu_s": _cpu_seconds(),  # this process from its start: imports, set-up, training, scoring
        "scores": scores,
        "fingerprint": spec["fingerprint"],
    }
    atomic_write_text(Path(spec["cell"]), json.dumps(cell, indent=1) + "\n")
    return 0


# ----------------------------------------------------------------------------- the scheduler


@dataclass
class Job:
    """A running child process."""

    cell: Cell
    proc: subprocess.Popen[bytes]
    started: float
    log: TextIO


class Scheduler:
    """Runs the cells that need it, ``parallel`` at a time, as child processes, within the global deadline."""

    def __init__(self, study: Study, cells: list[Cell]) -> None:
        self.study, self.cells = study, cells
        self.began = time.monotonic()
        self.deadline = self.began + 60 * study.deadline_min if study.deadline_min else math.inf
        self.reserve = study.reserve_s
        self.failed: dict[str, str] = {}  # cell key -> why it has no fresh result
        self.pending = [c for c in cells if self.needs_run(c)]
        self.running: dict[str, Job] = {}

    def elapsed(self) -> str:
        """Seconds since the study began, for log lines."""
        return f"[{time.monotonic() - self.began:7.1f} s]"

    def parent(self, cell: Cell) -> Cell | None:
        """The V6 cell of the same seed that a K cell starts from."""
        return Cell(cell.needs, cell.seed) if cell.needs else None

    def needs_run(self, cell: Cell) -> bool:
        """No result yet, a short one (with ``rerun_short``), or a K result from another V6 than the current."""
        result = read_cell(self.study.cell_path(cell))
        if result is None or (result["short"] and self.study.rerun_short):
            return True
        parent = self.parent(cell)
        if parent is None:
            return False
        if self.needs_run(parent):
            return True
        parent_result = read_cell(self.study.cell_path(parent))
        return parent_result is None or result.get("init_step") != parent_result["steps_done"]

    def ready(self, cell: Cell) -> bool | None:
        """Whether ``cell`` can start now; None when it never can (its V6 failed or was not run)."""
        parent = self.parent(cell)
        if parent is None:
            return True
        if any(c == parent for c in self.pending) or parent.key in self.running:
            return False
        return True if read_cell(self.study.cell_path(parent)) is not None else None

    def run(self) -> None:
        """Launch, watch and reap child processes until every cell ran, failed or missed the deadline."""
        try:
            while self.pending or self.running:
                self.reap()
                if time.monotonic() >= self.deadline:
                    self.stop_all("deadline reached")
                    for cell in self.pending:
                        self.failed[cell.key] = "not started before the deadline"
                    self.pending = []
                    break
                self.launch_ready()
                if not self.running and self.pending and not any(self.ready(c) for c in self.pending):
                    for cell in self.pending:
                        self.failed[cell.key] = "its V6 run has no result"
                    self.pending = []
                time.sleep(0.2)
        finally:
            self.stop_all("interrupted")

    def launch_ready(self) -> None:
        """Start ready cells while slots are free; drop those the deadline leaves no time for."""
        for cell in list(self.pending):
            if len(self.running) >= max(self.study.parallel, 1):
                return
            state = self.ready(cell)
            if state is None:
                self.pending.remove(cell)
                self.failed[cell.key] = "its V6 run has no result"
                continue
            if not state:
                continue
            left = self.deadline - time.monotonic() - self.reserve
            if left < self.study.min_train_s:
                self.pending.remove(cell)
                self.failed[cell.key] = f"not started: under {self.study.min_train_s:.0f} s to the deadline"
                log.info("%s skip %s: the deadline leaves no time", self.elapsed(), cell.key)
                continue
            self.pending.remove(cell)
            self.start(cell, min(60 * self.study.time_limit_min or math.inf, left))

    def start(self, cell: Cell, limit_s: float) -> None:
        """Write the job spec and start the child process."""
        study = self.study
        run_dir = study.run_dir(cell)
        overrides = [*study.overrides, f"train.seed={cell.seed}", f"train.device={study.device}",
                     f"train.out_dir={run_dir}", f"data.workers={study.workers}",
                     *(f"model.{k}={json.dumps(v)}" for k, v in cell.model)]  # fmt: skip
        if math.isfinite(limit_s):
            overrides.append(f"train.time_limit_min={limit_s / 60:.4f}")
        init_step = None
        parent = self.parent(cell)
        if parent is not None:
            parent_result = read_cell(study.cell_path(parent))
            assert parent_result is not None
            init_step = parent_result["steps_done"]
            overrides.append(f"train.init_from={study.run_dir(parent) / FINAL}")
            # A K run half-trained from an earlier V6 must start again from the current one.
            marker = run_dir / "init_step.json"
            if run_dir.exists() and (read_cell(marker) or {}).get("init_step") != init_step:
                shutil.rmtree(run_dir)
            run_dir.mkdir(parents=True, exist_ok=True)
            marker.write_text(json.dumps({"init_step": init_step}) + "\n")
        spec = {"name": cell.name, "variant": cell.variant, "config": str(study.config), "overrides": overrides,
                "threads": study.threads, "testset": str(study.testset), "cell": str(study.cell_path(cell)),
                "init_step": init_step, "fingerprint": study.fingerprint()}  # fmt: skip
        jobs = study.out / "jobs"
        jobs.mkdir(parents=True, exist_ok=True)
        spec_path = jobs / f"{cell.key}.json"
        spec_path.write_text(json.dumps(spec, indent=1) + "\n")
        shown = f"{limit_s / 60:.2f} min" if math.isfinite(limit_s) else "none"
        log.info("%s start %s (time limit %s)", self.elapsed(), cell.key, shown)
        began = time.monotonic()
        if study.parallel == 0:  # in this process, one after another (debugging, tests)
            try:
                rc = run_job(spec_path)
            except Exception:
                log.exception("%s failed", cell.key)
                rc = 1
            self.finish(cell, rc, time.monotonic() - began)
            return
        logs = study.out / "logs"
        logs.mkdir(parents=True, exist_ok=True)
        out = open(logs / f"{cell.key}.log", "a")  # closed when the job is reaped
        threads = str(study.threads)
        env = {**os.environ, "OMP_NUM_THREADS": threads, "MKL_NUM_THREADS": threads}
        proc = subprocess.Popen(
            [sys.executable, str(Path(__file__).resolve()), "--job", str(spec_path)],
            stdout=out, stderr=subprocess.STDOUT, env=env, cwd=ROOT, start_new_session=True,
        )  # fmt: skip
        self.running[cell.key] = Job(cell, proc, began, out)

    def reap(self) -> None:
        """Collect finished children."""
        for key, job in list(self.running.items()):
            rc = job.proc.poll()
            if rc is not None:
                job.log.close()
                del self.running[key]
                self.finish(job.cell, rc, time.monotonic() - job.started)

    def finish(self, cell: Cell, rc: int, wall: float) -> None:
        """Record a finished run: its failure, or its result and how long start-up and scoring took."""
        result = read_cell(self.study.cell_path(cell))
        if rc != 0 or result is None:
            self.failed[cell.key] = f"exit code {rc}; see {self.study.out / 'logs' / (cell.key + '.log')}"
            log.info("%s FAILED %s (%s)", self.elapsed(), cell.key, self.failed[cell.key])
            return
        # Everything but training (start-up, data, scoring) must fit between a run's time limit and the deadline.
        self.reserve = max(self.reserve, 1.25 * (wall - result["train_s"]))
        scores = ", ".join(f"{t} {s['restored']['psnr_y']:.2f} dB" for t, s in result["scores"].items())
        short = " (stopped by its time limit)" if result["short"] else ""
        log.info("%s done %s: %d steps%s in %.0f s (%.0f s training); %s", self.elapsed(), cell.key,
                 result["steps_done"], short, wall, result["train_s"], scores)  # fmt: skip

    def stop_all(self, why: str) -> None:
        """SIGTERM, then SIGKILL, every running child's process group; their checkpoints stay for a resume."""
        if not self.running:
            return
        for job in self.running.values():
            with contextlib.suppress(ProcessLookupError):
                os.killpg(job.proc.pid, signal.SIGTERM)
        end = time.monotonic() + 5
        for job in self.running.values():
            try:
                job.proc.wait(max(end - time.monotonic(), 0.1))
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(job.proc.pid, signal.SIGKILL)
                job.proc.wait()
            job.log.close()
            self.failed[job.cell.key] = f"stopped: {why}"
            log.info("%s stopped %s: %s", self.elapsed(), job.cell.key, why)
        self.running = {}


# ----------------------------------------------------------------------------- tables and plot


def _stats(values: list[float]) -> dict[str, Any]:
    """Mean, sample standard deviation (0 for one value) and the values themselves."""
    arr = np.asarray(values, dtype=np.float64)
    return {"mean": float(arr.mean()), "std": float(arr.std(ddof=1)) if len(arr) > 1 else 0.0, "n": len(arr),
            "values": [float(v) for v in arr]}  # fmt: skip


def column_cell(column: str, task: str) -> str | None:
    """The cell name shown in ``column`` for ``task``: "V4r/V4s" is V4r on rain and V4s on snow."""
    if "/" in column:
        rain, _, snow = column.partition("/")
        suffix = rain.partition("=")[2] or snow.partition("=")[2]
        return f"{(rain if task == 'rain' else snow).partition('=')[0]}{'=' + suffix if suffix else ''}"
    return column


def summarize(results: dict[str, dict[int, dict[str, Any]]], seeds: Sequence[int]) -> dict[str, Any]:
    """Per cell name and task: PSNR-Y/SSIM-Y statistics over seeds, paired differences to V6, short runs."""
    summary: dict[str, Any] = {}
    for name, by_seed in results.items():
        for task in TASKS:
            rows = {s: r["scores"][task]["restored"] for s, r in by_seed.items() if task in r["scores"]}
            if not rows:
                continue
            entry: dict[str, Any] = {
                "psnr_y": _stats([rows[s]["psnr_y"] for s in sorted(rows)]),
                "ssim_y": _stats([rows[s]["ssim_y"] for s in sorted(rows)]),
                "seeds": sorted(rows),
                "short_seeds": sorted(s for s in rows if by_seed[s]["short"]),
                "steps_done": {str(s): by_seed[s]["steps_done"] for s in sorted(rows)},
            }
            v6 = results.get("V6", {})
            paired = [s for s in sorted(rows) if s in v6 and task in v6[s]["scores"]]
            if name != "V6" and paired:
                entry["delta_vs_v6"] = {
                    m: _stats([rows[s][m] - v6[s]["scores"][task]["restored"][m] for s in paired])
                    for m in ("psnr_y", "ssim_y")
                }
            summary.setdefault(name, {})[task] = entry
    return summary


def _fmt(entry: dict[str, Any] | None, metric: str, want: int, digits: int) -> str:
    """``mean ± std``, with † when a seed stopped at its time limit and (n=k) when seeds are missing."""
    if entry is None:
        return "—"
    stats = entry[metric]
    text = f"{stats['mean']:.{digits}f}" + (f" ± {stats['std']:.{digits}f}" if stats["n"] > 1 else "")
    if entry["short_seeds"]:
        text += " †"
    if stats["n"] < want:
        text += f" (n={stats['n']})"
    return text


def markdown(summary: dict[str, Any], inputs: dict[str, dict[str, float]], meta: dict[str, Any]) -> str:
    """The tables in the paper's format (rows: test sets; columns: variants) plus differences to V6."""
    want = len(meta["seeds"])
    rows = [t for t in TASKS if t in inputs]
    tables = [
        ("Table 3 analogue: key designs", ["V1", "V2", "V3", "V4r/V4s", "V5", "V6", "V4r/V4s=cap"]),
        ("Table 4 analogue: unique and common knowledge (heads trained on a frozen V6)", ["K1", "K2", "V6"]),
    ]
    out = [f"**{meta['label']}**", ""] if meta.get("label") else []
    out += [
        f"Synthetic held-out test sets ({meta['test_n']} pairs per task, {meta['test_size']} px); "
        f"PSNR-Y (dB) / SSIM-Y, mean ± std over seeds {', '.join(map(str, meta['seeds']))}. "
        f"Preset {meta['preset']}, {meta['steps']} steps of batch {meta['batch']} on {meta['crop']} px crops, "
        f"{meta['device']}.",
        "",
    ]
    for title, columns in tables:
        present = [c for c in columns if any(column_cell(c, t) in summary for t in rows)]
        if not present:
            continue
        out += [f"**{title}**", "", "| test set | " + " | ".join(present) + " | input |",
                "|---|" + "---:|" * (len(present) + 1)]  # fmt: skip
        for task in rows:
            cells = []
            for c in present:
                entry = summary.get(column_cell(c, task) or "", {}).get(task)
                cells.append(f"{_fmt(entry, 'psnr_y', want, 2)} / {_fmt(entry, 'ssim_y', want, 4)}")
            base = inputs[task]
            out.append(
                f"| {TASK_NAMES[task]} | " + " | ".join(cells) + f" | {base['psnr_y']:.2f} / {base['ssim_y']:.4f} |"
            )
        out.append("")
    deltas = [c for c in ["V1", "V2", "V3", "V4r/V4s", "V5", "V4r/V4s=cap", "K1", "K2"]
              if any("delta_vs_v6" in summary.get(column_cell(c, t) or "", {}).get(t, {}) for t in rows)]  # fmt: skip
    if deltas:
        out += ["**Difference to V6, paired by seed** (PSNR-Y dB; negative: worse than V6)", "",
                "| test set | " + " | ".join(deltas) + " |", "|---|" + "---:|" * len(deltas)]  # fmt: skip
        for task in rows:
            cells = []
            for c in deltas:
                entry = summary.get(column_cell(c, task) or "", {}).get(task, {})
                d = entry.get("delta_vs_v6", {}).get("psnr_y")
                cells.append("—" if d is None else f"{d['mean']:+.2f}" + (f" ± {d['std']:.2f}" if d["n"] > 1 else ""))
            out.append(f"| {TASK_NAMES[task]} | " + " | ".join(cells) + " |")
        out.append("")
    params = ", ".join(
        f"{k} {v / 1e3:.1f} k" + (f" ({meta['trainable'][k] / 1e3:.1f} k trained)" if meta["trainable"][k] != v else "")
        for k, v in meta["parameters"].items()
    )
    out.append(f"Parameters: {params}.")
    notes = ["— no result", "† at least one seed stopped at its time limit before the full steps (see JSON)",
             "(n=k) only k seeds have a result"]  # fmt: skip
    out.append("Marks: " + "; ".join(notes) + ".")
    if meta["missing"]:
        out.append("Missing runs: " + "; ".join(f"{k} ({why})" for k, why in sorted(meta["missing"].items())) + ".")
    return "\n".join(out) + "\n"


def plot(summary: dict[str, Any], inputs: dict[str, dict[str, float]], meta: dict[str, Any], path: Path) -> None:
    """Bar chart of PSNR-Y and SSIM-Y per variant and test set, error bars = std over seeds, dots = seeds."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    columns = ["V1", "V2", "V3", "V4r/V4s", "V5", "V6", "V4r/V4s=cap", "K1", "K2"]
    rows = [t for t in TASKS if t in inputs]
    fig, axes = plt.subplots(2, len(rows), figsize=(5.2 * len(rows), 6.4), squeeze=False)
    for j, task in enumerate(rows):
        for i, (metric, unit) in enumerate((("psnr_y", "PSNR-Y (dB)"), ("ssim_y", "SSIM-Y"))):
            ax = axes[i][j]
            labels, means, stds, dots = [], [], [], []
            for c in columns:
                entry = summary.get(column_cell(c, task) or "", {}).get(task)
                if entry is None:
                    continue
                labels.append(c.replace("V4r/V4s", "V4r" if task == "rain" else "V4s"))
                means.append(entry[metric]["mean"])
                stds.append(entry[metric]["std"])
                dots.append(entry[metric]["values"])
            if not labels:
                continue
            x = np.arange(len(labels))
            colours = ["#d62728" if lab == "V6" else "#7f7f7f" if lab.startswith("K") else "#1f77b4" for lab in labels]
            ax.bar(x, means, yerr=stds, capsize=4, color=colours, alpha=0.8)
            for k, values in enumerate(dots):
                ax.plot([x[k]] * len(values), values, "k.", ms=4)
            low = min(min(v) for v in dots)
            high = max(max(v) for v in dots)
            pad = max(high - low, 1e-3) * 0.6
            ax.set_ylim(low - pad, high + pad)  # zoomed: the differences are small next to the values
            ax.set_xticks(x, labels, rotation=35, ha="right")
            ax.set_ylabel(unit)
            ax.set_title(f"{TASK_NAMES[task]} (input {inputs[task][metric]:.{2 if i == 0 else 3}f})", fontsize=10)
            ax.grid(axis="y", alpha=0.3)
    fig.suptitle(
        f"{meta.get('label') or 'Ablation'}: {meta['preset']} preset, {meta['steps']} steps, batch {meta['batch']}, "
        f"{meta['crop']} px, seeds {', '.join(map(str, meta['seeds']))} ({meta['device']})\n"
        "bars: mean ± std over seeds, dots: seeds; y axes zoomed",
        fontsize=10,
    )
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def collect(study: Study, cells: Iterable[Cell]) -> dict[str, dict[int, dict[str, Any]]]:
    """Every cached result of ``cells`` as ``{name: {seed: cell JSON}}``."""
    results: dict[str, dict[int, dict[str, Any]]] = {}
    for cell in cells:
        result = read_cell(study.cell_path(cell))
        if result is not None:
            results.setdefault(cell.name, {})[cell.seed] = result
    return results


def report(study: Study, cells: list[Cell], failed: dict[str, str], meta: dict[str, Any], prefix: Path,
           plot_path: Path | None) -> dict[str, Any]:  # fmt: skip
    """Aggregate the cached cells, write ``PREFIX.json``, ``PREFIX.md`` and the plot; return the JSON."""
    from smartassign.checkpoint import atomic_write_text

    results = collect(study, cells)
    summary = summarize(results, meta["seeds"])
    inputs: dict[str, dict[str, float]] = {}
    for by_seed in results.values():
        for result in by_seed.values():
            for task, scores in result["scores"].items():
                inputs.setdefault(task, scores["input"])
    first = {n: next(iter(results[n].values())) for n in ALL_CELLS if n in results}
    meta = {
        **meta,
        "parameters": {n: r["parameters"] for n, r in first.items()},
        "trainable": {n: r["trainable"] for n, r in first.items()},
        "missing": {c.key: failed.get(c.key, "no result") for c in cells if c.seed not in results.get(c.name, {})},
    }
    table = markdown(summary, inputs, meta) if inputs else "No results yet.\n"
    data = {
        "meta": meta,
        "input": inputs,
        "summary": summary,
        "cells": [r for by in results.values() for r in by.values()],
    }
    prefix.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(prefix.with_suffix(".json"), json.dumps(data, indent=1) + "\n")
    atomic_write_text(prefix.with_suffix(".md"), table)
    if plot_path is not None and inputs:
        plot(summary, inputs, meta, plot_path)
    print(table, end="")
    return data


# ----------------------------------------------------------------------------- main


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    """The command line (see the module docstring)."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--config", type=Path, default=DEFAULT_CONFIG, help="YAML shared by every run")
    p.add_argument("--preset", help="model preset (default: the config's)")
    p.add_argument("--steps", type=int, help="training steps of every run (default: the config's)")
    p.add_argument("--crop", type=int, help="training crop side in px (default: the config's)")
    p.add_argument("--batch", type=int, help="batch size (default: the config's)")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--variants", nargs="+", default=list(ALL_CELLS), choices=ALL_CELLS, metavar="NAME",
                   help=f"cells to run, from {' '.join(ALL_CELLS)} (K1/K2 add V6)")  # fmt: skip
    p.add_argument("--device", default="cpu", help="cpu or cuda (every run on the same device)")
    p.add_argument("--parallel", type=int, default=2, help="runs at once, each its own process; 0: one by one inline")
    p.add_argument("--threads", type=int, help="torch threads per run (default: cores / parallel on CPU, 1 on CUDA)")
    p.add_argument("--workers", type=int, help="data loader workers per run (default: 0 on CPU, 1 on CUDA)")
    p.add_argument("--time-limit-min", type=float, default=0.0, help="stop each run after this many minutes")
    p.add_argument("--deadline-min", type=float, default=0.0,
                   help="start no run after this and stop the running ones; then write the table")  # fmt: skip
    p.add_argument(
        "--reserve-s",
        type=float,
        default=30.0,
        help="seconds kept before the deadline for a run's start-up and scoring (grows as measured)",
    )
    p.add_argument("--min-train-s", type=float, default=15.0, help="start no run with less training time left")
    p.add_argument("--keep-short", action="store_true", help="do not resume runs cut short by their time limit")
    p.add_argument("--test-n", type=int, default=48, help="test pairs per task")
    p.add_argument("--test-size", type=int, default=128, help="side of the square test images in px")
    p.add_argument("--test-seed", type=int, default=2023)
    p.add_argument("--set", dest="extra", action="append", default=[], metavar="KEY=VALUE",
                   help="another override for every run, e.g. train.lr=2e-4 (repeatable)")  # fmt: skip
    p.add_argument("--out", type=Path, default=ROOT / "runs" / "ablation", help="runs, cached cells, test sets")
    p.add_argument("--results", type=Path, default=ROOT / "benchmarks" / "results" / "ablation",
                   help="writes PREFIX.json and PREFIX.md")  # fmt: skip
    p.add_argument("--plot", type=Path, default=ROOT / "docs" / "images" / "ablation.png")
    p.add_argument("--no-plot", action="store_true")
    p.add_argument("--label", default="", help="a title for the table and plot, e.g. 'CPU smoke run'")
    p.add_argument("--job", type=Path, help=argparse.SUPPRESS)
    return p.parse_args(argv)


def _photo_counts() -> dict[str, int]:
    """How many clean photographs each split has here (63 and 15 with the `photos` extra and the Debian ones)."""
    from smartassign.data.corpus import clean_photos

    return {split: len(clean_photos(split)) for split in ("train", "heldout")}


def _gpu_name() -> str:
    """The name of the first CUDA device, or why there is none."""
    import torch

    return torch.cuda.get_device_name() if torch.cuda.is_available() else "no CUDA device"


def main(argv: Sequence[str] | None = None) -> int:
    """Plan, run what is missing, and report."""
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if args.job is not None:
        return run_job(args.job)
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    cuda = args.device.startswith("cuda")
    overrides = [
        f"{k}={v}"
        for k, v in (
            ("preset", args.preset),
            ("train.steps", args.steps),
            ("data.crop", args.crop),
            ("train.batch_size", args.batch),
        )
        if v is not None
    ]
    overrides += args.extra
    study = Study(
        config=args.config.resolve(),
        out=args.out.resolve(),
        overrides=tuple(overrides),
        device=args.device,
        parallel=max(args.parallel, 0),
        threads=args.threads or (1 if cuda else max(cores // max(args.parallel, 1), 1)),
        workers=args.workers if args.workers is not None else (1 if cuda else 0),
        time_limit_min=args.time_limit_min,
        deadline_min=args.deadline_min,
        reserve_s=args.reserve_s,
        min_train_s=args.min_train_s,
        test_n=args.test_n,
        test_size=args.test_size,
        test_seed=args.test_seed,
        rerun_short=not args.keep_short,
    )
    if cuda and _gpu_name() == "no CUDA device":
        print("error: --device cuda, but torch sees no GPU (a CPU build of torch?); use --device cpu", file=sys.stderr)
        return 2
    try:
        base = load_experiment(study.config, study.overrides, "V6")
        capacity = {}
        for name in CAPACITY:
            if name in args.variants:
                single = load_experiment(study.config, study.overrides, name.partition("=")[0]).model
                capacity[name] = match_capacity(single, parameters(base.model))
        check_fingerprint(study)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    cells = plan_cells(args.variants, args.seeds, capacity)
    scheduler = Scheduler(study, cells)
    log.info("%d of %d runs to do (%d at once, %d threads each) in %s", len(scheduler.pending), len(cells),
             study.parallel, study.threads, study.out)  # fmt: skip
    if scheduler.pending:
        ensure_testset(study)
        if study.parallel > 1:
            warm_photo_cache(cores)
        scheduler.run()
    meta = {
        "command": " ".join(sys.argv if argv is None else ["benchmarks/ablation.py", *argv]),
        "preset": base.preset,
        "steps": base.train.steps,
        "batch": base.train.batch_size,
        "crop": base.data.crop,
        "seeds": list(args.seeds),
        "device": study.device,
        "machine": {
            "platform": platform.platform(),
            "cpu": cpu_name(),
            "cores": cores,
            "python": platform.python_version(),
        },
        "gpu": _gpu_name() if cuda else None,
        "photos": _photo_counts(),
        "label": args.label,
        "capacity_match": capacity,
        "test_n": study.test_n,
        "test_size": study.test_size,
        "test_seed": study.test_seed,
        "config": str(study.config.relative_to(ROOT)) if study.config.is_relative_to(ROOT) else str(study.config),
        "overrides": list(study.overrides),
        "wall_s_this_invocation": time.monotonic() - scheduler.began,
    }
    report(study, cells, scheduler.failed, meta, args.results, None if args.no_plot else args.plot)
    return 0


if __name__ == "__main__":
    sys.exit(main())
