"""auto's candidate sessions (calibration/select.py _session) take the Q/DQ model's large float and
int8 weights as in-memory arrays (calibration/observers.py weights_in_memory): the same outputs, bit
for bit, as a session of the serialized model, with ONNX Runtime's integer kernels and emulated."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from calibration.observers import (
    IN_MEMORY_BYTES,
    emulate_integer_kernels,
    outputs_appended,
    weights_in_memory,
)
from calibration.qdq import QuantizeOptions, plan_quantization, write_qdq
from calibration.select import _session


def _model() -> onnx.ModelProto:
    """Conv and MatMul (large weights: int8 in the Q/DQ model) with a large float offset (kept in
    float) and a small Gemm: in memory go the large ones only."""
    rng = np.random.default_rng(3)
    conv = rng.normal(0, 0.2, (64, 16, 3, 3)).astype(np.float32)  # 9216 int8 bytes
    wide = rng.normal(0, 0.2, (8, 2048)).astype(np.float32)
    small = rng.normal(0, 0.2, (4, 3)).astype(np.float32)
    nodes = [
        helper.make_node("Conv", ["x", "conv"], ["c"], pads=[1, 1, 1, 1], name="conv"),
        helper.make_node("Relu", ["c"], ["r"], name="relu"),
        helper.make_node("ReduceMean", ["r"], ["m"], axes=[2, 3], keepdims=0, name="pool"),
        helper.make_node("Slice", ["m", "begin", "end", "axis"], ["s"], name="slice"),
        helper.make_node("MatMul", ["s", "wide"], ["p"], name="wide"),
        helper.make_node("Add", ["p", "offset"], ["y"], name="offset"),
        helper.make_node("Slice", ["m", "begin", "end3", "axis"], ["t"], name="slice3"),
        helper.make_node("Gemm", ["t", "small"], ["z"], name="small"),
    ]
    inits = [
        numpy_helper.from_array(conv, "conv"),
        numpy_helper.from_array(wide, "wide"),
        numpy_helper.from_array(small, "small"),
        numpy_helper.from_array(rng.normal(0, 1, (2048,)).astype(np.float32), "offset"),
        numpy_helper.from_array(np.array([0], np.int64), "begin"),
        numpy_helper.from_array(np.array([8], np.int64), "end"),
        numpy_helper.from_array(np.array([4], np.int64), "end3"),
        numpy_helper.from_array(np.array([1], np.int64), "axis"),
    ]
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 16, 12, 12])],
        [helper.make_tensor_value_info(n, TensorProto.FLOAT, None) for n in ("y", "z")],
        inits,
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])


@pytest.mark.parametrize("placement", [("tensorrt", 8), ("onnxruntime", 7)])
@pytest.mark.parametrize("emulate", [False, True])
def test_candidate_session_computes_what_the_serialized_q_dq_model_does(
    placement: tuple[str, int], emulate: bool
) -> None:
    model = _model()
    plan = plan_quantization(model, QuantizeOptions(placement[0], placement[1]))
    thresholds = dict.fromkeys(plan.calibrated_tensors(), 3.0)
    qdq = write_qdq(model, plan, thresholds)
    light, found, _ = weights_in_memory(qdq)
    kinds = {i.name: i.data_type for i in qdq.graph.initializer if i.name in found}
    assert kinds.get("conv_quantized") == kinds.get("wide_quantized") == TensorProto.INT8
    assert kinds.get("offset") == TensorProto.FLOAT
    assert not any("small" in name for name in kinds) and IN_MEMORY_BYTES >= 4 * 12  # small ones inline
    assert not any(i.raw_data for i in light.graph.initializer if i.name in found)

    options = ort.SessionOptions()
    if emulate:
        emulate_integer_kernels(options)
    data = outputs_appended(qdq.SerializeToString(), qdq, ["r"])  # every weight serialized
    serialized = ort.InferenceSession(data, options, providers=["CPUExecutionProvider"])
    candidate = _session(qdq, ["r"], emulate)
    rng = np.random.default_rng(4)
    for _ in range(2):
        feed = {"x": rng.normal(0, 1, (2, 16, 12, 12)).astype(np.float32)}
        want = serialized.run(["y", "z", "r"], feed)
        got = candidate.run(["y", "z", "r"], feed)
        for a, b in zip(got, want, strict=True):
            np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("placement", [("tensorrt", 8), ("onnxruntime", 7)])
def test_the_per_tensor_steps_node_sessions_take_their_weights_in_memory_with_the_same_outputs(
    placement: tuple[str, int],
) -> None:
    """Each quantized consumer's one-node session (select._NodeRunner) gets its large dequantized
    weight as an array, not serialized into the node's model and parsed again by ONNX Runtime
    (most of the 0.3 s that ddddocr's recognizer's 22 node sessions took): the same outputs, bit
    for bit, as a session of the node's model with the weight stored in it."""
    from calibration.qdq import constant_values, dequantized_weight, quantized_weight
    from calibration.select import WEIGHTED_OPS, _NodeRunner

    model = _model()
    plan = plan_quantization(model, QuantizeOptions(*placement))
    consts = constant_values(model)
    rng = np.random.default_rng(4)
    feeds = {
        "x": rng.normal(0, 1, (2, 16, 12, 12)).astype(np.float32),
        "s": rng.normal(0, 1, (2, 8)).astype(np.float32),
        "t": rng.normal(0, 1, (2, 4)).astype(np.float32),
    }
    checked = set()
    for index, node in enumerate(model.graph.node):
        if node.op_type not in WEIGHTED_OPS:
            continue
        runner = _NodeRunner(model, index, plan, consts, {})
        weight = node.input[1]
        wq = next((w for w in plan.weights.values() if (index, 1) in w.uses), None)
        value = consts[weight]
        if wq is not None:
            q, scale = quantized_weight(model, weight, wq.axis, plan.options.weight_qmax, None, value)
            value = dequantized_weight(q, scale, wq.axis)
        single = helper.make_node(node.op_type, list(node.input), [node.output[0]], name=node.name)
        single.attribute.extend(node.attribute)
        graph = helper.make_graph(
            [single],
            "consumer",
            [helper.make_tensor_value_info(node.input[0], TensorProto.FLOAT, None)],
            [helper.make_tensor_value_info(node.output[0], TensorProto.FLOAT, None)],
            [numpy_helper.from_array(value, weight)],
        )
        stored = helper.make_model(graph, opset_imports=list(model.opset_import))
        stored.ir_version = model.ir_version
        options = ort.SessionOptions()
        options.intra_op_num_threads = 1
        data = stored.SerializeToString()
        serialized = ort.InferenceSession(data, options, providers=["CPUExecutionProvider"])
        feed = {node.input[0]: feeds[node.input[0]]}
        got = runner.run_float32(feed)
        assert np.array_equal(got, serialized.run(None, feed)[0])
        if value.nbytes > IN_MEMORY_BYTES:
            assert len(getattr(runner.session, "_in_memory_weights", ())) == 1, node.name
            checked.add(node.name)
    assert checked == {"conv", "wide"}  # the small Gemm's weight stays in the node's model


def test_the_conversion_checks_sessions_take_their_weights_in_memory_with_the_same_outputs(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """calibration.artifacts.model_outputs of a model in memory (an opset conversion's check runs
    the source and the converted model so, before any calibration work) hands its large weights to
    ONNX Runtime as arrays instead of serializing them with the model for ONNX Runtime to parse
    again: the same outputs, bit for bit, as the serialized model's session at the check's level."""
    import calibration.observers as observers
    from calibration.artifacts import _session as check_session
    from calibration.artifacts import model_outputs

    made: list[int] = []
    real = observers.in_memory_session

    def spy(*args: object, **kwargs: object) -> object:
        session = real(*args, **kwargs)  # type: ignore[arg-type]
        made.append(len(session._in_memory_weights))
        return session

    monkeypatch.setattr(observers, "in_memory_session", spy)
    model = _model()
    feed = {"x": np.random.default_rng(5).normal(0, 1, (2, 16, 12, 12)).astype(np.float32)}
    got = model_outputs(model, feed)
    assert made == [3]  # conv, wide and offset in memory; the small Gemm weight serialized
    want = check_session(model.SerializeToString(), model).run(None, feed)
    for a, b in zip(got, want, strict=True):
        np.testing.assert_array_equal(a, b)


def test_a_model_onnx_runtime_refuses_is_refused_in_the_words_of_its_serialized_session() -> None:
    """Where the in-memory session cannot be made, model_outputs says ONNX Runtime's reason as the
    serialized model's session gives it (load_error's words, which check_conversion compares)."""
    from calibration.artifacts import load_error, model_outputs
    from calibration.graphs import ort_error

    model = _model()
    model.graph.node[1].name = model.graph.node[0].name  # two nodes of one name: ORT refuses it
    why = load_error(model)
    assert why is not None
    with pytest.raises(Exception) as caught:
        model_outputs(model, {"x": np.zeros((1, 16, 12, 12), np.float32)})
    assert ort_error(caught.value) == why
