"""The calibration report records each quantized weight's channels, whether the weight is an
initializer or a Constant node (as in models exported from Paddle, ocr-cls among them)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from calibration.calibrate import CalibrationOptions, calibrate
from calibration.modelinfo import model_io
from calibration.sources import open_source


def _model(path: Path, constant_nodes: bool) -> Path:
    """x -> Conv (8 output channels) -> ReLU -> Conv (4), the weights as initializers or Constants."""
    rng = np.random.default_rng(0)
    weights = {"w0": rng.normal(0, 0.4, (8, 3, 3, 3)), "w1": rng.normal(0, 0.4, (4, 8, 1, 1))}
    tensors = [numpy_helper.from_array(w.astype(np.float32), name) for name, w in weights.items()]
    nodes = [
        helper.make_node("Conv", ["x", "w0"], ["a"], pads=[1, 1, 1, 1], name="conv0"),
        helper.make_node("Relu", ["a"], ["r"], name="relu"),
        helper.make_node("Conv", ["r", "w1"], ["y"], name="conv1"),
    ]
    if constant_nodes:
        nodes = [helper.make_node("Constant", [], [t.name], value=t) for t in tensors] + nodes
    graph = helper.make_graph(
        nodes,
        "m",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 3, 8, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 4, 8, 8])],
        [] if constant_nodes else tensors,
    )
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
    return path


def test_weights_record_their_channels_whether_initializers_or_constant_nodes(tmp_path: Path) -> None:
    np.savez(tmp_path / "calib.npz", x=np.random.default_rng(1).random((8, 3, 8, 8), dtype=np.float32))
    for constant_nodes in (False, True):
        path = _model(tmp_path / f"m{int(constant_nodes)}.onnx", constant_nodes)
        source = open_source(str(tmp_path / "calib.npz"), model_io(path)[0], batch_size=8)
        options = CalibrationOptions(algorithm="max", placement="onnxruntime")
        result = calibrate(path, source, options, tmp_path / path.stem)
        weights = {w["name"]: w for w in json.loads(result.report.read_text())["weights"]}
        scales = {
            i.name: len(i.float_data) or int(np.prod(i.dims))
            for i in onnx.load(result.model).graph.initializer
            if i.name in ("w0_scale", "w1_scale")
        }
        assert {n: (w["axis"], w["channels"]) for n, w in weights.items()} == {"w0": (0, 8), "w1": (0, 4)}
        assert scales == {"w0_scale": 8, "w1_scale": 4}, constant_nodes
