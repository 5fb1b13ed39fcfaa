"""Training and validation: ``train_step``, ``evaluate`` and ``fit(experiment)``.

``fit`` reads top to bottom like a script: processes (torchrun / DDP), data, model, optimizer, resume, then
one loop that logs, validates, saves samples and checkpoints. Every random draw of the data is a pure function
of ``(seed, epoch, index)`` and the loop's position is part of each checkpoint, so a run resumed after a kill
gives the same weights, bit for bit, as one that never stopped (same machine, same process count).
"""

from __future__ import annotations

import contextlib
import csv
import dataclasses
import io
import logging
import math
import os
import random
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import timedelta
from itertools import islice
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
import yaml
from PIL import Image
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import BatchSampler, DataLoader, Dataset, DistributedSampler, Sampler, Subset
from tqdm import tqdm
from tqdm.contrib.logging import logging_redirect_tqdm

from smartassign.checkpoint import (
    BEST,
    atomic_write,
    atomic_write_text,
    latest_checkpoint,
    list_checkpoints,
    load_checkpoint,
    load_matching,
    read_sidecar,
    save_checkpoint,
    save_weights,
)
from smartassign.config import (
    TASKS,
    DataConfig,
    Experiment,
    LossConfig,
    TrainConfig,
    degradation_mix,
    experiment_to_dict,
    model_config_from_dict,
)
from smartassign.errors import ConfigError, DataError, TrainingError
from smartassign.losses import total_loss
from smartassign.metrics import Scores, mean_scores, score, to_uint8
from smartassign.model import SmartAssignNet, count_parameters
from smartassign.restore import TLC_WINDOW, Restorer, native_bf16_flags, resolve_device

log = logging.getLogger(__name__)
LABEL = {task: i for i, task in enumerate(TASKS)}


# ----------------------------------------------------------------------------- processes


@dataclass(frozen=True)
class Processes:
    """Where this process sits in a (torchrun) job; a single process is rank 0 of 1."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        """Only the main process writes files and prints."""
        return self.rank == 0


def init_processes(device: str) -> tuple[Processes, bool]:
    """Join the torchrun job described by the environment (``env://``); return it and whether we started it.

    NCCL for CUDA, gloo for CPU. Without ``WORLD_SIZE`` > 1 this is a single process and nothing is started.
    """
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return Processes(), False
    started = not dist.is_initialized()
    if started:
        backend = "nccl" if torch.cuda.is_available() and device != "cpu" else "gloo"
        # Rank 0 validates alone while the others wait in the next collective: allow long validations.
        dist.init_process_group(backend=backend, init_method="env://", timeout=timedelta(minutes=60))
    return Processes(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0"))), started


def train_device(name: str, procs: Processes) -> torch.device:
    """The device of this process: ``cuda:LOCAL_RANK`` under a multi-GPU job, else ``resolve_device(name)``."""
    device = resolve_device(name)
    if device.type == "cuda" and procs.world_size > 1:
        device = torch.device("cuda", procs.local_rank)
        torch.cuda.set_device(device)
    return device


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (all devices)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


# ----------------------------------------------------------------------------- data


@dataclass
class TrainData:
    """Datasets by task: ``train`` yields random crops, ``val`` fixed pairs (sample dicts, see smartassign.data)."""

    train: dict[str, Dataset]
    val: dict[str, Dataset] = field(default_factory=dict)


def photo_folder(folder: str) -> list[Path]:
    """The images in ``folder`` (sorted by name), for synthetic training on the user's own clean photos."""
    exts = {".jpg", ".jpeg", ".png", ".webp", ".tif", ".tiff", ".bmp"}
    files = sorted(p for p in Path(folder).glob("*") if p.suffix.lower() in exts and not p.name.startswith("."))
    if not files:
        raise ConfigError(f"{folder}: data.photos holds no .jpg/.png/.webp/.tif/.bmp images")
    return files


def build_data(cfg: DataConfig, tasks: tuple[str, ...], seed: int) -> TrainData:
    """Training and validation datasets of ``tasks`` as ``cfg`` describes them."""
    from smartassign.data import PairedDataset, SyntheticPairs, clean_photos

    if cfg.kind == "synthetic":
        train_photos = photo_folder(cfg.photos) if cfg.photos else clean_photos("train")
        train = {
            t: SyntheticPairs(train_photos, t, crop=cfg.crop, length=cfg.synthetic_pairs, seed=seed, augment=True,
                              degradation=cfg.degradation)
            for t in tasks
        }
        val: dict[str, Dataset] = {}
        if cfg.val_pairs:
            # Held-out photos: validation never scores a scene the network trained on. It scores weather removal,
            # so no clear samples: a clear pair without camera degradation is its own target, PSNR inf.
            held, side = clean_photos("heldout"), cfg.val_crop or cfg.final_crop
            weather = dataclasses.replace(degradation_mix(cfg.degradation), clear_p=0.0)
            val = {
                t: SyntheticPairs(held, t, crop=side, length=cfg.val_pairs, seed=seed, augment=False,
                                  degradation=weather)
                for t in tasks
            }
        return TrainData(train, val)
    roots = {"rain": (cfg.rain, cfg.rain_layout), "snow": (cfg.snow, cfg.snow_layout)}
    val_roots = {"rain": (cfg.val_rain, cfg.val_rain_layout), "snow": (cfg.val_snow, cfg.val_snow_layout)}
    missing = [t for t in tasks if not roots[t][0]]
    if missing:
        raise ConfigError(f"data.kind is 'paired' but no data.{missing[0]} folder is set; the model trains {tasks}")
    train = {
        t: PairedDataset(roots[t][0], roots[t][1], LABEL[t], crop=cfg.crop, augment=True, rot90=True, seed=seed)
        for t in tasks
    }
    val = {}
    for t in tasks:
        root, layout = val_roots[t]
        if root:
            ds = PairedDataset(root, layout, LABEL[t], crop=cfg.val_crop or None)
            val[t] = Subset(ds, range(min(cfg.val_pairs, len(ds)))) if cfg.val_pairs else ds
    return TrainData(train, val)


class KeyedSamples(Dataset):
    """Reads ``dataset[index]`` for a key ``(epoch, index)`` with torch's RNG seeded from ``(seed, epoch, index)``.

    Datasets that draw augmentations from torch's global RNG then give the same sample for the same key in any
    worker, after any resume, with any number of workers; the caller's own RNG stream is left untouched.
    """

    def __init__(self, dataset: Dataset, seed: int) -> None:
        self.dataset, self.seed = dataset, seed

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]

    def __getitem__(self, key: tuple[int, int]) -> dict[str, Any]:
        epoch, index = key
        sample_seed = int(np.random.SeedSequence([self.seed, epoch, index]).generate_state(1, np.uint64)[0])
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(sample_seed)
            return self.dataset[index]


class EpochBatches(Sampler[list[tuple[int, int]]]):
    """Batches of ``(epoch, index)`` keys from a batch sampler reshuffled per epoch; starts mid-epoch on resume."""

    def __init__(self, batches: Sampler[list[int]]) -> None:
        self.batches = batches
        self.epoch, self.skip = 0, 0

    def start(self, epoch: int, skip: int = 0) -> None:
        """Reshuffle for ``epoch`` and leave out its first ``skip`` batches (those trained before a resume)."""
        self.epoch, self.skip = epoch, skip
        for sampler in (self.batches, getattr(self.batches, "sampler", None)):
            if hasattr(sampler, "set_epoch"):
                sampler.set_epoch(epoch)

    def __len__(self) -> int:
        return max(len(self.batches) - self.skip, 0)  # type: ignore[arg-type]

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        for batch in islice(self.batches, self.skip, None):
            yield [(self.epoch, i) for i in batch]


def build_loader(train: dict[str, Dataset], batch_size: int, seed: int, workers: int, procs: Processes) -> DataLoader:
    """A loader of training batches for this rank: balanced rain + snow batches, or one task's shuffled batches."""
    from smartassign.data import BalancedBatchSampler, MixedDataset

    if len(train) == 2:
        dataset: Dataset = MixedDataset(train["rain"], train["snow"])
        batches: Sampler[list[int]] = BalancedBatchSampler(
            dataset.n_rain, dataset.n_snow, batch_size, seed, procs.rank, procs.world_size  # type: ignore[attr-defined]
        )
    else:
        (dataset,) = train.values()
        shard = DistributedSampler(dataset, procs.world_size, procs.rank, shuffle=True, seed=seed, drop_last=True)
        batches = BatchSampler(shard, batch_size, drop_last=True)
    if len(batches) == 0:  # type: ignore[arg-type]
        raise DataError(f"{len(dataset)} training samples make no batch of {batch_size} on {procs.world_size} ranks")  # type: ignore[arg-type]
    return DataLoader(
        KeyedSamples(dataset, seed),
        batch_sampler=EpochBatches(batches),
        num_workers=workers,
        persistent_workers=workers > 0,
        pin_memory=torch.cuda.is_available(),
        # The loader's own generator: creating an iterator never consumes the global RNG.
        generator=torch.Generator().manual_seed(seed),
    )


# ----------------------------------------------------------------------------- one step


@dataclass
class StepResult:
    """What one optimisation step did: loss terms (floats), global gradient norm, whether it was skipped."""

    terms: dict[str, float]
    grad_norm: float
    skipped: bool


def train_step(
    model: torch.nn.Module,
    batch: dict[str, Any],
    optimizer: torch.optim.Optimizer,
    loss_cfg: LossConfig,
    device: torch.device,
    autocast_dtype: torch.dtype | None = None,
    channels_last: bool = False,
    grad_clip: float = 0.0,
) -> StepResult:
    """Forward, loss (eq. 19), backward and Adam step on one batch (``input``/``target`` (B, 3, H, W), ``label`` (B,)).

    A non-finite loss or gradient norm skips the update; under DDP the ranks agree first, so all skip together.
    """
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    inputs = batch["input"].to(device, non_blocking=True).contiguous(memory_format=fmt)
    target = batch["target"].to(device, non_blocking=True)
    labels = batch["label"].to(device, non_blocking=True)
    loss_batch = {"input": inputs, "target": target, "label": labels}
    if "weather" in batch:
        loss_batch["weather"] = batch["weather"].to(device, non_blocking=True)
    autocast = torch.autocast(device.type, dtype=autocast_dtype) if autocast_dtype else contextlib.nullcontext()
    with autocast:
        out = model(inputs)
    terms = total_loss(out, loss_batch, loss_cfg)
    names = list(terms)
    values = torch.stack([terms[k].detach().float() for k in names])
    finite = torch.isfinite(values).all().to(torch.int32)
    if dist.is_initialized():
        dist.all_reduce(finite, op=dist.ReduceOp.MIN)
    optimizer.zero_grad(set_to_none=True)
    floats = dict(zip(names, values.tolist(), strict=True))
    if not finite.item():
        return StepResult(floats, math.nan, skipped=True)
    terms["total"].backward()
    params = [p for group in optimizer.param_groups for p in group["params"] if p.grad is not None]
    norm = torch.nn.utils.get_total_norm([p.grad for p in params])
    # After DDP's all-reduce every rank holds the same gradients, so this decision is the same everywhere.
    if not torch.isfinite(norm):
        optimizer.zero_grad(set_to_none=True)
        return StepResult(floats, math.inf, skipped=True)
    if grad_clip > 0:
        torch.nn.utils.clip_grads_with_norm_(params, grad_clip, norm)
    optimizer.step()
    return StepResult(floats, float(norm), skipped=False)


# ----------------------------------------------------------------------------- evaluation


@dataclass
class Evaluation:
    """Per-image scores of one task's restorations and of the degraded inputs, plus recognition results."""

    task: str
    names: list[str] = field(default_factory=list)
    restored: list[Scores] = field(default_factory=list)
    inputs: list[Scores] = field(default_factory=list)
    labels: list[str] = field(default_factory=list)  # each image's true task
    detected: list[str | None] = field(default_factory=list)  # the recognition head's task, None without one
    automatic: list[Scores] = field(default_factory=list)  # restored with task "auto" (the head recognised), if any
    examples: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = field(default_factory=list)  # uint8 in/out/target

    @property
    def mean(self) -> Scores:
        """Mean scores of the restorations (the dataset's result)."""
        return mean_scores(self.restored)

    @property
    def input_mean(self) -> Scores:
        """Mean scores of the degraded inputs (the baseline)."""
        return mean_scores(self.inputs)

    @property
    def accuracy(self) -> float | None:
        """Share of images whose detected task is their true task; None for a model without a recognition head."""
        if not self.detected or self.detected[0] is None:
            return None
        return sum(d == t for d, t in zip(self.detected, self.labels, strict=True)) / len(self.detected)

    @property
    def automatic_mean(self) -> Scores | None:
        """Mean scores of the restorations a user gets with ``task="auto"``; None without a recognition head."""
        return mean_scores(self.automatic) if self.automatic else None

    def summary(self) -> dict[str, Any]:
        """JSON-able means: restored (true task's head), automatic (recognised head) and input scores, accuracy."""
        auto = self.automatic_mean
        return {
            "task": self.task,
            "images": len(self.names),
            "restored": self.mean.as_dict(),
            "automatic": None if auto is None else auto.as_dict(),
            "input": self.input_mean.as_dict(),
            "accuracy": self.accuracy,
        }

    def per_image(self) -> list[dict[str, Any]]:
        """JSON-able rows, one per image, by name."""
        return [
            {"name": n, "restored": r.as_dict(), "input": i.as_dict(), "label": t, "detected": d}
            for n, r, i, t, d in zip(self.names, self.restored, self.inputs, self.labels, self.detected, strict=True)
        ]


def evaluate(
    model: SmartAssignNet,
    dataset: Dataset,
    task: str | None = None,
    device: str | torch.device = "auto",
    tile: int | None = 512,
    overlap: int = 32,
    keep: int = 0,
    progress: bool = False,
    tlc: int | None = TLC_WINDOW,
) -> Evaluation:
    """Score ``model`` on every pair of ``dataset`` (sample dicts, any image size) with the tiled inference path.

    Each image is restored by the head of ``task`` (default: the task of the dataset's labels), quantized to
    8 bits and scored against its own target (pairs come from the dataset, matched by file name). The first
    ``keep`` images are kept as uint8 (input, restored, target) for sample grids. ``tlc``: the test-time local
    statistics window, as :class:`Restorer` takes it. Leaves ``model`` in eval mode.
    """
    restorer = Restorer(model, device=device, tile=tile, overlap=overlap, tlc=tlc)
    n = len(dataset)  # type: ignore[arg-type]
    if n == 0:
        raise DataError("nothing to evaluate: the dataset is empty")
    result: Evaluation | None = None
    for i in tqdm(range(n), desc="eval", unit="img", disable=not progress, leave=False):
        sample = dataset[i]
        label_task = TASKS[int(sample["label"])]
        result = result or Evaluation(task or label_task)
        degraded = sample["input"].permute(1, 2, 0).numpy()
        # One pass gives every head's picture and the recognised task: the true head's and what a user gets.
        each, detected, _ = restorer.restore_each(degraded)
        restored = each[result.task]
        result.names.append(sample["name"])
        result.restored.append(score(restored, sample["target"]))
        result.inputs.append(score(degraded, sample["target"]))
        result.labels.append(label_task)
        if model.recognizer is not None:
            result.detected.append(detected)
            result.automatic.append(score(each[detected], sample["target"]))
        else:
            result.detected.append(None)
        if len(result.examples) < keep:
            result.examples.append((to_uint8(degraded), to_uint8(restored), to_uint8(sample["target"])))
    assert result is not None
    return result


def sample_grid(examples: list[tuple[np.ndarray, np.ndarray, np.ndarray]], side: int = 256) -> np.ndarray:
    """uint8 grid, one row per example: input | restored | target, each centre-cropped to at most ``side``²."""
    rows = []
    for images in examples:
        h, w = images[0].shape[:2]
        ch, cw = min(h, side), min(w, side)
        y, x = (h - ch) // 2, (w - cw) // 2
        rows.append(np.concatenate([im[y : y + ch, x : x + cw] for im in images], axis=1))
    width = max(r.shape[1] for r in rows)
    rows = [np.pad(r, ((0, 0), (0, width - r.shape[1]), (0, 0))) for r in rows]
    return np.concatenate(rows, axis=0)


def save_png(path: Path, image: np.ndarray) -> None:
    """Write a uint8 (H, W, 3) image as PNG, atomically."""
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="PNG")
    atomic_write(path, lambda tmp: tmp.write_bytes(buffer.getvalue()))


# ----------------------------------------------------------------------------- logs


class CsvLog:
    """Append-only CSV with a header from the first row; on resume, rows after the resumed step are dropped."""

    def __init__(self, path: Path, resume_step: int | None) -> None:
        self.path = path
        self.fields: list[str] | None = None
        if resume_step is not None and path.is_file():
            with open(path, newline="") as fh:
                reader = csv.DictReader(fh)
                self.fields = list(reader.fieldnames or []) or None
                kept = [row for row in reader if int(row["step"]) <= resume_step]
            text = io.StringIO()
            if self.fields:
                writer = csv.DictWriter(text, self.fields)
                writer.writeheader()
                writer.writerows(kept)
            atomic_write_text(path, text.getvalue())
        elif path.exists():
            path.unlink()

    def write(self, row: dict[str, Any]) -> None:
        """Append one row (its keys fix the columns on the first call)."""
        new = self.fields is None
        self.fields = self.fields or list(row)
        with open(self.path, "a", newline="") as fh:
            writer = csv.DictWriter(fh, self.fields, extrasaction="ignore")
            if new:
                writer.writeheader()
            writer.writerow(row)


class RunLog:
    """Rank 0's outputs besides checkpoints: ``train.csv``, ``val.csv``, TensorBoard (if installed), sample grids."""

    def __init__(self, run_dir: Path, resume_step: int | None, tensorboard: bool) -> None:
        self.run_dir = run_dir
        self.train_csv = CsvLog(run_dir / "train.csv", resume_step)
        self.val_csv = CsvLog(run_dir / "val.csv", resume_step)
        self.writer: Any = None
        if tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError:
                log.info("tensorboard is not installed; logging to CSV only (pip install 'smartassign[train]')")
            else:
                # purge_step drops the events a killed run wrote after its last checkpoint.
                purge = None if resume_step is None else resume_step + 1
                self.writer = SummaryWriter(str(run_dir / "tb"), purge_step=purge)

    def train(self, row: dict[str, Any]) -> None:
        """One row of averaged training terms, learning rate and throughput."""
        self.train_csv.write(row)
        if self.writer is not None:
            for k, v in row.items():
                if k not in ("step", "epoch"):
                    self.writer.add_scalar(f"train/{k}", v, row["step"])

    def val(self, step: int, evals: dict[str, Evaluation]) -> None:
        """One row and one console line per validated task."""
        for task, ev in evals.items():
            scores, base = ev.mean, ev.input_mean
            row = {"step": step, "task": task, **scores.as_dict(), "input_psnr_y": base.psnr_y,
                   "input_ssim_y": base.ssim_y, "accuracy": ev.accuracy}  # fmt: skip
            self.val_csv.write(row)
            if self.writer is not None:
                for k, v in scores.as_dict().items():
                    self.writer.add_scalar(f"val_{task}/{k}", v, step)
            recog = "" if ev.accuracy is None else f", recognition {100 * ev.accuracy:.1f}%"
            log.info(
                "step %d val %s: PSNR-Y %.2f dB (input %.2f), SSIM-Y %.4f (input %.4f)%s",
                step, task, scores.psnr_y, base.psnr_y, scores.ssim_y, base.ssim_y, recog,
            )  # fmt: skip

    def samples(self, step: int, evals: dict[str, Evaluation]) -> None:
        """The kept examples of every task as one PNG grid."""
        examples = [e for ev in evals.values() for e in ev.examples]
        if examples:
            save_png(self.run_dir / "samples" / f"step_{step:08d}.png", sample_grid(examples))

    def close(self) -> None:
        """Flush TensorBoard."""
        if self.writer is not None:
            self.writer.close()


# ----------------------------------------------------------------------------- the loop


@dataclass
class FitResult:
    """The trained network (unwrapped, on its training device), where it was saved and how training ended."""

    model: SmartAssignNet
    run_dir: Path
    step: int
    val: dict[str, dict[str, Any]]
    best_psnr_y: float


def build_schedule(optimizer: torch.optim.Optimizer, cfg: TrainConfig) -> Any:
    """The learning-rate schedule of ``cfg``: the paper's halve-on-plateau, or linear warm-up then cosine."""
    if cfg.schedule == "cosine":
        floor = min(cfg.min_lr / cfg.lr, 1.0)

        def factor(step: int) -> float:
            if step < cfg.warmup_steps:
                return (step + 1) / cfg.warmup_steps
            done = min((step - cfg.warmup_steps) / max(cfg.steps - cfg.warmup_steps, 1), 1.0)
            return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * done))

        return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
    return torch.optim.lr_scheduler.ReduceLROnPlateau(
        optimizer,
        mode="min" if cfg.plateau_metric == "train_loss" else "max",
        factor=cfg.plateau_factor,
        patience=cfg.plateau_patience,
        min_lr=cfg.min_lr,
    )


def build_ema(model: SmartAssignNet, decay: float) -> torch.optim.swa_utils.AveragedModel | None:
    """An exponential moving average of ``model``'s weights (and buffers), or None when ``decay`` is 0."""
    if not decay:
        return None
    ema = torch.optim.swa_utils.AveragedModel(
        model, multi_avg_fn=torch.optim.swa_utils.get_ema_multi_avg_fn(decay), use_buffers=True
    )
    return ema.eval()


def _check_resumable(weights: Path, exp: Experiment) -> None:
    """A checkpoint may be resumed only with the same model; other differences are logged."""
    info = read_sidecar(weights)
    saved = model_config_from_dict(info["model"])
    if saved != exp.model:
        diff = [f"{k} {getattr(saved, k)} -> {getattr(exp.model, k)}" for k in vars(saved)
                if getattr(saved, k) != getattr(exp.model, k)]  # fmt: skip
        raise ConfigError(f"{weights}: cannot resume with another model ({'; '.join(diff)}); set a new train.out_dir")
    before, now = info.get("experiment", {}), experiment_to_dict(exp)
    changed = [f"{s}.{k}" for s in ("loss", "data", "train") for k, v in now[s].items()
               if before.get(s, {}).get(k, v) != v]  # fmt: skip
    if changed:
        log.warning("resuming with changed settings: %s", ", ".join(changed))


def _validate(
    model: SmartAssignNet, val: dict[str, Dataset], device: torch.device, tile: int, keep: int, only_kept: bool
) -> dict[str, Evaluation]:
    """Evaluate each task's validation set (or just its first ``keep`` images); back to training mode after."""
    try:
        return {
            t: evaluate(model, Subset(ds, range(min(keep, len(ds)))) if only_kept else ds, t, device,  # type: ignore[arg-type]
                        tile=tile or None, keep=keep)
            for t, ds in val.items()
        }  # fmt: skip
    finally:
        model.train()


def fit(exp: Experiment, resume: bool = False, data: TrainData | None = None) -> FitResult:
    """Train ``exp`` into ``exp.train.out_dir``; with ``resume``, continue from its newest checkpoint.

    Runs as one process or as every rank of a torchrun job (DDP); only rank 0 writes. ``data`` replaces the
    datasets that ``exp.data`` describes (tests use small in-memory ones).
    """
    procs, started = init_processes(exp.train.device)
    try:
        return _fit(exp, resume, data, procs)
    finally:
        if started:
            dist.destroy_process_group()


@dataclass
class Session:
    """Everything the loop works with, built by :func:`setup`: model (and its EMA), optimizer, schedule, data."""

    exp: Experiment
    procs: Processes
    device: torch.device
    run_dir: Path
    raw: SmartAssignNet
    model: torch.nn.Module  # raw, compiled and/or wrapped in DDP
    ema: torch.optim.swa_utils.AveragedModel | None
    optimizer: torch.optim.Optimizer
    scheduler: Any
    state: dict[str, Any]
    val: dict[str, Dataset]
    stream: Iterator[dict[str, Any]]
    describe: str
    autocast_dtype: torch.dtype | None = None
    channels_last: bool = False

    @property
    def scored(self) -> SmartAssignNet:
        """The weights that validation scores and that would ship: the EMA when on."""
        return self.raw if self.ema is None else self.ema.module  # type: ignore[return-value]

    def save(self) -> None:
        """A training checkpoint of the current step."""
        meta = {"experiment": experiment_to_dict(self.exp), "metrics": self.state["val"]}
        save_checkpoint(self.run_dir, self.state["step"], self.raw, self.optimizer, self.scheduler, self.state, meta,
                        self.exp.train.keep_last, self.ema)  # fmt: skip


def _configure_backends(cfg: TrainConfig, cuda: bool) -> None:
    if cfg.deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True, warn_only=True)
    if cuda:
        torch.backends.cudnn.benchmark = not cfg.deterministic  # fixed crop sizes: autotuned kernels pay off
        torch.set_float32_matmul_precision("high")


def _starting_point(exp: Experiment, resume: bool, procs: Processes) -> Path | None:
    """The checkpoint to resume from (None: a fresh run); refuses to overwrite a run or resume another model."""
    run_dir = Path(exp.train.out_dir)
    start = latest_checkpoint(run_dir) if resume else None
    if not resume and list_checkpoints(run_dir):
        raise ConfigError(f"{run_dir}: holds checkpoints already; pass --resume to continue, or set train.out_dir")
    if resume and start is None and procs.is_main:
        log.info("%s: no checkpoint to resume from; starting fresh", run_dir)
    if start is not None:
        _check_resumable(start, exp)
    if exp.model.freeze_before_tkff and not exp.train.init_from and start is None:
        raise ConfigError(f"variant {exp.variant} trains only the heads: set train.init_from to trained V6 weights")
    return start


def loader_stream(loader: DataLoader, state: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """Batches of a DataLoader forever, epoch after epoch, keeping ``state["epoch"]``/``["position"]`` current."""
    batches: EpochBatches = loader.batch_sampler  # type: ignore[assignment]
    while True:
        batches.start(state["epoch"], state["position"])
        for batch in loader:
            state["position"] += 1
            yield batch
        state["epoch"] += 1
        state["position"] = 0


def synthetic_stream(source: Any, state: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """Batches of a :class:`smartassign.data.batches.SyntheticBatches`: batch ``k`` is a function of step ``k``."""
    while True:
        yield source.batch(state["step"])


def _data_stream(
    exp: Experiment, data: TrainData | None, state: dict[str, Any], device: torch.device, procs: Processes
) -> tuple[Iterator[dict[str, Any]], dict[str, Dataset], str]:
    """The training batches (made on the device for synthetic data), the validation sets, and a description."""
    cfg = exp.train
    if data is None and exp.data.kind == "synthetic" and len(exp.model.tasks) == 2:
        from smartassign.data import SyntheticBatches, clean_photos

        photos = photo_folder(exp.data.photos) if exp.data.photos else clean_photos("train")
        crops = [(int(f * cfg.steps), side) for f, side in exp.data.progressive]
        source = SyntheticBatches(photos, exp.data.crop, cfg.batch_size, cfg.seed, device, exp.data.degradation,
                                  rank=procs.rank, world_size=procs.world_size, crops=crops)  # fmt: skip
        val = build_data(dataclasses.replace(exp.data, synthetic_pairs=1), exp.model.tasks, cfg.seed).val
        return synthetic_stream(source, state), val, f"synthetic batches of {cfg.batch_size} made on {device}"
    if exp.data.progressive:
        raise ConfigError("data.progressive needs synthetic training data of both tasks (batches made on the device)")
    data = data or build_data(exp.data, exp.model.tasks, cfg.seed)
    loader = build_loader(data.train, cfg.batch_size, cfg.seed, exp.data.workers, procs)
    per_epoch = len(loader.batch_sampler.batches)  # type: ignore[union-attr]
    return loader_stream(loader, state), data.val, f"{per_epoch} batches of {cfg.batch_size} per epoch"


def setup(exp: Experiment, resume: bool, data: TrainData | None, procs: Processes) -> Session:
    """Device, model (warm start or resume), optimizer, schedule, EMA and data for :func:`fit`."""
    cfg = exp.train
    device = train_device(cfg.device, procs)
    cuda = device.type == "cuda"
    _configure_backends(cfg, cuda)
    start = _starting_point(exp, resume, procs)
    seed_everything(cfg.seed)
    raw = SmartAssignNet(exp.model)
    if cfg.init_from and start is None:
        fresh = load_matching(raw, Path(cfg.init_from))
        if procs.is_main:
            log.info("initialised from %s; %d tensors start fresh: %s", cfg.init_from, len(fresh), ", ".join(fresh))
    if cfg.train_only:
        chosen = {n for n, p in raw.named_parameters() if p.requires_grad and n.startswith(tuple(cfg.train_only))}
        if not chosen:
            raise ConfigError(f"train.train_only {list(cfg.train_only)} names no trainable parameter of this model")
        for name, param in raw.named_parameters():
            param.requires_grad_(name in chosen)
    channels_last = cuda and cfg.channels_last
    raw.to(device, memory_format=torch.channels_last if channels_last else torch.preserve_format).train()
    trainable = [p for p in raw.parameters() if p.requires_grad]
    # AdamW with weight_decay 0 is the paper's Adam.
    optimizer = torch.optim.AdamW(trainable, lr=cfg.lr, betas=cfg.betas, weight_decay=cfg.weight_decay)
    scheduler = build_schedule(optimizer, cfg)
    ema = build_ema(raw, cfg.ema_decay)
    # Everything the loop needs to continue exactly; saved in every checkpoint.
    state: dict[str, Any] = {"step": 0, "epoch": 0, "position": 0, "bad_steps": 0, "skipped": 0,
                             "window_loss": 0.0, "window_steps": 0, "best_psnr_y": -math.inf, "val": {}}  # fmt: skip
    if start is not None:
        state.update(load_checkpoint(start, raw, optimizer, scheduler, ema))
        if procs.is_main:
            log.info("resumed from %s at step %d", start, state["step"])
    stream, val, describe = _data_stream(exp, data, state, device, procs)
    model: torch.nn.Module = torch.compile(raw) if cfg.compile else raw
    if procs.world_size > 1:
        model = DistributedDataParallel(model, device_ids=[device.index] if cuda else None)
    autocast_dtype = torch.bfloat16 if (cfg.amp if cuda else cfg.amp_cpu) else None
    if autocast_dtype and not cuda and not native_bf16_flags() and procs.is_main:
        log.warning("train.amp_cpu: this CPU has no native bf16 (AMX or AVX512-BF16); bf16 autocast will be slower "
                    "than float32 here, set train.amp_cpu=false")  # fmt: skip
    return Session(exp, procs, device, Path(cfg.out_dir), raw, model, ema, optimizer, scheduler, state, val, stream,
                   describe, autocast_dtype, channels_last)  # fmt: skip


def nan_policy(s: Session, result: StepResult) -> None:
    """Count a skipped (non-finite) step; stop after ``max_bad_steps`` in a row."""
    s.state["bad_steps"] += 1
    s.state["skipped"] += 1
    step = s.state["step"]
    if s.procs.is_main:
        terms = {k: f"{v:.4g}" for k, v in result.terms.items()}
        log.warning("step %d skipped: non-finite loss or gradient (%d in a row): %s", step, s.state["bad_steps"], terms)
    if s.state["bad_steps"] >= s.exp.train.max_bad_steps:
        raise TrainingError(
            f"{s.state['bad_steps']} non-finite steps in a row at step {step}; lower train.lr, set "
            f"train.grad_clip, or check the data (last checkpoint: {latest_checkpoint(s.run_dir)})"
        )


def after_good_step(s: Session, result: StepResult, sums: dict[str, float]) -> None:
    """EMA update, per-step schedule, and the running sums the log averages."""
    if s.ema is not None:
        s.ema.update_parameters(s.raw)
    if s.exp.train.schedule == "cosine":
        s.scheduler.step()
    s.state["bad_steps"] = 0
    s.state["window_loss"] += result.terms["total"]
    s.state["window_steps"] += 1
    for k, v in {**result.terms, "grad_norm": result.grad_norm}.items():
        sums[k] = sums.get(k, 0.0) + v


def time_up(s: Session, began: float) -> bool:
    """Whether ``train.time_limit_min`` has passed; rank 0's clock decides, so every rank stops at the same step."""
    if not s.exp.train.time_limit_min:
        return False
    late = torch.tensor(float(time.monotonic() - began > 60 * s.exp.train.time_limit_min), device=s.device)
    if s.procs.world_size > 1:
        dist.broadcast(late, 0)
    return bool(late.item())


def plateau_step(s: Session) -> None:
    """The paper's schedule on the training loss: one plateau check per ``plateau_every`` steps."""
    totals = torch.tensor([s.state["window_loss"], float(s.state["window_steps"])], device=s.device)
    if s.procs.world_size > 1:
        dist.all_reduce(totals)
    if totals[1] > 0:
        s.scheduler.step(float(totals[0] / totals[1]))
    s.state["window_loss"], s.state["window_steps"] = 0.0, 0


def validate_and_keep_best(s: Session, runlog: RunLog | None, do_val: bool, do_samples: bool) -> None:
    """Score the shipped weights (EMA when on) on the validation sets, write samples, keep the best weights."""
    cfg = s.exp.train
    psnr_y = torch.tensor(0.0, device=s.device)
    if runlog is not None:
        evals = _validate(s.scored, s.val, s.device, cfg.val_tile, 4 if do_samples else 0, not do_val)
        step = s.state["step"]
        if do_samples:
            runlog.samples(step, evals)
        if do_val:
            runlog.val(step, evals)
            s.state["val"] = {t: ev.summary() for t, ev in evals.items()}
            psnr_y.fill_(float(np.mean([ev.mean.psnr_y for ev in evals.values()])))
            # a tie goes to the later weights: a train_only run of the recognition branch leaves PSNR unchanged
            if float(psnr_y) >= s.state["best_psnr_y"]:
                s.state["best_psnr_y"] = float(psnr_y)
                meta = {"step": step, "experiment": experiment_to_dict(s.exp), "metrics": s.state["val"]}
                save_weights(s.scored, s.run_dir / BEST, meta)
    if do_val and cfg.schedule == "plateau" and cfg.plateau_metric == "val_psnr":
        if s.procs.world_size > 1:
            dist.broadcast(psnr_y, 0)
        s.scheduler.step(float(psnr_y))


def _fit(exp: Experiment, resume: bool, data: TrainData | None, procs: Processes) -> FitResult:
    cfg = exp.train
    s = setup(exp, resume, data, procs)
    state = s.state
    runlog = None
    if procs.is_main:
        s.run_dir.mkdir(parents=True, exist_ok=True)
        atomic_write_text(s.run_dir / "config.yaml", yaml.safe_dump(experiment_to_dict(exp), sort_keys=False))
        runlog = RunLog(s.run_dir, state["step"] if state["step"] else None, cfg.tensorboard)
        log.info("%s %s: %.3f M parameters (%.3f M trained) on %s x%d, %s -> %s", exp.preset, exp.variant,
                 count_parameters(s.raw) / 1e6, count_parameters(s.raw, True) / 1e6, s.device, procs.world_size,
                 s.describe, s.run_dir)  # fmt: skip

    began = tick = time.monotonic()
    sums: dict[str, float] = {}
    images = good = 0
    bar = tqdm(total=cfg.steps, initial=state["step"], unit="step",
               disable=not (procs.is_main and cfg.progress) or not sys.stderr.isatty())  # fmt: skip
    with logging_redirect_tqdm():
        while state["step"] < cfg.steps:
            # batch -> step
            batch = next(s.stream)
            result = train_step(s.model, batch, s.optimizer, exp.loss, s.device, s.autocast_dtype, s.channels_last,
                                cfg.grad_clip)  # fmt: skip
            state["step"] += 1
            step = state["step"]
            images += len(batch["label"]) * procs.world_size
            bar.update(1)
            if result.skipped:
                nan_policy(s, result)
            else:
                after_good_step(s, result, sums)
                good += 1
            last = step >= cfg.steps or time_up(s, began)

            # log
            if step % cfg.log_every == 0 or last:
                lr = s.optimizer.param_groups[0]["lr"]
                rate = images / (time.monotonic() - tick)
                # Every term is a column from the first row on, NaN for a window of skipped steps only.
                means = {k: sums[k] / good if good else math.nan for k in [*result.terms, "grad_norm"]}
                row = {"step": step, "epoch": state["epoch"], "lr": lr, "images_per_s": rate,
                       "skipped": state["skipped"], **means}  # fmt: skip
                if runlog is not None:
                    runlog.train(row)
                bar.set_postfix(loss=f"{row.get('total', math.nan):.4f}", lr=f"{lr:.2e}", img_s=f"{rate:.1f}")
                sums, tick, images, good = {}, time.monotonic(), 0, 0
            if cfg.schedule == "plateau" and cfg.plateau_metric == "train_loss" and step % cfg.plateau_every == 0:
                plateau_step(s)

            # evaluate
            do_val = bool(s.val) and (step % cfg.val_every == 0 or last)
            do_samples = bool(s.val) and (step % cfg.sample_every == 0 or last)
            if do_val or do_samples:
                validate_and_keep_best(s, runlog, do_val, do_samples)

            # checkpoint
            if procs.is_main and (last or step % cfg.ckpt_every == 0):
                s.save()
            if last:
                break
    bar.close()
    if runlog is not None:
        runlog.close()
    return FitResult(s.raw.eval(), s.run_dir, state["step"], state["val"], state["best_psnr_y"])


__all__ = [
    "CsvLog",
    "EpochBatches",
    "Evaluation",
    "FitResult",
    "KeyedSamples",
    "Processes",
    "RunLog",
    "Session",
    "StepResult",
    "TrainData",
    "build_data",
    "build_loader",
    "evaluate",
    "fit",
    "init_processes",
    "sample_grid",
    "save_png",
    "seed_everything",
    "train_device",
    "train_step",
]
