"""The training loop: outputs, bit-identical resume (also after kill -9), NaN handling, every variant, configs, CLI."""

from __future__ import annotations

import csv
import dataclasses
import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from torch.utils.data import DataLoader

from smartassign.checkpoint import (
    checkpoint_path,
    latest_checkpoint,
    list_checkpoints,
    load_state,
    load_weights,
    read_sidecar,
    save_weights,
)
from smartassign.cli import main
from smartassign.config import VARIANTS, DataConfig, experiment_to_dict, load_experiment
from smartassign.data.mixed import PAPER_PAIRINGS
from smartassign.errors import ConfigError, TrainingError
from smartassign.metrics import score
from smartassign.model import SmartAssignNet
from smartassign.train import EpochBatches, KeyedSamples, evaluate, fit, train_step
from train_helpers import StripePairs, stripe_data, tiny_experiment

ROOT = Path(__file__).resolve().parents[1]
CLI = "import sys; from smartassign.cli import main; sys.exit(main(sys.argv[1:]))"


pytestmark = pytest.mark.usefixtures("one_thread")


def _same_weights(a: Path, b: Path) -> bool:
    sa, sb = load_state(a), load_state(b)
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def _rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


# ----------------------------------------------------------------------------- outputs


def test_fit_writes_checkpoints_logs_samples_best_and_config(tmp_path: Path) -> None:
    exp = tiny_experiment(tmp_path / "run", steps=4, keep_last=1, tensorboard=True)
    result = fit(exp, data=stripe_data())
    run = tmp_path / "run"
    assert result.step == 4 and [s for s, _ in list_checkpoints(run)] == [4]
    side = read_sidecar(checkpoint_path(run, 4))
    assert side["step"] == 4 and side["experiment"] == json.loads(json.dumps(experiment_to_dict(exp)))
    assert set(side["metrics"]) == {"rain", "snow"}
    assert [int(r["step"]) for r in _rows(run / "train.csv")] == [1, 2, 3, 4]
    columns = set(_rows(run / "train.csv")[0])
    assert {"total", "char", "grad", "sparsity", "recog", "contra", "lr", "images_per_s", "grad_norm"} <= columns
    val = _rows(run / "val.csv")
    assert [(int(r["step"]), r["task"]) for r in val] == [(2, "rain"), (2, "snow"), (4, "rain"), (4, "snow")]
    assert sorted(p.name for p in (run / "samples").iterdir()) == ["step_00000002.png", "step_00000004.png"]
    assert any((run / "tb").iterdir())
    best = load_weights(run / "best.safetensors")
    assert read_sidecar(run / "best.safetensors")["step"] in (2, 4) and best.cfg == exp.model
    assert load_experiment(run / "config.yaml") == exp  # the saved config reproduces the run
    assert not result.model.training


def test_a_run_folder_with_checkpoints_needs_resume(tmp_path: Path) -> None:
    exp = tiny_experiment(tmp_path, steps=2, val_every=100, sample_every=100)
    fit(exp, data=stripe_data(val=0))
    with pytest.raises(ConfigError, match="--resume"):
        fit(exp, data=stripe_data(val=0))
    wider = tiny_experiment(tmp_path, steps=2)
    wider = type(wider)(**{**wider.__dict__, "model": type(wider.model)(**{**wider.model.__dict__, "width": 12})})
    with pytest.raises(ConfigError, match="width 8 -> 12"):
        fit(wider, resume=True, data=stripe_data(val=0))


# ----------------------------------------------------------------------------- resume


@pytest.fixture(scope="module")
def synthetic_yaml(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A config on the real synthetic data (bundled photos), small enough for a test."""
    path = tmp_path_factory.mktemp("cfg") / "resume.yaml"
    cfg = {
        "preset": "tiny",
        "model": {"width": 8},
        "data": {"crop": 32, "workers": 0, "synthetic_pairs": 64, "val_pairs": 1, "val_crop": 32},
        "train": {"device": "cpu", "steps": 8, "batch_size": 2, "lr": 1e-3, "plateau_every": 2,
                  "plateau_patience": 0, "log_every": 1, "val_every": 4, "sample_every": 100, "ckpt_every": 2,
                  "keep_last": 5, "tensorboard": False, "progress": False},
    }  # fmt: skip
    path.write_text(yaml.safe_dump(cfg))
    return path


@pytest.fixture(scope="module")
def straight(synthetic_yaml: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Final weights of an uninterrupted 8-step run."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    out = tmp_path_factory.mktemp("straight")
    fit(load_experiment(synthetic_yaml, [f"train.out_dir={out}"]))
    torch.set_num_threads(threads)
    return checkpoint_path(out, 8)


def test_stop_then_resume_in_a_fresh_run_is_bit_identical(synthetic_yaml: Path, straight: Path, tmp_path: Path) -> None:
    out = [f"train.out_dir={tmp_path}"]
    fit(load_experiment(synthetic_yaml, [*out, "train.steps=3"]))  # stops mid-window, mid-epoch
    assert not _same_weights(checkpoint_path(tmp_path, 3), straight)
    fit(load_experiment(synthetic_yaml, out), resume=True)
    assert _same_weights(checkpoint_path(tmp_path, 8), straight)
    state, reference = (json.loads(p.with_suffix(".state.json").read_text()) for p in (checkpoint_path(tmp_path, 8),
                                                                                        straight))  # fmt: skip
    assert state["scheduler"] == reference["scheduler"] and state["optimizer"] == reference["optimizer"]
    # The log holds each step once: rows a stopped run wrote after its checkpoint are dropped on resume.
    assert [int(r["step"]) for r in _rows(tmp_path / "train.csv")] == list(range(1, 9))


def test_resume_after_kill_9_is_bit_identical(
    synthetic_yaml: Path, straight: Path, tmp_path: Path, kill_when: Callable[..., None]
) -> None:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-c", CLI, "train", "--config", str(synthetic_yaml), f"train.out_dir={tmp_path}",
           "train.steps=1000"]  # fmt: skip
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    kill_when(proc, lambda: bool(list_checkpoints(tmp_path)), 120, "no checkpoint")
    killed_at, last = list_checkpoints(tmp_path)[-1]
    assert 2 <= killed_at < 8
    assert _same_weights(last, straight.parent / last.name), "the killed run had diverged before its kill"
    fit(load_experiment(synthetic_yaml, [f"train.out_dir={tmp_path}"]), resume=True)
    assert _same_weights(checkpoint_path(tmp_path, 8), straight)


def test_sample_keys_fix_the_data_whatever_the_order_workers_or_skip() -> None:
    from smartassign.data import BalancedBatchSampler, MixedDataset

    mixed = MixedDataset(StripePairs(6, 16, 0), StripePairs(6, 16, 1))
    keyed = KeyedSamples(mixed, seed=3)
    torch.manual_seed(0)
    first = keyed[(2, 5)]["input"]
    torch.rand(10)  # the caller's RNG stream is neither read nor advanced by a keyed read
    before = torch.get_rng_state()
    assert torch.equal(keyed[(2, 5)]["input"], first)
    assert torch.equal(torch.get_rng_state(), before)
    flips = {bool(torch.equal(keyed[(e, 5)]["input"], first)) for e in range(8)}
    assert flips == {True, False}  # the augmentation does change between epochs

    def epoch(workers: int, skip: int) -> list[torch.Tensor]:
        batches = EpochBatches(BalancedBatchSampler(6, 6, 2, seed=3))
        batches.start(1, skip)
        loader = DataLoader(keyed, batch_sampler=batches, num_workers=workers)
        return [b["input"] for b in loader]

    full = epoch(0, 0)
    assert len(full) == 6
    for got, want in zip(epoch(2, 2), full[2:], strict=True):
        assert torch.equal(got, want)


# ----------------------------------------------------------------------------- non-finite losses


def test_train_step_skips_a_nan_batch_without_touching_the_weights() -> None:
    torch.manual_seed(0)
    exp = tiny_experiment(Path("unused"))
    model = SmartAssignNet(exp.model)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    data = stripe_data(n=2)
    good = {k: torch.stack([data.train[t][0][k] for t in ("rain", "snow")]) for k in ("input", "target", "label")}
    bad = {**good, "input": good["input"].clone()}
    bad["input"][0, 0, 0, 0] = float("nan")
    before = [p.detach().clone() for p in model.parameters()]
    result = train_step(model, bad, opt, exp.loss, torch.device("cpu"))
    assert result.skipped and not np.isfinite(result.terms["total"])
    assert all(torch.equal(a, p) for a, p in zip(before, model.parameters(), strict=True))
    assert all(p.grad is None for p in model.parameters()) and not opt.state
    result = train_step(model, good, opt, exp.loss, torch.device("cpu"), grad_clip=0.5)
    assert not result.skipped and result.grad_norm > 0 and np.isfinite(result.terms["total"])
    assert any(not torch.equal(a, p) for a, p in zip(before, model.parameters(), strict=True))


def test_training_stops_after_k_non_finite_steps_in_a_row(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    exp = tiny_experiment(tmp_path, steps=10, max_bad_steps=3)
    with pytest.raises(TrainingError, match="3 non-finite steps in a row at step 3"):
        fit(exp, data=stripe_data(nan=True))
    skipped = [r.getMessage() for r in caplog.records if "skipped" in r.getMessage()]
    assert len(skipped) == 3 and "step 1 skipped" in skipped[0]
    assert _rows(tmp_path / "train.csv")[-1]["skipped"] == "2"  # logged steps 1 and 2; step 3 raised


# ----------------------------------------------------------------------------- variants


@pytest.mark.parametrize("variant", [v for v in VARIANTS if not v.startswith("K")])
def test_every_variant_trains(variant: str, tmp_path: Path) -> None:
    exp = tiny_experiment(tmp_path, variant, steps=2, val_every=2, sample_every=100)
    data = stripe_data(n=4)
    tasks = exp.model.tasks
    data.train = {t: data.train[t] for t in tasks}
    data.val = {t: data.val[t] for t in tasks}
    result = fit(exp, data=data)
    assert result.step == 2 and set(result.val) == set(tasks)
    assert (result.val[tasks[0]]["accuracy"] is None) == (not exp.model.uses_recognition)


@pytest.mark.parametrize("variant", ["K1", "K2"])
def test_knowledge_variants_start_from_v6_and_train_only_the_heads(variant: str, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="init_from"):
        fit(tiny_experiment(tmp_path / "k", variant), data=stripe_data())
    torch.manual_seed(0)
    v6 = SmartAssignNet(tiny_experiment(tmp_path).model)
    save_weights(v6, tmp_path / "v6.safetensors")
    exp = tiny_experiment(tmp_path / "k", variant, steps=2, init_from=str(tmp_path / "v6.safetensors"))
    model = fit(exp, data=stripe_data(val=0)).model
    start = v6.state_dict()
    frozen = [n for n, p in model.named_parameters() if not p.requires_grad]
    assert {n.split(".")[0] for n in frozen} == {"embed", "sam", "encoder", "gkfm"}
    for name in frozen:
        assert torch.equal(model.state_dict()[name], start[name]), name  # carried over from V6, never updated
    assert not torch.equal(model.state_dict()["recognizer.fc.weight"], start["recognizer.fc.weight"])


def test_train_only_updates_the_named_parameters_and_nothing_else(tmp_path: Path) -> None:
    """``train.train_only``: a new recognition branch taught on a frozen trained network (issue 17)."""
    torch.manual_seed(0)
    exp = tiny_experiment(tmp_path / "a", steps=4, train_only=("recognizer.pixels",))
    exp = dataclasses.replace(exp, model=dataclasses.replace(exp.model, recog_pixels=True))
    save_weights(SmartAssignNet(exp.model), tmp_path / "w.safetensors")
    exp = dataclasses.replace(exp, train=dataclasses.replace(exp.train, init_from=str(tmp_path / "w.safetensors")))
    model = fit(exp, data=stripe_data()).model
    start = load_state(tmp_path / "w.safetensors")
    moved = {n for n, v in model.state_dict().items() if not torch.equal(v, start[n])}
    assert moved and all(n.startswith("recognizer.pixels") for n in moved), moved
    assert {n for n, p in model.named_parameters() if p.requires_grad} == {
        n for n, _ in model.named_parameters() if n.startswith("recognizer.pixels")
    }
    # the restorations are frozen, so validation PSNR ties: the best weights are the last validated ones
    assert json.loads((tmp_path / "a" / "best.json").read_text())["step"] == 4
    with pytest.raises(ConfigError, match="train_only"):
        fit(tiny_experiment(tmp_path / "b", train_only=("decoder.nothing",)), data=stripe_data(val=0))


# ----------------------------------------------------------------------------- evaluation


def test_evaluate_scores_whole_odd_sized_images_by_their_own_targets() -> None:
    torch.manual_seed(0)
    model = SmartAssignNet(tiny_experiment(Path("unused")).model)
    assert model.recognizer is not None
    with torch.no_grad():  # a recognition head that answers "snow" whatever the image: known predictions
        model.recognizer.fc.weight.zero_()
        model.recognizer.fc.bias.copy_(torch.tensor([-4.0, 4.0]))

    class Odd(StripePairs):
        def __getitem__(self, index: int) -> dict:
            s = super().__getitem__(index)
            return {**s, "input": s["input"][:, :37, :29], "target": s["target"][:, :37, :29]}

    ds = Odd(3, 40, 1, flip=False)
    ev = evaluate(model, ds, device="cpu", tile=None, keep=1)
    assert ev.task == "snow" and ev.names == ["1-0", "1-1", "1-2"] and ev.labels == ["snow"] * 3
    for i, s in enumerate(ev.inputs):
        assert s == score(ds[i]["input"], ds[i]["target"])
    assert ev.examples[0][1].shape == (37, 29, 3)
    assert ev.detected == ["snow"] * 3 and ev.accuracy == 1.0
    # "auto" picks the recognised head, here always the true one: what a user gets is what the true head gives.
    assert ev.automatic == ev.restored and ev.summary()["automatic"] == ev.summary()["restored"]

    class SecondIsRain(Odd):
        def __getitem__(self, index: int) -> dict:
            return {**super().__getitem__(index), "label": torch.tensor(0 if index == 1 else 1)}

    mixed = evaluate(model, SecondIsRain(3, 40, 1, flip=False), device="cpu", tile=None)
    assert mixed.labels == ["snow", "rain", "snow"] and mixed.detected == ["snow"] * 3
    assert mixed.accuracy == pytest.approx(2 / 3) and mixed.summary()["accuracy"] == pytest.approx(2 / 3)
    summary = ev.summary()
    assert summary["images"] == 3 and summary["input"]["psnr_y"] == pytest.approx(ev.input_mean.psnr_y)
    # An untrained network starts as the identity (zero-initialised residual heads): output == input.
    assert ev.mean == ev.input_mean


# ----------------------------------------------------------------------------- configs and CLI


PAPER_CONFIGS = sorted((ROOT / "configs").glob("paper_*.yaml"))


def evaluated_sets(path: Path) -> list[str]:
    """The layouts a config validates on: the public sets whose table its model is for."""
    d = load_experiment(path).data
    return [layout for root, layout in ((d.val_rain, d.val_rain_layout), (d.val_snow, d.val_snow_layout)) if root]


@pytest.mark.parametrize("path", sorted((ROOT / "configs").glob("*.yaml")), ids=lambda p: p.name)
def test_every_shipped_config_loads(path: Path) -> None:
    exp = load_experiment(path)
    assert load_experiment(path, variant="V3").model.gated_cnn is False
    assert exp.train.batch_size >= 2
    if path not in PAPER_CONFIGS:
        return
    # The paper's recipe (§4.1; DESIGN.md §5): Adam (train.py's only optimiser) with its default betas and no
    # weight decay, lr 4e-4 halved when the training loss stops falling, batch 4, 256x256 crops, the base model
    # (V6, every part on) and the loss weights of eq. 19 (DESIGN.md §3).
    t, d, loss = exp.train, exp.data, exp.loss
    assert (t.lr, t.betas, t.weight_decay, t.batch_size, d.crop) == (4e-4, (0.9, 0.999), 0.0, 4, 256)
    assert (t.plateau_metric, t.plateau_factor) == ("train_loss", 0.5)
    assert (exp.preset, exp.variant, d.kind) == ("base", "V6", "paired")
    weights = (loss.w_char, loss.w_grad, loss.w_recog, loss.w_sparsity, loss.w_contra, loss.char_eps, loss.recog)
    assert weights == (1.0, 1.0, 1.0, 0.01, 0.001, 1e-3, "mse")
    # One rain set trained with one snow set, as the paper pairs them for the set(s) this config evaluates.
    evaluated = evaluated_sets(path)
    assert evaluated and all(PAPER_PAIRINGS[e] == (d.rain_layout, d.snow_layout) for e in evaluated), evaluated
    assert d.rain and d.snow


def test_every_paper_pairing_has_a_config() -> None:
    assert sorted(e for path in PAPER_CONFIGS for e in evaluated_sets(path)) == sorted(PAPER_PAIRINGS)


def test_yaml_overrides_and_errors_name_the_file_and_key(tmp_path: Path) -> None:
    path = tmp_path / "x.yaml"
    path.write_text("preset: tiny\ntrain:\n  lr: 4e-4\n  steps: 10\nmodel:\n  width: 8\n")
    exp = load_experiment(path, ["train.steps=20", "data.crop=64", "train.betas=[0.8, 0.9]"], variant="V4s")
    assert exp.train.lr == 4e-4 and exp.train.steps == 20 and exp.data.crop == 64 and exp.train.betas == (0.8, 0.9)
    assert exp.model.width == 8 and exp.model.tasks == ("snow",) and exp.variant == "V4s"
    defaults = load_experiment(None)
    assert (defaults.train.lr, defaults.train.batch_size, defaults.data.crop, defaults.train.plateau_factor) == (
        4e-4, 4, 256, 0.5)  # fmt: skip
    path.write_text("train:\n  learning_rate: 1\n")
    with pytest.raises(ConfigError, match=r"x\.yaml: unknown key 'train\.learning_rate'"):
        load_experiment(path)
    path.write_text("train:\n  steps: many\n")
    with pytest.raises(ConfigError, match=r"x\.yaml: train\.steps: expected an integer"):
        load_experiment(path)
    with pytest.raises(ConfigError, match="KEY=VALUE"):
        load_experiment(None, ["train.steps"])
    with pytest.raises(ConfigError, match="unknown variant"):
        load_experiment(None, variant="V9")


def test_cli_trains_resumes_and_evaluates_on_synthetic_data(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    from smartassign.data.synthset import write_synthetic_set

    run = tmp_path / "run"
    args = ["train", "--config", str(ROOT / "configs" / "synthetic_tiny.yaml"), f"train.out_dir={run}",
            "model.width=8", "data.crop=32", "data.val_pairs=1", "data.val_crop=32", "train.steps=2",
            "train.progress=false", "train.tensorboard=false"]  # fmt: skip
    assert main(args) == 0
    assert main([*args[:-3], "train.steps=3", "train.progress=false", "train.tensorboard=false", "--resume"]) == 0
    assert latest_checkpoint(run) == checkpoint_path(run, 3)
    assert main(args[:3] + ["--print-config", "--variant", "V5"]) == 0
    assert "recognition: false" in capsys.readouterr().out

    write_synthetic_set(tmp_path / "synth", n=2, seed=0, size=32)
    report = tmp_path / "report" / "synth"
    weights = checkpoint_path(run, 3)
    assert main(["eval", "--weights", str(weights), "--data", str(tmp_path / "synth"), "--device", "cpu",
                 "--report", str(report)]) == 0  # fmt: skip
    out = capsys.readouterr().out
    assert "| synth | rain | 2 |" in out and "| synth | snow | 2 |" in out
    data = json.loads(report.with_suffix(".json").read_text())
    rain = data["results"]["rain"]
    assert [r["name"] for r in rain["per_image"]] == ["00000", "00001"]
    assert set(rain["restored"]) == {"psnr_y", "ssim_y", "psnr_rgb", "ssim_rgb"} and rain["accuracy"] is not None
    assert "PSNR-Y" in report.with_suffix(".md").read_text()
    assert main(["eval", "--weights", str(weights), "--data", str(tmp_path / "synth" / "rain")]) == 2
    assert "--task" in capsys.readouterr().err
    from smartassign.cli.evaluate import datasets

    assert list(datasets(tmp_path / "synth", "generic", None, ("snow",))) == ["snow"]  # a V4s model: its task only


def test_synthetic_data_can_come_from_a_folder_of_own_photos(tmp_path: Path) -> None:
    from PIL import Image

    from smartassign.config import DataConfig
    from smartassign.train import build_data

    rng = np.random.default_rng(0)
    for name in ("b.png", "a.jpg", ".hidden.png", "notes.txt"):
        (tmp_path / name).write_bytes(b"")
    for name in ("a.jpg", "b.png"):
        Image.fromarray(rng.integers(0, 255, (40, 50, 3), dtype=np.uint8)).save(tmp_path / name)
    data = build_data(DataConfig(photos=str(tmp_path), crop=32, val_pairs=0), ("rain",), seed=0)
    assert [p.name for p in data.train["rain"].photos] == ["a.jpg", "b.png"] and not data.val
    assert data.train["rain"][0]["input"].shape == (3, 32, 32)
    (tmp_path / "empty").mkdir()
    with pytest.raises(ConfigError, match="holds no"):
        build_data(DataConfig(photos=str(tmp_path / "empty")), ("rain",), seed=0)


def test_synthetic_validation_scores_weather_only_clear_samples_stay_in_training() -> None:
    """A clear validation pair without camera degradation would be its own target (PSNR inf, a mean of inf)."""
    from smartassign.config import DataConfig, degradation_mix
    from smartassign.train import build_data

    data = build_data(DataConfig(degradation="wide_clear", crop=32, val_pairs=2, val_crop=32), ("rain",), seed=0)
    assert data.train["rain"].degradation == "wide_clear"
    assert data.val["rain"].degradation.clear_p == 0.0
    assert data.val["rain"].degradation.rain_fine_p == degradation_mix("wide_clear").rain_fine_p


def test_init_flag_sets_the_warm_start_and_a_missing_file_is_one_line(tmp_path, capsys):
    from smartassign.cli import main

    assert main(["train", "--config", "configs/continue_small.yaml", "--init", "w.safetensors", "--print-config"]) == 0
    assert "init_from: w.safetensors" in capsys.readouterr().out
    missing = tmp_path / "nope.safetensors"
    out = f"train.out_dir={tmp_path / 'r'}"
    args = ["train", "--config", "configs/synthetic_tiny.yaml", "--init", str(missing), out]
    assert main(args) != 0
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("smartassign: error:") and str(missing) in err[-1]


def test_progressive_crops_reach_the_batches_at_their_fraction_of_the_run(tmp_path, monkeypatch):
    import smartassign.data as data_pkg

    made: list[int] = []
    real = data_pkg.SyntheticBatches

    class Spy(real):  # type: ignore[misc, valid-type]
        def batch(self, step: int) -> dict:
            made.append(self.crop_at(step))
            return super().batch(step)

    monkeypatch.setattr(data_pkg, "SyntheticBatches", Spy)
    exp = tiny_experiment(tmp_path / "run", steps=4, val_every=100, sample_every=100, ckpt_every=100)
    exp = dataclasses.replace(exp, data=DataConfig(kind="synthetic", crop=32, workers=0, val_pairs=0,
                                                   progressive=((0.0, 16), (0.5, 32))))  # fmt: skip
    fit(exp)
    assert made[:4] == [16, 16, 32, 32]
    paired = dataclasses.replace(exp, data=DataConfig(kind="paired", progressive=((0.0, 16),)))
    with pytest.raises(ConfigError, match="progressive"):
        fit(paired)


@pytest.mark.parametrize("amp_cpu", [False, True])
def test_amp_cpu_trains_in_bf16_close_to_float32(amp_cpu: bool, tmp_path: Path) -> None:
    from smartassign.train import init_processes, setup

    exp = tiny_experiment(tmp_path / "run", amp_cpu=amp_cpu)
    procs, _ = init_processes("cpu")
    data = stripe_data(n=2)
    session = setup(exp, False, data, procs)
    assert session.autocast_dtype == (torch.bfloat16 if amp_cpu else None)
    batch = {k: torch.stack([data.train[t][0][k] for t in ("rain", "snow")]) for k in ("input", "target", "label")}
    results = []
    for dtype in (None, session.autocast_dtype):
        torch.manual_seed(0)
        model = SmartAssignNet(exp.model)
        opt = torch.optim.Adam(model.parameters(), lr=1e-3)
        results.append(train_step(model, batch, opt, exp.loss, torch.device("cpu"), dtype))
    fp32, chosen = results
    assert not chosen.skipped and np.isfinite(chosen.terms["total"])
    # bf16 keeps about 3 significant digits: the same loss and gradient to within a few %, never bit-equal when on
    assert chosen.terms["total"] == pytest.approx(fp32.terms["total"], rel=0.02)
    assert chosen.grad_norm == pytest.approx(fp32.grad_norm, rel=0.05)
    assert (chosen.grad_norm == fp32.grad_norm) == (not amp_cpu)


def test_native_bf16_flags_are_read_from_cpuinfo() -> None:
    from smartassign.restore import native_bf16_flags

    amx = "processor\t: 0\nflags\t\t: fpu sse avx2 avx512f avx512_bf16 amx_tile amx_bf16\n"
    assert native_bf16_flags(amx) == ["amx_bf16", "avx512_bf16"]
    assert native_bf16_flags("flags\t\t: fpu sse avx2 avx512f\n") == []
    assert native_bf16_flags("") == []
