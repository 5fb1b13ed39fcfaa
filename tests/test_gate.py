"""The bundle gate's decision, the ledger page and the model-card rewrite, on hand-made scores."""

from __future__ import annotations

import json

import pytest
import torch

from smartassign import gate
from smartassign.cli.bundle import rewrite_card
from smartassign.errors import ConfigError


def scores(
    rain: float,
    snow: float,
    acc: float = 1.0,
    auto: tuple[float, float] | None = None,
    unseen: tuple[float, float] | None = None,
) -> dict:
    """Gate scores; ``auto``: PSNR-Y with the recognised head per task (default: the true head's); ``unseen``: the
    unseen set's PSNR-Y per task (default: not scored there)."""
    autos = dict(zip(("rain", "snow"), auto or (rain, snow), strict=True))

    def task(psnr: float, name: str) -> dict:
        return {"images": 24, "restored": {"psnr_y": psnr, "ssim_y": 0.8}, "input": {"psnr_y": 20.0, "ssim_y": 0.7},
                "automatic": {"psnr_y": autos[name], "ssim_y": 0.8}, "gain_psnr_y": psnr - 20.0,
                "accuracy": acc}  # fmt: skip

    out = {"rain": task(rain, "rain"), "snow": task(snow, "snow"), "mean_psnr_y": (rain + snow) / 2, "accuracy": acc}
    if unseen is not None:
        out["unseen"] = {
            **{t: {"images": 16, "input_psnr_y": 18.0, "automatic_psnr_y": v, "gain_psnr_y": v - 18.0, "accuracy": acc}
               for t, v in zip(("rain", "snow"), unseen, strict=True)},  # fmt: skip
            "mean_psnr_y": sum(unseen) / 2,
        }
    return out


@pytest.mark.parametrize(
    ("candidate", "ok", "why"),
    [
        (scores(25.0, 24.0), True, "no task worse"),
        (scores(26.0, 22.9), False, "worse on snow"),
        (scores(24.0, 23.0), False, "is not above"),
        # Worse recognition ships only while users still get better pictures from the head it picks.
        (scores(25.0, 24.0, acc=0.9, auto=(24.5, 23.5)), True, "no task worse"),
        (scores(25.0, 24.0, acc=0.9, auto=(23.9, 23.5)), False, "worse with the recognised head on rain"),
        (scores(25.0, 24.0, auto=(24.5, 22.0)), False, "snow 22.00 < 23.00"),
        # The same restorations scored under another thread count differ in the last digits: not "worse".
        (scores(23.998, 23.998, auto=(25.0, 24.0)), True, "no task worse"),
        (scores(23.99, 23.99, auto=(25.0, 24.0)), False, "worse on rain"),
    ],
)
def test_gate_ships_only_better_weights(candidate, ok, why):
    decided, reason = gate.better(candidate, scores(24.0, 23.0))
    assert decided is ok and why in reason


@pytest.mark.parametrize(
    ("candidate", "ok", "why"),
    [
        (scores(25.0, 24.0, unseen=(20.0, 19.0)), True, "no task worse"),
        # Better on the engine's weather, worse on weather built another way: ledger run 5, refused.
        (scores(25.0, 24.0, unseen=(19.5, 19.0)), False, "worse on unseen weather on rain 19.50 < 20.00"),
        # Equal everywhere on the unseen set and on the engine's: the overall mean has not risen.
        (scores(24.0, 23.0, unseen=(20.0, 19.0)), False, "is not above"),
        # Equal on the engine's set, better on the unseen one: ships (the overall mean rose).
        (scores(24.0, 23.0, unseen=(21.0, 19.0)), True, "no task worse"),
    ],
)
def test_gate_also_asks_for_no_loss_on_unseen_weather(candidate, ok, why):
    current = scores(24.0, 23.0, unseen=(20.0, 19.0))
    decided, reason = gate.better(candidate, current)
    assert decided is ok and why in reason
    assert gate.overall(current) == pytest.approx((23.5 + 19.5) / 2)


def test_ledger_appends_and_renders(tmp_path):
    ledger = tmp_path / "log.json"
    entry = {"date": "2026-12-01", "machine": "cpu", "minutes": 3, "steps": 10, "crops_seen": 80,
             "start_sha256": "a" * 64, "end_sha256": "b" * 64, "scores": scores(25.0, 24.0), "bundled": True}
    gate.append_ledger(ledger, entry)
    entries = gate.append_ledger(ledger, {**entry, "bundled": False, "verdict": "worse on rain"})
    assert len(json.loads(ledger.read_text())) == len(entries) == 2
    page = ledger.with_suffix(".md").read_text()
    assert "| 1 | 2026-12-01 | cpu | 3 | 10 | 80 | aaaaaaaaaa → bbbbbbbbbb | +5.00 | +4.00 | 100.0 % | yes |" in page
    assert "no: worse on rain" in page


def test_card_scores_are_rewritten_between_markers_only(tmp_path):
    card = tmp_path / "card.md"
    card.write_text("# Card\nbefore\n<!-- gate-scores:begin -->\nold\n<!-- gate-scores:end -->\nafter\n")
    rewrite_card(card, scores(25.0, 24.0), scores(26.0, 25.0))
    text = card.read_text()
    assert text.startswith("# Card\nbefore\n") and text.endswith("after\n") and "old" not in text
    assert "**+5.00 dB**" in text and "**+6.00 dB**" in text
    card.write_text("no markers")
    with pytest.raises(ConfigError, match="markers"):
        rewrite_card(card, scores(25.0, 24.0), scores(26.0, 25.0))


def _bundle_setup(tmp_path, monkeypatch, marks):
    """A bundled file, a run folder with other best weights, and score_weights replaced by ``marks``: the gate
    scores of each file by its name (so a test decides which is better)."""
    import yaml

    from smartassign import build_model
    from smartassign.checkpoint import save_weights

    weights = tmp_path / "weights"
    weights.mkdir()
    bundled, run = weights / "small.safetensors", tmp_path / "run"
    run.mkdir()
    save_weights(build_model("tiny"), bundled)
    save_weights(build_model("tiny"), run / "best.safetensors", {"experiment": {"data": {"crop": 128}}})
    config = {"preset": "tiny", "data": {"crop": 128}, "train": {"batch_size": 8, "init_from": str(bundled)}}
    (run / "config.yaml").write_text(yaml.safe_dump(config))
    (run / "train.csv").write_text("step,images_per_s\n10,8.0\n")
    monkeypatch.setattr(gate, "BUNDLED", bundled)
    monkeypatch.setattr(gate, "SCORES", weights / "small.scores.json")
    scored = []

    def fake_scores(path, which, device="cpu", unseen=None):
        scored.append((path.name, which.n))
        got = {**marks[path.name], "set": which.as_dict(), "scoring": gate.SCORING}
        return got if unseen is not None else {k: v for k, v in got.items() if k != "unseen"}

    monkeypatch.setattr(gate, "score_weights", fake_scores)
    card = tmp_path / "card.md"
    card.write_text("<!-- gate-scores:begin -->\nold\n<!-- gate-scores:end -->\n")
    args = ["bundle", str(run), "--ledger", str(tmp_path / "log.json"), "--card", str(card)]
    return bundled, run, card, args, scored


@pytest.mark.parametrize("better", [True, False])
def test_bundle_replaces_the_weights_only_through_the_gate(tmp_path, monkeypatch, better):
    from safetensors.torch import load_file

    from smartassign.cli import main

    # Better, or better on the engine's set but worse on the unseen one.
    candidate = scores(25.0, 24.0, unseen=(20.0, 19.0)) if better else scores(25.0, 24.0, unseen=(19.0, 19.0))
    marks = {"small.safetensors": scores(24.0, 23.0, unseen=(20.0, 19.0)), "best.safetensors": candidate}
    bundled, run, card, args, scored = _bundle_setup(tmp_path, monkeypatch, marks)
    before = gate.sha256(bundled)
    assert main(args) == (0 if better else 1)
    entry = json.loads((tmp_path / "log.json").read_text())[-1]
    assert entry["bundled"] is better and entry["start_sha256"] == before
    if better:  # float16 copy of the candidate, its figures recorded, the card rewritten
        assert all(v.dtype == torch.float16 for v in load_file(str(bundled)).values() if v.is_floating_point())
        assert gate.sha256(bundled) != before
        assert json.loads(gate.SCORES.read_text())["sha256"] == gate.sha256(bundled)
        assert "old" not in card.read_text() and "Unseen set" in card.read_text()
        assert json.loads(gate.SCORES.read_text())["gate"]["unseen"]["rain"]["automatic_psnr_y"] == 20.0
    else:
        assert "worse on unseen weather on rain" in entry["verdict"]
        assert gate.sha256(bundled) == before and "old" in card.read_text() and not gate.SCORES.exists()


def test_bundle_rescores_saved_scores_of_an_older_scoring(tmp_path, monkeypatch):
    from smartassign.cli import main

    bundled, run, card, args, scored = _bundle_setup(
        tmp_path, monkeypatch, {"small.safetensors": scores(24.0, 23.0), "best.safetensors": scores(23.0, 22.0)}
    )
    saved = {"sha256": gate.sha256(bundled), "gate": {**scores(20.0, 20.0), "set": gate.GATE_SET.as_dict()}}
    gate.SCORES.write_text(json.dumps({**saved, "gate": {**saved["gate"], "scoring": gate.SCORING - 1}}))
    main([*args, "--dry-run"])
    assert ("small.safetensors", gate.GATE_SET.n) in scored  # rescored: the saved figures were of scoring 1
    scored.clear()
    gate.SCORES.write_text(json.dumps({**saved, "gate": {**saved["gate"], "scoring": gate.SCORING}}))
    main([*args, "--dry-run"])
    assert scored == [("best.safetensors", gate.GATE_SET.n)]  # current saved figures are reused



def test_interpolate_is_a_straight_line_between_two_weights_files(tmp_path):
    from safetensors.torch import load_file

    from smartassign import build_model
    from smartassign.checkpoint import load_weights, save_weights
    from smartassign.errors import WeightsError

    torch.manual_seed(0)
    start, end = tmp_path / "start.safetensors", tmp_path / "end.safetensors"
    save_weights(build_model("tiny"), start)
    save_weights(build_model("tiny"), end)
    a, b = load_file(str(start)), load_file(str(end))
    for alpha in (0.0, 0.25, 1.0):
        got = load_file(str(gate.interpolate(start, end, alpha, tmp_path / "mid.safetensors")))
        for k, v in got.items():
            if v.is_floating_point():
                assert torch.allclose(v, a[k] + alpha * (b[k] - a[k]), atol=1e-6), k
    mid = tmp_path / "mid.safetensors"
    side = json.loads(mid.with_suffix(".json").read_text())
    assert side["interpolated"] == {"start": gate.sha256(start), "end": gate.sha256(end), "alpha": 1.0}
    load_weights(mid)  # loads as a model: the sidecar carries the end's config
    with pytest.raises(WeightsError, match="not in"):
        gate.interpolate(start, end, 1.5, mid)
    save_weights(build_model("small"), tmp_path / "other.safetensors")
    with pytest.raises(WeightsError, match="other.safetensors: cannot interpolate"):
        gate.interpolate(start, tmp_path / "other.safetensors", 0.5, mid)


def test_bundle_blend_ships_the_best_blend_that_passes(tmp_path, monkeypatch):
    from smartassign.cli import main

    base = scores(24.0, 23.0, unseen=(20.0, 19.0))
    marks = {
        "small.safetensors": base,
        "best.safetensors": scores(26.0, 25.0, unseen=(20.0, 18.0)),  # the run alone loses unseen snow
        "blend_0.25.safetensors": scores(24.5, 23.5, unseen=(20.1, 19.1)),  # passes
        "blend_0.50.safetensors": scores(25.0, 24.0, unseen=(20.2, 19.0)),  # passes, better overall
        "blend_0.75.safetensors": scores(25.5, 24.5, unseen=(20.3, 18.5)),  # fails on unseen snow
    }
    bundled, run, card, args, scored = _bundle_setup(tmp_path, monkeypatch, marks)
    assert main([*args, "--blend", "0.25", "0.5", "0.75"]) == 0
    entry = json.loads((tmp_path / "log.json").read_text())[-1]
    assert entry["bundled"] and entry["blend_alpha"] == 0.5 and entry["verdict"].startswith("blend 0.50")
    assert [b["alpha"] for b in entry["blends"]] == [0.25, 0.5, 0.75]
    assert entry["end_sha256"] == entry["blends"][1]["sha256"] != entry["trained_sha256"]
    assert json.loads(gate.SCORES.read_text())["gate"]["unseen"]["rain"]["automatic_psnr_y"] == 20.2
    assert ("best.safetensors", gate.GATE_SET.n) not in scored  # only the blends were scored
    assert main([*args, "--blend", "2"]) == 2


def test_refused_runs_best_overall_becomes_the_frontier_until_a_bundle(tmp_path, monkeypatch):
    """A refused run that is the best overall yet is kept (float16) for the next machine's ``--init``; a worse
    one leaves it; a bundled run that beats it removes it."""
    from safetensors.torch import load_file

    from smartassign.cli import main

    bundled_scores = scores(24.0, 23.0, unseen=(20.0, 19.0))  # overall 21.5
    marks = {"small.safetensors": bundled_scores, "best.safetensors": scores(25.0, 24.0, unseen=(19.0, 19.0))}
    bundled, run, card, args, scored = _bundle_setup(tmp_path, monkeypatch, marks)
    frontier = tmp_path / "frontier" / "small.safetensors"
    args = [*args, "--frontier", str(frontier)]
    assert main(args) == 1  # refused: worse on unseen rain, but overall 21.75 > 21.5
    assert all(v.dtype == torch.float16 for v in load_file(str(frontier)).values() if v.is_floating_point())
    assert gate.frontier_overall(frontier) == pytest.approx(21.75)
    entry = json.loads((tmp_path / "log.json").read_text())[-1]
    assert entry["frontier"].startswith("kept as the frontier") and not entry["bundled"]
    kept = gate.sha256(frontier)

    marks["best.safetensors"] = scores(24.6, 23.6, unseen=(19.0, 19.0))  # refused, overall 21.55: above bundled only
    assert main(args) == 1
    assert gate.sha256(frontier) == kept
    assert "not above the frontier's 21.75" in json.loads((tmp_path / "log.json").read_text())[-1]["frontier"]

    marks["best.safetensors"] = scores(24.0, 22.0, unseen=(21.0, 18.0))  # refused and below the bundled overall
    assert main(args) == 1 and gate.sha256(frontier) == kept

    marks["best.safetensors"] = scores(26.0, 25.0, unseen=(20.5, 19.5))  # bundled, overall 22.75 > 21.75
    assert main(args) == 0
    assert not frontier.exists() and not frontier.with_suffix(".json").exists()
    assert "removed" in json.loads((tmp_path / "log.json").read_text())[-1]["frontier"]
