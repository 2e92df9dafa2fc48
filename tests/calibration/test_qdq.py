"""Q/DQ placement and format: TensorRT's rules for GPU targets, ONNX Runtime's for CPU targets."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import numpy_helper

from calibration.errors import CalibrationError
from calibration.qdq import QuantizeOptions, QuantPlan, check_qdq, plan_quantization, write_qdq


def _write(model_path: Path, **options: object) -> tuple[onnx.ModelProto, QuantPlan]:
    model = onnx.load(model_path)
    plan = plan_quantization(model, QuantizeOptions(**options))  # type: ignore[arg-type]
    qdq = write_qdq(model, plan, {name: 2.0 for name in plan.calibrated_tensors()})
    check_qdq(qdq, str(options.get("placement", "tensorrt")))
    return qdq, plan


def _dq_of(qdq: onnx.ModelProto, node_name: str, index: int) -> onnx.NodeProto | None:
    producers = {o: n for n in qdq.graph.node for o in n.output}
    node = next(n for n in qdq.graph.node if n.name == node_name)
    return producers.get(node.input[index])


def test_tensorrt_placement_quantizes_weighted_inputs_and_the_unfused_residual_branch(
    residual_model: Path,
) -> None:
    qdq, _ = _write(residual_model, placement="tensorrt")
    inits = {i.name: numpy_helper.to_array(i) for i in qdq.graph.initializer}
    axes = {"conv_a": 0, "conv_b": 0, "deconv": 1, "gemm": 1, "matmul": 1}
    for name, axis in axes.items():
        dq = _dq_of(qdq, name, 1)
        assert dq is not None and dq.op_type == "DequantizeLinear", name
        assert {a.name: a.i for a in dq.attribute}["axis"] == axis, name
        assert inits[dq.input[0]].dtype == np.int8
        assert inits[dq.input[1]].ndim == 1 and inits[dq.input[1]].size > 1  # per-channel
        act = _dq_of(qdq, name, 0)
        assert act is not None and act.op_type == "DequantizeLinear", name
    add = next(n for n in qdq.graph.node if n.name == "residual_add")
    producers = {o: n for n in qdq.graph.node for o in n.output}
    assert producers[add.input[0]].op_type == "Conv"  # fused branch stays float
    assert producers[add.input[1]].op_type == "DequantizeLinear"  # skip branch quantized
    # no output quantization, float biases
    quantized = {n.input[0] for n in qdq.graph.node if n.op_type == "QuantizeLinear"}
    assert "y" not in quantized and "a" not in quantized
    assert inits["ba"].dtype == np.float32
    assert not any(
        n.op_type == "DequantizeLinear" and inits.get(n.input[0], np.zeros(1)).dtype == np.int32
        for n in qdq.graph.node
    )
    assert max(o.version for o in qdq.opset_import if o.domain in ("", "ai.onnx")) >= 13


def test_tensorrt_zero_points_are_zero(residual_model: Path) -> None:
    qdq, _ = _write(residual_model, placement="tensorrt")
    inits = {i.name: numpy_helper.to_array(i) for i in qdq.graph.initializer}
    for node in qdq.graph.node:
        if node.op_type in ("QuantizeLinear", "DequantizeLinear") and len(node.input) > 2:
            assert not np.any(inits[node.input[2]])


def test_onnxruntime_activations_are_uint8_symmetric_and_weights_int8_initializers(
    residual_model: Path,
) -> None:
    """uint8 activations (zero point 128 if signed, 0 after ReLU): no int8/uint8 mix for ORT's
    QDQS8ToU8 rewrite to break; weights stay int8 with zero point 0."""
    qdq, _ = _write(residual_model, placement="onnxruntime", weight_bits=7)
    inits = {i.name: numpy_helper.to_array(i) for i in qdq.graph.initializer}
    for node in qdq.graph.node:
        if node.op_type in ("QuantizeLinear", "DequantizeLinear") and len(node.input) > 2:
            zp = inits[node.input[2]]
            if node.op_type == "QuantizeLinear" or zp.ndim == 0:  # an activation's pair
                assert zp.dtype == np.uint8 and int(zp) in (0, 128)
            else:  # a per-channel weight
                assert zp.dtype == np.int8 and not np.any(zp)
    assert not any(
        v.dtype == np.float32 and v.ndim == 4 for v in inits.values()
    )  # no float conv weights left
    weights = [v for v in inits.values() if v.dtype == np.int8 and v.ndim >= 2]
    assert weights and max(int(np.abs(w).max()) for w in weights) == 63  # 7-bit


def test_onnxruntime_placement_fuses_into_integer_kernels(tmp_path: Path, residual_model: Path) -> None:
    qdq, _ = _write(residual_model, placement="onnxruntime", weight_bits=7)
    src = tmp_path / "q.onnx"
    onnx.save(qdq, src)
    options = ort.SessionOptions()
    options.optimized_model_filepath = str(tmp_path / "opt.onnx")
    options.log_severity_level = 3
    session = ort.InferenceSession(str(src), options, providers=["CPUExecutionProvider"])
    ops = [n.op_type for n in onnx.load(tmp_path / "opt.onnx").graph.node]
    assert "QLinearConv" in ops and "Conv" not in ops and "FusedConv" not in ops, ops
    assert "QGemm" in ops or "QLinearMatMul" in ops or "MatMulIntegerToFloat" in ops, ops
    x = np.random.default_rng(0).random((2, 3, 8, 8), dtype=np.float32)
    assert session.run(None, {"x": x})[0].shape == (2, 5)


def test_excluded_nodes_and_op_types_stay_float(residual_model: Path) -> None:
    qdq, plan = _write(
        residual_model, placement="tensorrt", exclude_nodes=("conv_.*",), exclude_ops=("MatMul",)
    )
    for name in ("conv_a", "conv_b", "matmul"):
        dq = _dq_of(qdq, name, 1)
        assert dq is None, name
    assert _dq_of(qdq, "gemm", 1) is not None
    assert set(plan.excluded) >= {"conv_a", "conv_b", "matmul"}


def test_bad_exclude_regex_is_refused() -> None:
    with pytest.raises(CalibrationError, match=r"bad --exclude-nodes pattern '\('"):
        QuantizeOptions(exclude_nodes=("(",))


def test_old_opset_is_raised_to_13(tmp_path: Path, residual_model: Path) -> None:
    model = onnx.load(residual_model)
    model.opset_import[0].version = 11
    path = tmp_path / "old.onnx"
    onnx.save(model, path)
    qdq, _ = _write(path, placement="tensorrt")
    assert qdq.opset_import[0].version >= 13


def test_unknown_op_types_are_the_names_neither_onnx_nor_the_model_has() -> None:
    from onnx import TensorProto, helper

    from calibration.qdq import unknown_op_types

    custom = helper.make_node("MyBlur", ["x"], ["y"], domain="vendor")
    graph = helper.make_graph(
        [custom],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])],
    )
    model = helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", 18), helper.make_opsetid("vendor", 1)]
    )
    assert unknown_op_types(["Sofmax", "Softmax", "LSTM", "MyBlur", "Gem"], model) == ["Sofmax", "Gem"]


def test_a_bias_reshaped_in_the_graph_is_a_weight_not_an_activation(tmp_path: Path) -> None:
    """ocr-cls adds its Conv biases through Reshape(Constant): the plan took those for activations
    (18 of its 72 Q/DQ pairs), which the TensorRT cache (activations only) did not list, so
    calibrate -> cache -> --from-cache gave 54 QuantizeLinear nodes against 72."""
    from onnx import TensorProto, helper

    from calibration.calibrate import CalibrationOptions, calibrate
    from calibration.modelinfo import model_io
    from calibration.sources import open_source
    from calibration.trt_cache import cache_to_qdq

    rng = np.random.default_rng(0)
    w1 = numpy_helper.from_array(rng.standard_normal((4, 3, 3, 3)).astype(np.float32), "w1")
    w2 = numpy_helper.from_array(rng.standard_normal((4, 4, 3, 3)).astype(np.float32), "w2")
    bias = helper.make_tensor("bias", TensorProto.FLOAT, [4], rng.standard_normal(4).tolist())
    shape = numpy_helper.from_array(np.array([1, 4, 1, 1], np.int64), "shape")
    graph = helper.make_graph(
        [
            helper.make_node("Constant", [], ["b"], value=bias),
            helper.make_node("Reshape", ["b", "shape"], ["b4"]),
            helper.make_node("Conv", ["x", "w1"], ["c1"]),
            helper.make_node("Add", ["c1", "b4"], ["a1"]),
            helper.make_node("Relu", ["a1"], ["r1"]),
            helper.make_node("Conv", ["r1", "w2"], ["y"]),
        ],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 3, 12, 12])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 4, 8, 8])],
        [w1, w2, shape],
    )
    path = tmp_path / "m.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
    model = onnx.load(path)
    plan = plan_quantization(model, QuantizeOptions("tensorrt"))
    assert "b4" not in plan.activations and set(plan.activations) == {"x", "r1"}
    inputs, _ = model_io(path)
    source = open_source("random", inputs, samples=8, shapes={"x": (2, 3, 12, 12)})
    result = calibrate(path, source, CalibrationOptions(algorithm="max", trt_version="8.6.1"), tmp_path / "o")
    assert result.cache is not None

    def quantized(m: onnx.ModelProto) -> set[str]:
        return {n.input[0] for n in m.graph.node if n.op_type == "QuantizeLinear"}

    from_cache, _, _ = cache_to_qdq(path, result.cache)
    activations = quantized(onnx.load(result.model)) - {"w1", "w2"}
    assert activations == quantized(from_cache) - {"w1", "w2"} == {"x", "r1"}
