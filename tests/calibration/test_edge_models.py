"""Models at the edges of Q/DQ placement: batched MatMul weights, weights computed from constants."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

from calibration.calibrate import CalibrationOptions, calibrate
from calibration.modelinfo import model_io
from calibration.sources import open_source
from calibration.trt_cache import read_cache


def _save(model: onnx.ModelProto, path: Path) -> Path:
    onnx.checker.check_model(model)
    onnx.save(model, path)
    return path


def _matmul3d(path: Path) -> Path:
    """x[N,4,4,6] MatMul w[4,6,10] (a batched weight) -> Relu -> MatMul w2[10,3] (a 2-D weight)."""
    rng = np.random.default_rng(0)
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["y"], name="mm3d"),
         helper.make_node("Relu", ["y"], ["r"], name="relu"),
         helper.make_node("MatMul", ["r", "w2"], ["z"], name="mm2d")],
        "mm3d", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4, 4, 6])],
        [helper.make_tensor_value_info("z", TensorProto.FLOAT, ["N", 4, 4, 3])],
        [numpy_helper.from_array(rng.standard_normal((4, 6, 10)).astype(np.float32), "w"),
         numpy_helper.from_array(rng.standard_normal((10, 3)).astype(np.float32), "w2")],
    )  # fmt: skip
    return _save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)


def _gemm_with_copied_bias(path: Path) -> Path:
    """Gemm whose bias is an Identity copy of an initializer (exporters emit these)."""
    rng = np.random.default_rng(1)
    graph = helper.make_graph(
        [helper.make_node("Identity", ["b0"], ["bias_copy"], name="copy"),
         helper.make_node("Gemm", ["x", "w", "bias_copy"], ["y"], transB=1, name="fc"),
         helper.make_node("Relu", ["y"], ["z"], name="relu")],
        "gemm", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 8])],
        [helper.make_tensor_value_info("z", TensorProto.FLOAT, ["N", 4])],
        [numpy_helper.from_array(rng.standard_normal((4, 8)).astype(np.float32), "w"),
         numpy_helper.from_array(np.zeros(4, np.float32), "b0")],
    )  # fmt: skip
    return _save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)


def _run(path: Path, feed: dict[str, np.ndarray]) -> np.ndarray:
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    return np.asarray(session.run(None, feed)[0])


def test_a_batched_matmul_weight_is_left_in_float_and_the_model_runs(tmp_path: Path) -> None:
    model = _matmul3d(tmp_path / "mm3d.onnx")
    inputs, _ = model_io(model)
    source = open_source("random:3", inputs, samples=16, batch_size=4)
    feed = {"x": np.random.default_rng(5).standard_normal((2, 4, 4, 6)).astype(np.float32)}
    for placement in ("tensorrt", "onnxruntime"):
        options = CalibrationOptions(algorithm="max", placement=placement, trt_version="10.3.0")
        result = calibrate(model, source, options, tmp_path / placement)
        report = result.report_data
        assert report is not None and report.quantized_nodes == ["mm2d"]  # the batched weight stays float
        ref, got = _run(model, feed), _run(result.model, feed)
        assert np.corrcoef(ref.ravel(), got.ravel())[0, 1] > 0.99


def test_the_trt_cache_has_activations_only_and_no_zero_scale(tmp_path: Path) -> None:
    model = _gemm_with_copied_bias(tmp_path / "gemm.onnx")
    inputs, _ = model_io(model)
    source = open_source("random:0", inputs, samples=16, batch_size=4)
    result = calibrate(
        model, source, CalibrationOptions(algorithm="max", trt_version="8.6.1"), tmp_path / "o"
    )
    assert result.cache is not None
    cache = read_cache(result.cache)
    assert "bias_copy" not in cache.scales  # computed from constants: a weight, not an activation
    assert {"x", "y", "z"} <= set(cache.scales)
    assert all(scale > 0 for scale in cache.scales.values())
