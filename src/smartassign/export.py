"""ONNX export of a SmartAssign network with dynamic height and width.

The exported graph's signature:

- input ``image``: float32 ``(1, 3, H, W)`` in [0, 1], any H and W of at least
  ``cfg.pad_multiple`` pixels (the graph reflect-pads to that multiple and
  crops back, as the PyTorch model does);
- outputs, in this order, for the heads the model has: ``derain`` and
  ``desnow``, ``(1, 3, H, W)`` clamped to [0, 1]; then ``logits``, ``(1, 2)``
  rain-vs-snow scores, when it has a recognition head.

The graph computes what ``SmartAssignNet.forward(image, tasks=<those outputs>)`` does in eval mode, with
test-time local statistics over a ``tlc``-pixel window (as :class:`~smartassign.restore.Restorer` restores a
whole image; ``tlc=None``: global pools): one pass, no DRM embeddings.

The model config (JSON), the output names and the TLC window (JSON, ``null``
for global pools) are stored in the ONNX metadata under ``smartassign.config``,
``smartassign.outputs`` and ``smartassign.tlc``.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import torch
from torch import nn

from smartassign.checkpoint import atomic_write
from smartassign.config import TASKS, ModelConfig, config_to_dict
from smartassign.errors import ConfigError
from smartassign.layers import ChannelAttention, ChannelGate, cell_side
from smartassign.model import SmartAssignNet
from smartassign.restore import TLC_WINDOW, set_local_statistics

DEFAULT_OPSET = 18  # the oldest opset torch's exporter writes
_HEAD_NAMES = {"rain": "derain", "snow": "desnow"}


class ExportGraph(nn.Module):
    """What the ONNX graph computes: ``(1, 3, H, W)`` -> clamped restorations per head, then logits."""

    def __init__(self, net: SmartAssignNet) -> None:
        super().__init__()
        self.net = net
        self.tasks = tuple(t for t in TASKS if t in net.cfg.tasks)

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """``(1, 3, H, W)`` -> ``(derain?, desnow?, logits?)``; see :func:`output_names`."""
        recognition = ("recognition",) if self.net.recognizer is not None else ()
        out = self.net(image, tasks=(*self.tasks, *recognition))
        restored = tuple(out.restored(t).clamp(0, 1) for t in self.tasks)
        return restored if out.logits is None else (*restored, out.logits)


def output_names(cfg: ModelConfig) -> list[str]:
    """Names of the graph's outputs for a model config, in order."""
    return [_HEAD_NAMES[t] for t in TASKS if t in cfg.tasks] + (["logits"] if cfg.uses_recognition else [])


def example_input(cfg: ModelConfig, min_side: int = 0) -> torch.Tensor:
    """A ``(1, 3, H, W)`` tracing input that needs padding on both sides and is > 1 pixel at every level.

    Tracing records only the branches this input takes: an input whose sides
    were already multiples of ``pad_multiple`` would leave the padding out of
    the graph, and a size of one (a level of one pixel, one TLC cell) would be
    fixed into the graph. ``min_side``: the least side in pixels (two TLC cells
    at every scale).
    """
    m = cfg.pad_multiple
    k = max(4, -(-min_side // m))
    return torch.rand(1, 3, k * m + 1, (k + 2) * m + max(m - 1, 1))


def tlc_cells(model: SmartAssignNet, tlc: int | None) -> int:
    """The largest TLC cell of ``model`` in input pixels (0 without TLC), once its windows are set for ``tlc``."""
    if tlc is None:
        return 0
    windows = [m.local_window for m in model.modules() if isinstance(m, ChannelGate | ChannelAttention)]
    return max((cell_side(w) * tlc // w for w in windows if w), default=0)


def export_onnx(
    model: SmartAssignNet, path: str | Path, opset: int = DEFAULT_OPSET, tlc: int | None = TLC_WINDOW
) -> None:
    """Write ``model`` as an ONNX graph with dynamic H and W to ``path`` (atomically); TLC over ``tlc`` pixels."""
    if importlib.util.find_spec("onnxscript") is None:
        raise ConfigError("ONNX export needs onnx and onnxscript: pip install 'smartassign[onnx]'")
    if model.cfg.attention != "channel":
        raise ConfigError(
            f"ONNX export supports channel attention only; this model uses {model.cfg.attention!r} attention, "
            "whose shifted windows depend on the image size"
        )
    if opset < DEFAULT_OPSET:
        raise ConfigError(f"--opset must be at least {DEFAULT_OPSET}, got {opset}")
    graph = ExportGraph(model.cpu()).eval()
    set_local_statistics(model, tlc)
    program = torch.onnx.export(
        graph,
        (example_input(model.cfg, 2 * tlc_cells(model, tlc) + 1),),
        dynamo=True,
        dynamic_shapes=({2: torch.export.Dim.AUTO, 3: torch.export.Dim.AUTO},),
        input_names=["image"],
        output_names=output_names(model.cfg),
        opset_version=opset,
        verbose=False,
    )
    program.model.metadata_props["smartassign.config"] = json.dumps(config_to_dict(model.cfg))
    program.model.metadata_props["smartassign.outputs"] = ",".join(output_names(model.cfg))
    program.model.metadata_props["smartassign.tlc"] = json.dumps(tlc)
    atomic_write(Path(path), lambda tmp: program.save(tmp, external_data=False))


__all__ = ["DEFAULT_OPSET", "ExportGraph", "example_input", "export_onnx", "output_names", "tlc_cells"]
