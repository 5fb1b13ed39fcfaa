"""ONNX export through the CLI: onnxruntime matches PyTorch at several sizes, including ones needing padding
and one large enough for the test-time local statistics to pool locally."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from smartassign import ModelConfig, SmartAssignNet, build_model, model_config
from smartassign.checkpoint import save_weights
from smartassign.cli import main
from smartassign.errors import ConfigError
from smartassign.export import ExportGraph, export_onnx, output_names
from smartassign.restore import TLC_WINDOW

ort = pytest.importorskip("onnxruntime", reason="the 'onnx' extra is not installed")
pytest.importorskip("onnxscript", reason="the 'onnx' extra is not installed")

# Two levels (pad multiple 2) keep the export fast while still exercising padding and the hierarchy.
CONFIG = ModelConfig(width=8, depths=(1, 1), heads=(1, 2), mlp_ratio=1.0)


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> tuple[SmartAssignNet, Path]:
    """A random network with non-trivial heads, saved and exported with ``smartassign export``."""
    torch.manual_seed(0)
    net = build_model(CONFIG)
    for head in net.heads.values():
        torch.nn.init.normal_(head.body[-1].weight, std=0.3)
    folder = tmp_path_factory.mktemp("export")
    save_weights(net, folder / "net.safetensors")
    assert main(["export", "--weights", str(folder / "net.safetensors"), "-o", str(folder / "net.onnx")]) == 0
    return net.eval(), folder / "net.onnx"


# The graph has TLC over 192 pixels (the default): below that the windows are the whole image; the last size
# has windows of 192 (16 cells of 16) at full scale and 96 at half scale.
@pytest.mark.parametrize("size", [(37, 53), (64, 48), (5, 130), (250, 301)])
def test_onnxruntime_matches_pytorch(exported: tuple[SmartAssignNet, Path], size: tuple[int, int]) -> None:
    net, path = exported  # export_onnx left the TLC windows on net, so ExportGraph computes what the graph does
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    assert [o.name for o in session.get_outputs()] == ["derain", "desnow", "logits"]
    image = torch.rand(1, 3, *size, generator=torch.Generator().manual_seed(1))
    got = session.run(None, {"image": image.numpy()})
    with torch.no_grad():
        want = ExportGraph(net)(image)
    assert [g.shape for g in got] == [(1, 3, *size), (1, 3, *size), (1, 2)]
    assert float((want[0] - image).abs().mean()) > 0.01  # the heads really change the image
    for g, w in zip(got, want, strict=True):
        np.testing.assert_allclose(g, w.numpy(), atol=1e-4, rtol=0)


def test_metadata_describes_the_model(exported: tuple[SmartAssignNet, Path]) -> None:
    session = ort.InferenceSession(str(exported[1]), providers=["CPUExecutionProvider"])
    meta = session.get_modelmeta().custom_metadata_map
    assert json.loads(meta["smartassign.config"])["depths"] == [1, 1]
    assert meta["smartassign.outputs"] == "derain,desnow,logits"
    assert json.loads(meta["smartassign.tlc"]) == TLC_WINDOW


def test_output_names_follow_the_heads() -> None:
    assert output_names(model_config("tiny", "V4s")) == ["desnow"]
    assert output_names(model_config("tiny", "V5")) == ["derain", "desnow"]


def test_window_attention_and_old_opsets_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="channel attention"):
        export_onnx(build_model(model_config("tiny", attention="window")), tmp_path / "w.onnx")
    with pytest.raises(ConfigError, match="opset"):
        export_onnx(build_model(CONFIG), tmp_path / "o.onnx", opset=11)
    assert list(tmp_path.iterdir()) == []
