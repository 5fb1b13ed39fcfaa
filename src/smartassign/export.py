"""ONNX export of a SmartAssign network with dynamic height and width.

The exported graph's signature:

- input ``image``: float32 ``(1, 3, H, W)`` in [0, 1], any H and W of at least
  ``cfg.pad_multiple`` pixels (the graph reflect-pads to that multiple and
  crops back, as the PyTorch model does);
- outputs, in this order, for the heads the model has: ``derain`` and
  ``desnow``, ``(1, 3, H, W)`` clamped to [0, 1]; then ``logits``, ``(1, 2)``
  rain-vs-snow scores, when it has a recognition head.

The model config (JSON) and the output names are stored in the ONNX metadata
under ``smartassign.config`` and ``smartassign.outputs``.
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
from smartassign.model import SmartAssignNet

DEFAULT_OPSET = 18  # the oldest opset torch's exporter writes
_HEAD_NAMES = {"rain": "derain", "snow": "desnow"}


class ExportGraph(nn.Module):
    """What the ONNX graph computes: ``(1, 3, H, W)`` -> clamped restorations per head, then logits."""

    def __init__(self, net: SmartAssignNet) -> None:
        super().__init__()
        self.net = net

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """``(1, 3, H, W)`` -> ``(derain?, desnow?, logits?)``; see :func:`output_names`."""
        out = self.net(image)
        restored = tuple(out.restored(t).clamp(0, 1) for t in TASKS if t in self.net.cfg.tasks)
        return restored if out.logits is None else (*restored, out.logits)


def output_names(cfg: ModelConfig) -> list[str]:
    """Names of the graph's outputs for a model config, in order."""
    return [_HEAD_NAMES[t] for t in TASKS if t in cfg.tasks] + (["logits"] if cfg.uses_recognition else [])


def example_input(cfg: ModelConfig) -> torch.Tensor:
    """A ``(1, 3, H, W)`` tracing input that needs padding on both sides and is > 1 pixel at every level.

    Tracing records only the branches this input takes: an input whose sides
    were already multiples of ``pad_multiple`` would leave the padding out of
    the graph, and a level of one pixel would fix broadcasting to that size.
    """
    m = cfg.pad_multiple
    return torch.rand(1, 3, 4 * m + 1 + m // 2, 6 * m + 3)


def export_onnx(model: SmartAssignNet, path: str | Path, opset: int = DEFAULT_OPSET) -> None:
    """Write ``model`` as an ONNX graph with dynamic H and W to ``path`` (atomically)."""
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
    program = torch.onnx.export(
        graph,
        (example_input(model.cfg),),
        dynamo=True,
        dynamic_shapes=({2: torch.export.Dim.AUTO, 3: torch.export.Dim.AUTO},),
        input_names=["image"],
        output_names=output_names(model.cfg),
        opset_version=opset,
        verbose=False,
    )
    program.model.metadata_props["smartassign.config"] = json.dumps(config_to_dict(model.cfg))
    program.model.metadata_props["smartassign.outputs"] = ",".join(output_names(model.cfg))
    atomic_write(Path(path), lambda tmp: program.save(tmp, external_data=False))


__all__ = ["DEFAULT_OPSET", "ExportGraph", "example_input", "export_onnx", "output_names"]
