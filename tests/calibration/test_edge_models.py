"""Models at the edges of Q/DQ placement: batched and 1-D MatMul weights, weights computed from constants."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from calibration.calibrate import CalibrationOptions, calibrate
from calibration.errors import NothingToQuantize
from calibration.modelinfo import model_io
from calibration.qdq import QuantizeOptions, QuantPlan, fold_computed_weights, plan_quantization
from calibration.sources import open_source
from calibration.trt_cache import cache_to_qdq, read_cache


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


def _matmul_only(
    path: Path, weight_shape: tuple[int, ...], x_shape: list[int | str], y_shape: list[int | str]
) -> Path:
    """A model whose one node is a MatMul of x and a constant weight of ``weight_shape``: batched
    (3-D, 4-D) or a vector (1-D), as onnx's test_matmul_3d / _4d / _bcast / _1d_3d have them."""
    rng = np.random.default_rng(2)
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["y"], name="mm")],
        "mm", [helper.make_tensor_value_info("x", TensorProto.FLOAT, x_shape)],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, y_shape)],
        [numpy_helper.from_array(rng.standard_normal(weight_shape).astype(np.float32), "w")],
    )  # fmt: skip
    return _save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)


def _weight_dequantizers(model: onnx.ModelProto) -> dict[str, tuple[list[int], tuple[int, ...]]]:
    """float weight name -> (the axis attribute, the scale's shape) of its DequantizeLinear."""
    inits = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    return {
        n.input[0].removesuffix("_quantized"): (
            [int(a.i) for a in n.attribute if a.name == "axis"],
            inits[n.input[1]].shape,
        )
        for n in model.graph.node
        if n.op_type == "DequantizeLinear"
        and inits.get(n.input[0]) is not None
        and inits[n.input[0]].dtype == np.int8
    }


def _optimized_ops(path: Path, tmp_path: Path) -> set[str]:
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
    options.optimized_model_filepath = str(tmp_path / "optimized.onnx")
    ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    return {n.op_type for n in onnx.load(tmp_path / "optimized.onnx").graph.node}


def test_a_batched_matmul_weight_is_quantized_with_one_scale_on_both_placements(tmp_path: Path) -> None:
    """A batched MatMul weight was left in float without a word (TensorRT's placement too): it now
    gets one scale (DequantizeLinear without axis), as TensorRT takes per-channel MatMul weights
    only on 2-D matrices; ONNX Runtime fuses its placement's into integer kernels, no float MatMul left."""
    model = _matmul3d(tmp_path / "mm3d.onnx")
    inputs, _ = model_io(model)
    source = open_source("random:3", inputs, samples=16, batch_size=4)
    feed = {"x": np.random.default_rng(5).standard_normal((2, 4, 4, 6)).astype(np.float32)}
    for placement in ("tensorrt", "onnxruntime"):
        options = CalibrationOptions(algorithm="max", placement=placement, trt_version="10.3.0")
        result = calibrate(model, source, options, tmp_path / placement)
        report = result.report_data
        assert report is not None and report.quantized_nodes == ["mm3d", "mm2d"]
        assert {(w.name, w.axis, w.channels) for w in report.weights} == {("w", None, 1), ("w2", 1, 3)}
        qdq = onnx.load(result.model)
        onnx.checker.check_model(qdq, full_check=True)
        assert _weight_dequantizers(qdq) == {"w": ([], ()), "w2": ([1], (3,))}
        if placement == "onnxruntime":  # its placement is for ONNX Runtime's kernels
            assert "MatMul" not in _optimized_ops(result.model, tmp_path)
        ref, got = _run(model, feed), _run(result.model, feed)
        assert np.corrcoef(ref.ravel(), got.ravel())[0, 1] > 0.99


def test_a_model_of_only_batched_or_vector_matmul_weights_is_calibrated(tmp_path: Path) -> None:
    """A model whose only MatMuls have a batched (test_matmul_bcast's [1, 2, 4, 2]) or 1-D weight
    was refused 'nothing to quantize (no ... MatMul with constant float32 weights ...)', which was
    false: each is quantized now, with one scale, on both placements."""
    cases = {
        "bcast": ((1, 2, 4, 2), ["N", 2, 5, 4], ["N", 2, 5, 2], (3, 2, 5, 4)),
        "vector": ((4,), ["N", 5, 4], ["N", 5], (3, 5, 4)),
    }
    for name, (w_shape, x_shape, y_shape, feed_shape) in cases.items():
        model = _matmul_only(tmp_path / f"{name}.onnx", w_shape, x_shape, y_shape)
        inputs, _ = model_io(model)
        source = open_source("random:1", inputs, samples=16, batch_size=4)
        feed = {"x": np.random.default_rng(6).standard_normal(feed_shape).astype(np.float32)}
        for placement in ("tensorrt", "onnxruntime"):
            options = CalibrationOptions(algorithm="max", placement=placement)
            result = calibrate(model, source, options, tmp_path / f"{name}-{placement}")
            assert result.report_data is not None and result.report_data.quantized_nodes == ["mm"]
            qdq = onnx.load(result.model)
            onnx.checker.check_model(qdq, full_check=True)
            assert _weight_dequantizers(qdq) == {"w": ([], ())}
            ref, got = _run(model, feed), _run(result.model, feed)
            assert np.corrcoef(ref.ravel(), got.ravel())[0, 1] > 0.99


def _constant_first(path: Path, with_weighted: bool) -> Path:
    """MatMul(a constant [5, 4], x[N, 4, 3]): the constant is the first input, not a weight;
    ``with_weighted``: then MatMul with a 2-D weight [3, 2], which is quantized."""
    rng = np.random.default_rng(3)
    nodes = [helper.make_node("MatMul", ["a", "x"], ["y"], name="left")]
    inits = [numpy_helper.from_array(rng.standard_normal((5, 4)).astype(np.float32), "a")]
    out = ["N", 5, 3]
    if with_weighted:
        nodes.append(helper.make_node("MatMul", ["y", "w"], ["z"], name="right"))
        inits.append(numpy_helper.from_array(rng.standard_normal((3, 2)).astype(np.float32), "w"))
        out = ["N", 5, 2]
    graph = helper.make_graph(
        nodes, "first", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4, 3])],
        [helper.make_tensor_value_info(nodes[-1].output[0], TensorProto.FLOAT, out)], inits,
    )  # fmt: skip
    return _save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)


def test_a_matmul_whose_constant_is_its_first_input_is_named_as_left_in_float(tmp_path: Path) -> None:
    """A MatMul whose constant operand is its first input is not quantized (only a second input is a
    weight): that was silent, and a model of only such was refused as having no MatMul with
    constant float32 weights. The refusal and a warning now name the node and why."""
    alone = _constant_first(tmp_path / "alone.onnx", with_weighted=False)
    inputs, _ = model_io(alone)
    source = open_source("random:1", inputs, samples=8, batch_size=4)
    with pytest.raises(NothingToQuantize) as refused:
        calibrate(alone, source, CalibrationOptions(algorithm="max"), tmp_path / "alone")
    assert str(refused.value).startswith(
        "alone.onnx: nothing to quantize: MatMul 'left' is left in float, its "
    )
    assert "first input" in str(refused.value)
    assert not (tmp_path / "alone").exists() or not any((tmp_path / "alone").iterdir())
    both = _constant_first(tmp_path / "both.onnx", with_weighted=True)
    result = calibrate(both, source, CalibrationOptions(algorithm="max"), tmp_path / "both")
    assert result.report_data is not None and result.report_data.quantized_nodes == ["right"]
    assert any(
        w.startswith("MatMul 'left' is left in float: its constant is its first input")
        for w in result.warnings
    )


def _computed_weight(path: Path, with_weighted: bool) -> Path:
    """MatMul(x[N, 10], Transpose(w[8, 10])), as torch.onnx wrote nn.Linear(bias=False) (onnx's
    backend test pytorch-converted/test_Linear_no_bias): the weight is computed from a constant in
    the graph, not stored as one; ``with_weighted``: then a Gemm with a stored weight, which is quantized."""
    rng = np.random.default_rng(5)
    nodes = [
        helper.make_node("Transpose", ["w"], ["wt"], perm=[1, 0], name="t"),
        helper.make_node("MatMul", ["x", "wt"], ["y"], name="fc"),
    ]
    inits = [numpy_helper.from_array(rng.standard_normal((8, 10)).astype(np.float32), "w")]
    out = ["N", 8]
    if with_weighted:
        nodes.append(helper.make_node("Gemm", ["y", "w2"], ["z"], name="head", transB=1))
        inits.append(numpy_helper.from_array(rng.standard_normal((3, 8)).astype(np.float32), "w2"))
        out = ["N", 3]
    graph = helper.make_graph(
        nodes, "computed", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 10])],
        [helper.make_tensor_value_info(nodes[-1].output[0], TensorProto.FLOAT, out)], inits,
    )  # fmt: skip
    return _save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)


def test_a_weight_computed_from_a_constant_is_folded_and_quantized(tmp_path: Path) -> None:
    """A MatMul whose weight a Transpose computes from an initializer was left in float (named as
    such, with "edgedeploy export folds constants"; alone, refused). calibrate folds the weight into
    a stored one and quantizes it like any other, whatever the placement; the input file is unchanged."""
    for with_weighted, quantized in ((False, ["fc"]), (True, ["fc", "head"])):
        source_path = _computed_weight(tmp_path / f"m{with_weighted}.onnx", with_weighted=with_weighted)
        before = source_path.read_bytes()
        inputs, _ = model_io(source_path)
        for placement in ("tensorrt", "onnxruntime"):
            source = open_source("random:1", inputs, samples=8, batch_size=4)
            out = tmp_path / f"{placement}{with_weighted}"
            result = calibrate(
                source_path, source, CalibrationOptions(algorithm="max", placement=placement), out
            )
            assert result.report_data is not None and result.report_data.quantized_nodes == quantized
            assert not any("'fc'" in w for w in result.warnings), result.warnings
            qdq = onnx.load(result.model)
            onnx.checker.check_model(qdq, full_check=True)
            assert _reads_int8_weight(qdq, "fc")
            assert not [n for n in qdq.graph.node if n.op_type == "Transpose"]  # folded, not kept beside
        assert source_path.read_bytes() == before


def test_a_weight_folding_cannot_compute_is_named_as_left_in_float(tmp_path: Path) -> None:
    """A weight computed from constants by an op no evaluator here knows (a custom domain) cannot be
    folded: it stays float, named in the refusal (alone) or a warning (beside a quantized layer)."""
    for with_weighted in (False, True):
        model = onnx.load(_computed_weight(tmp_path / "plain.onnx", with_weighted=with_weighted))
        model.graph.node[0].CopyFrom(helper.make_node("Flip", ["w"], ["wt"], name="t", domain="custom"))
        model.opset_import.append(helper.make_opsetid("custom", 1))
        path = tmp_path / f"custom{with_weighted}.onnx"
        onnx.save(model, path)
        source = open_source("random:1", model_io(path)[0], samples=8, batch_size=4)
        if not with_weighted:
            with pytest.raises(NothingToQuantize) as refused:
                calibrate(path, source, CalibrationOptions(algorithm="max"), tmp_path / "alone")
            text = str(refused.value)
            assert text.startswith(
                f"{path.name}: nothing to quantize: MatMul 'fc' is left in float, its weight 'wt' "
            ), text
            assert "Flip 't'" in text and "not be folded" in text and "\n" not in text
            assert not (tmp_path / "alone").exists() or not any((tmp_path / "alone").iterdir())
            continue
        found = _planned(model)
        assert found.quantized_nodes == ["head"]
        assert found.left_in_float["fc"].startswith("its weight 'wt' is computed in the graph from constants")


def _planned(model: onnx.ModelProto) -> QuantPlan:
    """The plan of ``model`` after the folding calibrate makes (on a copy)."""
    copy = onnx.ModelProto()
    copy.CopyFrom(model)
    fold_computed_weights(copy)
    return plan_quantization(copy, QuantizeOptions())


def _reads_int8_weight(model: onnx.ModelProto, node_name: str) -> bool:
    """Whether node ``node_name`` reads, as its second input, a DequantizeLinear of an int8 initializer."""
    node = next(n for n in model.graph.node if n.name == node_name)
    dq = next((n for n in model.graph.node if node.input[1] in n.output), None)
    inits = {i.name: i for i in model.graph.initializer}
    return (
        dq is not None
        and dq.op_type == "DequantizeLinear"
        and dq.input[0] in inits
        and inits[dq.input[0]].data_type == TensorProto.INT8
    )


def test_an_int8_weight_behind_a_transpose_is_not_folded(tmp_path: Path) -> None:
    """An int8 weight (DequantizeLinear of an int8 initializer) is not one to fold into float: the
    layer stays as it is, with no word about it, and the other layer is quantized."""
    both = _computed_weight(tmp_path / "both.onnx", with_weighted=True)
    source = open_source("random:1", model_io(both)[0], samples=8, batch_size=4)
    model = onnx.load(both)
    wq = numpy_helper.from_array(_int8_weight(model.graph.initializer[0].dims), "w")
    scale = numpy_helper.from_array(np.array(0.05, np.float32), "s")
    del model.graph.initializer[0]
    model.graph.initializer.extend([wq, scale])
    model.graph.node[0].CopyFrom(helper.make_node("DequantizeLinear", ["w", "s"], ["wf"], name="dq"))
    model.graph.node.insert(1, helper.make_node("Transpose", ["wf"], ["wt"], perm=[1, 0], name="t"))
    weight_only = _save(model, tmp_path / "weight_only.onnx")
    result = calibrate(weight_only, source, CalibrationOptions(algorithm="max"), tmp_path / "wo")
    assert result.report_data is not None and result.report_data.quantized_nodes == ["head"]
    assert not any("'fc'" in w for w in result.warnings), result.warnings
    assert [n.op_type for n in onnx.load(result.model).graph.node].count("Transpose") == 1


@pytest.mark.parametrize("placement", ["tensorrt", "onnxruntime"])
def test_onnx_backend_linear_no_bias_quantizes_its_computed_weight(tmp_path: Path, placement: str) -> None:
    """onnx's backend test pytorch-converted/test_Linear_no_bias (old torch.onnx's nn.Linear(bias=False):
    MatMul(x, Transpose(W)), IR 3, opset 6) was refused as having nothing to quantize. Its weight is
    now folded and quantized to int8; the artifact passes the full checker and matches the test's
    own expected output (cosine >= 0.99) on the test's own input; the input file is unchanged."""
    from onnx.backend.test.loader import load_model_tests

    case = next(c for c in load_model_tests(kind="pytorch-converted") if c.name == "test_Linear_no_bias")
    model_dir = Path(case.model_dir)
    source_path = tmp_path / "linear_no_bias.onnx"
    source_path.write_bytes((model_dir / "model.onnx").read_bytes())
    before = source_path.read_bytes()
    feed_in = numpy_helper.to_array(onnx.load_tensor(str(model_dir / "test_data_set_0" / "input_0.pb")))
    want = numpy_helper.to_array(onnx.load_tensor(str(model_dir / "test_data_set_0" / "output_0.pb")))
    inputs, _ = model_io(source_path)
    source = open_source("random:1", inputs, samples=16, batch_size=4)
    trt = "10.3" if placement == "tensorrt" else None
    options = CalibrationOptions(algorithm="max", placement=placement, trt_version=trt)
    result = calibrate(source_path, source, options, tmp_path / "out")
    assert source_path.read_bytes() == before
    assert result.report_data is not None and result.report_data.quantized_nodes == ["MatMul#1"]
    qdq = onnx.load(result.model)
    onnx.checker.check_model(qdq, full_check=True)
    assert _reads_int8_weight(qdq, "MatMul#1")
    session = ort.InferenceSession(str(result.model), providers=["CPUExecutionProvider"])
    got = session.run(None, {session.get_inputs()[0].name: feed_in})[0]
    cosine = float(np.dot(got.ravel(), want.ravel()) / (np.linalg.norm(got) * np.linalg.norm(want)))
    assert cosine >= 0.99, cosine
    if result.cache is not None:  # the Q/DQ model made from the TensorRT cache folds it too
        from_cache, uncovered, _ = cache_to_qdq(source_path, result.cache)
        onnx.checker.check_model(from_cache, full_check=True)
        assert _reads_int8_weight(from_cache, "MatMul#1") and uncovered == []


def _int8_weight(dims: Sequence[int]) -> np.ndarray:
    return np.random.default_rng(6).integers(-127, 128, size=tuple(dims)).astype(np.int8)


def test_a_matmul_of_two_float64_activations_is_named_as_left_in_float(tmp_path: Path) -> None:
    """A MatMul of two activations is quantized (both inputs get Q/DQ) when they are float32; of two
    float64 ones (onnx's backend test node/test_flexattention_double_expanded_ver26) it stays float,
    and the refusal said "no ... MatMul with constant float32 weights" instead of why. It now names
    the node and the inputs' type, as for a weighted node whose activation is not float32."""
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["a", "b"], ["y"], name="mm")], "double",
        [helper.make_tensor_value_info("a", TensorProto.DOUBLE, ["N", 4, 3]),
         helper.make_tensor_value_info("b", TensorProto.DOUBLE, ["N", 3, 2])],
        [helper.make_tensor_value_info("y", TensorProto.DOUBLE, ["N", 4, 2])],
    )  # fmt: skip
    path = _save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), tmp_path / "d.onnx")
    for placement in ("tensorrt", "onnxruntime"):
        source = open_source("random:1", model_io(path)[0], samples=8, batch_size=4)
        with pytest.raises(NothingToQuantize) as refused:
            calibrate(path, source, CalibrationOptions(algorithm="max", placement=placement), tmp_path / "o")
        assert str(refused.value) == (
            "d.onnx: nothing to quantize: MatMul 'mm' is left in float, "
            "its inputs 'a', 'b' are float64, not float32"
        )
        assert not (tmp_path / "o").exists() or not any((tmp_path / "o").iterdir())


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
