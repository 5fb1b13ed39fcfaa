"""How hard is rain-vs-snow for a learner? Probes of the recognition problem (docs/training.md, issue 17).

Two probes, each trains for ``--steps`` batches of the engine's crops from the training photos and reports
held-out accuracy per task every ``--every`` steps on 32 + 32 crops of the held-out photos (seed 99):

* ``cnn``: a small from-scratch CNN on the input (3x3 convolutions of 16-32 channels, two of stride 2), with
  ``--pool mean|max`` and ``--highpass`` (the input minus its 7x7 box blur) — is the data separable at all?
* ``head``: only the recognition head of ``--weights`` trained on the frozen trunk (``--pool max`` swaps its
  mean for mean-and-max pooling with a fresh LayerNorm and linear layer) — do the atoms carry the signal?
  It also reports the unseen set (``smartassign.unseen``, 16 + 16 images at 256 px).

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/recognition_probe.py cnn --mix heavy --crop 128 --steps 400 \\
        --lr 3e-3 --pool max --highpass
    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/recognition_probe.py head --mix broad --steps 150
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import write_result  # noqa: E402
from smartassign.checkpoint import load_weights  # noqa: E402
from smartassign.data import SyntheticBatches, clean_photos  # noqa: E402
from smartassign.layers import high_pass  # noqa: E402
from smartassign.restore import bundled_weights, set_local_statistics, trained_crop  # noqa: E402
from smartassign.unseen import unseen_set  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def per_task(pred: torch.Tensor, label: torch.Tensor) -> list[float]:
    """Accuracy on the rain (0) and snow (1) images."""
    return [float((pred[label == k] == k).float().mean()) for k in (0, 1)]


class SmallCNN(nn.Module):
    """The from-scratch probe: is rain separable from snow in the pixels?"""

    def __init__(self, pool: str, highpass: bool, c: int = 16, cin: int = 3) -> None:
        super().__init__()
        self.pool, self.highpass = pool, highpass
        self.body = nn.Sequential(
            nn.Conv2d(cin, c, 3, 1, 1), nn.GELU(), nn.Conv2d(c, c, 3, 2, 1), nn.GELU(),
            nn.Conv2d(c, 2 * c, 3, 2, 1), nn.GELU(), nn.Conv2d(2 * c, 2 * c, 3, 1, 1),
        )  # fmt: skip
        self.norm, self.fc = nn.LayerNorm(2 * c), nn.Linear(2 * c, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.highpass:
            x = high_pass(x)
        y = self.body(x)
        return self.fc(self.norm(y.amax((2, 3)) if self.pool == "max" else y.mean((2, 3))))


def head_probe(weights: Path, pool: str) -> tuple[nn.Module, list[nn.Parameter], Any]:
    """The network of ``weights`` with everything but its recognition head frozen; returns it, the trained
    parameters and a logits function."""
    net = load_weights(weights).float()
    rec = net.recognizer
    if rec is None:
        raise SystemExit(f"{weights}: this model has no recognition head")
    if pool == "max":
        width = rec.fc.in_features
        rec.norm, rec.fc = nn.LayerNorm(2 * width), nn.Linear(2 * width, 2)

        def forward(feats: torch.Tensor) -> torch.Tensor:
            y = rec.body(feats)
            return rec.fc(rec.norm(torch.cat([y.mean((2, 3)), y.amax((2, 3))], 1)))

        rec.forward = forward  # type: ignore[method-assign]
    net.requires_grad_(False)
    rec.requires_grad_(True)
    return net, list(rec.parameters()), lambda x: net(x, tasks=("recognition",)).logits


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("probe", choices=("cnn", "head"))
    p.add_argument("--weights", default=None, help="head probe: weights file (default: the bundled small)")
    p.add_argument("--mix", default="heavy", help="engine mix of the training crops (default heavy)")
    p.add_argument("--crop", type=int, default=128)
    p.add_argument("--steps", type=int, default=300)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--pool", choices=("mean", "max"), default="mean")
    p.add_argument("--highpass", action="store_true", help="cnn probe: feed the input minus its 7x7 box blur")
    p.add_argument("--oracle", action="store_true", help="cnn probe: feed the weather layer (input - target)")
    p.add_argument("--residuals", action="store_true", help="cnn probe: feed the frozen heads' residuals")
    p.add_argument("--every", type=int, default=50)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", default=None, help="default benchmarks/results/recognition_probe_PROBE.json")
    args = p.parse_args(argv)
    args.json = args.json or str(ROOT / "benchmarks" / "results" / f"recognition_probe_{args.probe}.json")
    torch.manual_seed(args.seed)
    weights = Path(args.weights) if args.weights else bundled_weights("small")
    if (args.oracle or args.residuals) and args.probe != "cnn":
        raise SystemExit("--oracle and --residuals apply to the cnn probe only")
    if args.oracle and args.residuals:
        raise SystemExit("--oracle and --residuals are two different inputs: choose one")
    frozen = None
    if args.residuals:
        frozen = load_weights(weights).float().eval().requires_grad_(False)
        set_local_statistics(frozen, trained_crop(weights))
    if args.probe == "cnn":
        net: nn.Module = SmallCNN(args.pool, args.highpass, cin=6 if args.residuals else 3)
        params, logits = list(net.parameters()), net
    else:
        net, params, logits = head_probe(weights, args.pool)
    train = SyntheticBatches(clean_photos("train"), args.crop, args.batch, args.seed, degradation=args.mix)
    held = SyntheticBatches(clean_photos("heldout"), args.crop, 64, 99, degradation=args.mix).batch(0)

    def seen(b: dict[str, Any]) -> torch.Tensor:
        """What the probe reads of a batch: the degraded crop; with --oracle its weather alone; with --residuals
        what the frozen heads remove from it."""
        if frozen is not None:
            with torch.no_grad():
                out = frozen(b["input"], tasks=("rain", "snow"))
            return torch.cat([b["input"] - out.derain, b["input"] - out.desnow], 1)
        return b["input"] - b["target"] if args.oracle else b["input"]

    unseen = unseen_set(8, 256, 0) if args.probe == "head" else []
    opt = torch.optim.AdamW(params, lr=args.lr)

    def measure(step: int, loss: float) -> dict[str, Any]:
        net.eval()
        if args.probe == "head":
            set_local_statistics(net, trained_crop(weights))  # type: ignore[arg-type]
        with torch.no_grad():
            row: dict[str, Any] = {"step": step, "loss": loss,
                                   "heldout": per_task(logits(seen(held)).argmax(1), held["label"])}  # fmt: skip
            if unseen:
                x = torch.stack([torch.from_numpy(it["input"]).permute(2, 0, 1).float() / 255 for it in unseen])
                y = torch.tensor([0 if it["task"] == "rain" else 1 for it in unseen])
                row["unseen"] = per_task(logits(x).argmax(1), y)
        if args.probe == "head":
            set_local_statistics(net, None)  # type: ignore[arg-type]
        net.train()
        return row

    rows, start, window = [measure(0, float("nan"))], time.perf_counter(), []
    for step in range(1, args.steps + 1):
        b = train.batch(step)
        loss = F.cross_entropy(logits(seen(b)), b["label"])
        opt.zero_grad()
        loss.backward()
        opt.step()
        window.append(loss.item())
        if step % args.every == 0 or step == args.steps:
            rows.append(measure(step, sum(window) / len(window)))
            window = []
    seconds = time.perf_counter() - start
    print(f"## recognition probe `{args.probe}`: {args.mix} {args.crop}² crops, batch {args.batch}, lr {args.lr}, "
          f"pool {args.pool}{', high-pass' if args.highpass else ''}{', oracle weather input' if args.oracle else ''}"
          f"{', frozen heads residuals' if args.residuals else ''},"
          f" seed {args.seed}\n")  # fmt: skip
    head = "| step | mean CE loss | held-out rain | held-out snow |"
    print(head + (" unseen rain | unseen snow |" if unseen else ""))
    print("|---:|---:|---:|---:|" + ("---:|---:|" if unseen else ""))
    for r in rows:
        extra = "".join(f" {100 * a:.0f} % |" for a in r.get("unseen", []))
        rain, snow = r["heldout"]
        print(f"| {r['step']} | {r['loss']:.3f} | {100 * rain:.0f} % | {100 * snow:.0f} % |{extra}")
    print(f"\n{seconds:.0f}s, {torch.get_num_threads()} thread(s)")
    record = {
        "benchmark": "recognition_probe",
        "args": vars(args),
        "weights": str(weights) if args.probe == "head" else None,
        "seconds": seconds,
        "rows": [{**r, "loss": None if r["loss"] != r["loss"] else r["loss"]} for r in rows],
    }
    write_result(args.json, record, "recognition_probe.py", machine={"threads": torch.get_num_threads()})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
