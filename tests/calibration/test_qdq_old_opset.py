"""Models below opset 13 are planned on their upgrade: the version converter adds nodes (here a
Constant for Squeeze's axes), so plan indices taken from the original pointed at the wrong nodes
(IndexError writing a bias, or a 'cycle' in the Q/DQ graph; seen on ddddocr's opset-12 model)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import numpy_helper

from calibration.calibrate import CalibrationOptions, calibrate
from calibration.modelinfo import model_io
from calibration.sources import open_source
from tests.calibration.conftest import squeeze_conv_opset12


def opset12_model(path: Path) -> Path:
    """x[1,1,1,8,16] -> Squeeze(axes attr) -> Conv(+bias) -> Relu -> Conv(+bias) -> y."""
    rng = np.random.default_rng(0)
    inits = [
        numpy_helper.from_array(rng.normal(0, 0.3, (4, 1, 3, 3)).astype(np.float32), "w1"),
        numpy_helper.from_array(rng.normal(0, 0.1, (4,)).astype(np.float32), "b1"),
        numpy_helper.from_array(rng.normal(0, 0.3, (2, 4, 3, 3)).astype(np.float32), "w2"),
        numpy_helper.from_array(rng.normal(0, 0.1, (2,)).astype(np.float32), "b2"),
    ]
    model = squeeze_conv_opset12(inits, first_pads=1)
    onnx.save(model, path)
    return path


@pytest.mark.parametrize("placement", ["tensorrt", "onnxruntime"])
def test_opset12_model_with_biases_calibrates_and_runs(tmp_path: Path, placement: str) -> None:
    model = opset12_model(tmp_path / "old.onnx")
    x = np.random.default_rng(1).uniform(0, 1, (16, 1, 1, 8, 16)).astype(np.float32)
    np.savez(tmp_path / "calib.npz", x=x)
    inputs, _ = model_io(model)
    source = open_source(str(tmp_path / "calib.npz"), inputs, batch_size=1)
    result = calibrate(model, source, CalibrationOptions(placement=placement), tmp_path / "out")
    qdq = onnx.load(result.model)
    assert any(n.op_type == "QuantizeLinear" for n in qdq.graph.node)
    ref = ort.InferenceSession(str(model)).run(None, {"x": x[:1]})[0]
    got = ort.InferenceSession(str(result.model)).run(None, {"x": x[:1]})[0]
    cos = float(ref.ravel() @ got.ravel() / np.linalg.norm(ref) / np.linalg.norm(got))
    assert cos > 0.99


def test_the_opset_upgrade_keeps_a_hardmax_over_a_middle_axis() -> None:
    """Hardmax below 13 flattens its input to 2-D at ``axis``; onnx.version_converter kept the
    attribute, so an int8 build of an opset-11 model computed Hardmax-13's column-wise maximum."""
    from onnx import TensorProto, helper

    from calibration.qdq import upgrade_opset

    for axis in (0, 1, 2, -1):
        graph = helper.make_graph(
            [helper.make_node("Hardmax", ["x"], ["y"], axis=axis)],
            "g",
            [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3, 4])],
            [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 3, 4])],
        )
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 11)], ir_version=6)
        upgraded = upgrade_opset(model)
        assert upgraded.opset_import[0].version == 13
        x = np.random.default_rng(axis + 5).standard_normal((2, 3, 4)).astype(np.float32)
        (want,) = ort.InferenceSession(model.SerializeToString()).run(None, {"x": x})
        (got,) = ort.InferenceSession(upgraded.SerializeToString()).run(None, {"x": x})
        np.testing.assert_array_equal(got, want, err_msg=f"axis={axis}")


def test_a_conversion_whose_source_nothing_runs_says_why_it_was_not_checked() -> None:
    """Where neither ONNX Runtime (no Gemm(6) kernel) nor onnx's reference evaluator (no
    com.microsoft ops) runs the source, upgrade_opset's check could not run and it returned the
    conversion without a word; convert_opset returns why with it, for its callers to say and record.
    A checked conversion returns None."""
    from onnx import TensorProto, helper

    from calibration.qdq import convert_opset

    rng = np.random.default_rng(0)
    graph = helper.make_graph(
        [
            helper.make_node("Gemm", ["x", "w", "b"], ["h"], name="gemm", transB=1, broadcast=1),
            helper.make_node("Gelu", ["h"], ["y"], domain="com.microsoft", name="gelu"),
        ],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 4])],
        [
            numpy_helper.from_array(rng.standard_normal((4, 8)).astype(np.float32), "w"),
            numpy_helper.from_array(rng.standard_normal(4).astype(np.float32), "b"),
        ],
    )
    opsets = [helper.make_opsetid("", 6), helper.make_opsetid("com.microsoft", 1)]
    model = helper.make_model(graph, opset_imports=opsets, ir_version=4)
    converted, unchecked = convert_opset(model, name="gelu6.onnx")
    assert converted.opset_import[0].version == 13
    assert unchecked is not None and unchecked.startswith("neither ONNX Runtime (")
    assert "Gemm(6)" in unchecked and "reference evaluator" in unchecked and "Gelu" in unchecked
    del model.graph.node[1]
    model.graph.output[0].name = "h"
    del opsets[1]
    plain = helper.make_model(model.graph, opset_imports=opsets[:1], ir_version=4)
    assert convert_opset(plain)[1] is None  # the evaluator runs it: checked
