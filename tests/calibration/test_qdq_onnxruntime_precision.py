"""ONNX Runtime's placement keeps precision where it costs no integer kernel: asymmetric uint8 for
one-sided activations (SiLU outputs), float logits out of a Gemm that feeds no integer op."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

from calibration.calibrate import CalibrationOptions, calibrate
from calibration.modelinfo import model_io
from calibration.qdq import QuantizeOptions, check_qdq, plan_quantization, write_qdq
from calibration.sources import open_source


def silu_model(path: Path, relu_after: bool = False) -> Path:
    """Conv -> SiLU (x * sigmoid(x), never below -0.28) -> Conv; ``relu_after``: a ReLU between
    the SiLU and the second Conv (it follows no weighted op)."""
    rng = np.random.default_rng(0)
    w = [numpy_helper.from_array(rng.normal(0, 0.4, s).astype(np.float32), f"w{i}")
         for i, s in enumerate([(16, 4, 3), (8, 16, 3)])]  # fmt: skip
    nodes = [
        helper.make_node("Conv", ["x", "w0"], ["a"], pads=[1, 1], name="conv0"),
        helper.make_node("Sigmoid", ["a"], ["s"], name="sig"),
        helper.make_node("Mul", ["a", "s"], ["silu"], name="silu"),
        *([helper.make_node("Relu", ["silu"], ["r"], name="relu")] if relu_after else []),
        helper.make_node("Conv", ["r" if relu_after else "silu", "w1"], ["y"], pads=[1, 1], name="conv1"),
    ]
    graph = helper.make_graph(
        nodes,
        "relu_late" if relu_after else "silu",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 4, 32])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 8, 32])],
        w,
    )
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
    return path


def _error(model: onnx.ModelProto, reference: Path, x: np.ndarray) -> float:
    cpu = ["CPUExecutionProvider"]
    ref = ort.InferenceSession(str(reference), providers=cpu).run(None, {"x": x})[0]
    got = ort.InferenceSession(model.SerializeToString(), providers=cpu).run(None, {"x": x})[0]
    return float(((got - ref) ** 2).sum() / (ref**2).sum())


def test_silu_output_gets_asymmetric_uint8_and_a_smaller_error_than_symmetric(tmp_path: Path) -> None:
    path = silu_model(tmp_path / "silu.onnx")
    model = onnx.load(path)
    x = np.random.default_rng(1).standard_normal((16, 4, 32)).astype(np.float32)
    errors = {}
    for asymmetric in (False, True):
        plan = plan_quantization(model, QuantizeOptions("onnxruntime", 8, asymmetric=asymmetric))
        marked = onnx.load(path)
        inner = [n for n in plan.levels() if n != "x"]
        marked.graph.output.extend(helper.make_empty_tensor_value_info(n) for n in inner)
        outs = ort.InferenceSession(marked.SerializeToString(), providers=["CPUExecutionProvider"]).run(
            None, {"x": x}
        )
        named = {"x": x, **dict(zip([o.name for o in marked.graph.output], outs, strict=True))}
        thresholds, extents = {}, {}
        for name in plan.levels():
            thresholds[name] = float(np.abs(named[name]).max())
            extents[name] = (float(named[name].min()), float(named[name].max()))
        qdq = write_qdq(model, plan, thresholds, extents)
        check_qdq(qdq, "onnxruntime", source=model)
        zero_points = {
            i.name: int(numpy_helper.to_array(i))
            for i in qdq.graph.initializer
            if i.name.endswith("_zero_point") and i.data_type == TensorProto.UINT8
        }
        if asymmetric:
            # SiLU's minimum is about -0.28 of a maximum near 3: its zero point sits near the bottom
            assert 0 < zero_points["silu_zero_point"] < 40
        else:
            assert zero_points["silu_zero_point"] == 128
        errors[asymmetric] = _error(qdq, path, x)
    assert errors[True] < 0.7 * errors[False]


def test_asymmetric_ranges_survive_the_calibration_cache(tmp_path: Path) -> None:
    path = silu_model(tmp_path / "silu.onnx")
    x = np.random.default_rng(2).standard_normal((64, 4, 32)).astype(np.float32)
    np.savez(tmp_path / "calib.npz", x=x)
    inputs, _ = model_io(path)
    source = open_source(str(tmp_path / "calib.npz"), inputs, batch_size=8)
    options = CalibrationOptions(algorithm="max", placement="onnxruntime")
    first = calibrate(path, source, options, tmp_path / "out")
    silu = next(t for t in first.tensors if t.name == "silu")
    assert silu.minimum is not None and -0.3 < silu.minimum < -0.2 and silu.zero_point not in (0, 128)
    written = first.model.read_bytes()
    first.model.unlink()  # the artifact is rewritten from the report alone
    again = calibrate(path, source, options, tmp_path / "out")
    assert again.reused and again.model.read_bytes() == written


def test_gemm_logits_reaching_the_output_through_a_reshape_stay_float_and_fuse_into_qgemm(
    tmp_path: Path,
) -> None:
    rng = np.random.default_rng(3)
    w = numpy_helper.from_array(rng.normal(0, 0.3, (4, 8, 3)).astype(np.float32), "w")
    fc = numpy_helper.from_array(rng.normal(0, 0.3, (10, 4 * 16)).astype(np.float32), "fc")
    bias = numpy_helper.from_array(rng.normal(0, 0.1, (10,)).astype(np.float32), "fc_bias")
    shape = numpy_helper.from_array(np.array([-1, 2, 5], np.int64), "shape")
    nodes = [
        helper.make_node("Conv", ["x", "w"], ["c"], pads=[1, 1], name="conv"),
        helper.make_node("Relu", ["c"], ["r"], name="relu"),
        helper.make_node("Flatten", ["r"], ["f"], name="flatten"),
        helper.make_node("Gemm", ["f", "fc", "fc_bias"], ["logits"], transB=1, name="fc"),
        helper.make_node("Reshape", ["logits", "shape"], ["y"], name="reshape"),
    ]
    graph = helper.make_graph(
        nodes,
        "head",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 4, 16])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 2, 5])],
        [w, fc, bias, shape],
    )
    path = tmp_path / "head.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
    model = onnx.load(path)
    plan = plan_quantization(model, QuantizeOptions("onnxruntime", 8))
    assert "logits" not in plan.activations and "fc" in plan.quantized_nodes
    qdq = write_qdq(model, plan, dict.fromkeys(plan.levels(), 4.0))
    check_qdq(qdq, "onnxruntime", source=model)
    options = ort.SessionOptions()
    options.optimized_model_filepath = str(tmp_path / "optimized.onnx")
    ort.InferenceSession(qdq.SerializeToString(), options, providers=["CPUExecutionProvider"])
    assert "QGemm" in {n.op_type for n in onnx.load(tmp_path / "optimized.onnx").graph.node}


def test_the_calibration_table_shows_the_stored_type_and_zero_point() -> None:
    from calibration.report import TensorReport, stored_type

    assert stored_type(TensorReport("a", 1.0, 1.0, 0.01, 0.0)) == "int8"
    assert stored_type(TensorReport("r", 1.0, 1.0, 0.01, 0.0, dtype="uint8")) == "uint8"
    # ONNX Runtime's placement: a signed tensor as uint8 over its observed range
    assert stored_type(TensorReport("x", 1.0, 1.0, 0.01, 0.0, "uint8", zero_point=126)) == "uint8 (zp 126)"
