"""calibration.ortvalues.run_views: ONNX Runtime's outputs without run's copy, the same values."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper


def _session(model: onnx.ModelProto) -> object:
    import onnxruntime as ort

    return ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])


def _model(nodes: list[onnx.NodeProto], outputs: list[onnx.ValueInfoProto]) -> onnx.ModelProto:
    graph = helper.make_graph(
        nodes, "m", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 3])], outputs
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model


def test_views_hold_runs_values_and_outlive_the_next_run() -> None:
    from calibration.ortvalues import run_views

    model = _model(
        [helper.make_node("Relu", ["x"], ["r"]), helper.make_node("Neg", ["r"], ["y"])],
        [helper.make_tensor_value_info(n, TensorProto.FLOAT, None) for n in ("r", "y")],
    )
    session = _session(model)
    rng = np.random.default_rng(0)
    first, second = (rng.standard_normal((4, 3)).astype(np.float32) for _ in range(2))
    got = run_views(session, ["r", "y"], {"x": first})
    expected = session.run(["r", "y"], {"x": first})  # type: ignore[attr-defined]
    for a, b in zip(got, expected, strict=True):
        np.testing.assert_array_equal(a, b)
    later = run_views(session, ["y"], {"x": second})
    np.testing.assert_array_equal(got[1], expected[1])  # not overwritten by the later run
    np.testing.assert_array_equal(later[0], -np.maximum(second, 0))
    got[0][...] = 7.0  # writable, the caller's own
    assert float(got[0].sum()) == 84.0


def test_an_output_numpy_cannot_view_comes_from_run() -> None:
    from calibration.ortvalues import run_views

    seq = onnx.helper.make_tensor_sequence_value_info("s", TensorProto.FLOAT, None)
    model = _model([helper.make_node("SequenceConstruct", ["x", "x"], ["s"])], [seq])
    x = np.ones((2, 3), np.float32)
    (got,) = run_views(_session(model), ["s"], {"x": x})
    assert len(got) == 2 and np.array_equal(got[0], x)


def test_string_feeds_run_as_run_takes_them() -> None:
    """A string input (text as a str or object array) failed with ONNX Runtime's "Creation of
    OrtValues is currently only supported from non-string numpy arrays": no OrtValue holds text,
    so such a feed goes through ``run``, with the same outputs."""
    from calibration.ortvalues import run_views

    encode = helper.make_node(
        "LabelEncoder", ["s"], ["y"], domain="ai.onnx.ml",
        keys_strings=["a", "b"], values_floats=[1.0, 2.0], default_float=0.5,
    )  # fmt: skip
    graph = helper.make_graph(
        [encode, helper.make_node("Relu", ["y"], ["r"])], "m",
        [helper.make_tensor_value_info("s", TensorProto.STRING, ["n"])],
        [helper.make_tensor_value_info(n, TensorProto.FLOAT, ["n"]) for n in ("y", "r")],
    )  # fmt: skip
    opsets = [helper.make_opsetid("", 17), helper.make_opsetid("ai.onnx.ml", 3)]
    model = helper.make_model(graph, opset_imports=opsets)
    model.ir_version = 8
    session = _session(model)
    for text in (np.array(["a", "b", "zz"]), np.array(["b", "", "a"], dtype=object)):
        got = run_views(session, ["y", "r"], {"s": text})
        want = {"a": 1.0, "b": 2.0}
        np.testing.assert_array_equal(got[0], np.array([want.get(t, 0.5) for t in text], np.float32))
        np.testing.assert_array_equal(got[1], got[0])
