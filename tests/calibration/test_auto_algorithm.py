"""The ``auto`` algorithm chooses thresholds by the error they cause on held-out samples."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

from calibration.calibrate import CalibrationOptions, calibrate
from calibration.modelinfo import model_io
from calibration.select import fake_quant, scored_tensors
from calibration.sources import open_source

COLS = 256


def two_branch_model(path: Path) -> Path:
    """ya = a @ Wa (row 0 of Wa large: a's rare outliers carry the output); yb = b @ Wb."""
    rng = np.random.default_rng(0)
    wa = rng.normal(0, 0.1, (COLS, 8)).astype(np.float32)
    wa[0] = 10.0
    wb = rng.normal(0, 0.1, (COLS, 8)).astype(np.float32)
    graph = helper.make_graph(
        [
            helper.make_node("MatMul", ["a", "wa"], ["ya"], name="mm_a"),
            helper.make_node("MatMul", ["b", "wb"], ["yb"], name="mm_b"),
        ],
        "two",
        [helper.make_tensor_value_info(n, TensorProto.FLOAT, ["n", COLS]) for n in ("a", "b")],
        [helper.make_tensor_value_info(n, TensorProto.FLOAT, ["n", 8]) for n in ("ya", "yb")],
        [numpy_helper.from_array(wa, "wa"), numpy_helper.from_array(wb, "wb")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx.save(model, path)
    return path


def data(rows: int, seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    a = rng.standard_normal((rows, COLS)).astype(np.float32)
    a[np.arange(rows) % 64 == 58, 0] = 40.0  # rare (< 0.01 % of values) but they decide ya (row 58: held out)
    b = rng.standard_normal((rows, COLS)).astype(np.float32)
    b[3, 7] = 1000.0  # one glitch in the first batch: the max rule would waste the range on it
    return {"a": a, "b": b}


def test_auto_keeps_outliers_a_layer_needs_and_clips_a_glitch_it_does_not(tmp_path: Path) -> None:
    model = two_branch_model(tmp_path / "two.onnx")
    np.savez(tmp_path / "calib.npz", **data(256, 1))
    inputs, _ = model_io(model)
    source = open_source(str(tmp_path / "calib.npz"), inputs, batch_size=16)
    result = calibrate(model, source, CalibrationOptions(algorithm="auto"), tmp_path / "out")
    report = json.loads(result.report.read_text())
    by_name = {t["name"]: t for t in report["tensors"]}
    assert by_name["a"]["threshold"] >= 0.9 * 40.0  # the outliers survive
    assert by_name["b"]["threshold"] <= 10.0 and by_name["b"]["rule"] != "max"  # the glitch is clipped
    selection = report["selection"]
    assert selection["winner"] == "per-tensor" and selection["held_out_samples"] == 16
    scores, screened = selection["held_out_cosine"], selection["screened_cosine"]
    for rule in ("max", "entropy", "percentile"):  # behind, or screened out on the first held-out run
        assert scores.get(rule, screened[rule]) < scores["per-tensor"], selection

    evaluate = data(128, 2)
    evaluate["b"][3, 7] = 0.0
    ref = ort.InferenceSession(str(model)).run(None, evaluate)
    got = ort.InferenceSession(str(result.model)).run(None, evaluate)
    for r, g in zip(ref, got, strict=True):
        assert float(r.ravel() @ g.ravel() / np.linalg.norm(r) / np.linalg.norm(g)) > 0.999


def test_fake_quant_matches_onnx_quantize_dequantize() -> None:
    x = np.linspace(-3, 3, 101, dtype=np.float32)
    scale = np.float32(2.0 / 127)
    node_q = helper.make_node("QuantizeLinear", ["x", "s", "z"], ["q"])
    node_dq = helper.make_node("DequantizeLinear", ["q", "s", "z"], ["y"])
    graph = helper.make_graph(
        [node_q, node_dq],
        "qdq",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [101])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [101])],
        [numpy_helper.from_array(np.array(scale), "s"), numpy_helper.from_array(np.array(0, np.int8), "z")],
    )
    m = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    want = ort.InferenceSession(m.SerializeToString()).run(None, {"x": x})[0]
    np.testing.assert_allclose(fake_quant(x, 2.0, unsigned=False), want, atol=1e-6)


def test_model_level_score_compares_logits_before_a_softmax_behind_an_identity() -> None:
    graph = helper.make_graph(
        [
            helper.make_node("Softmax", ["logits"], ["p"]),
            helper.make_node("Identity", ["p"], ["out"]),
            helper.make_node("Relu", ["logits"], ["r"]),
        ],
        "s",
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [1, 4])],
        [
            helper.make_tensor_value_info("out", TensorProto.FLOAT, [1, 4]),
            helper.make_tensor_value_info("r", TensorProto.FLOAT, [1, 4]),
        ],
    )
    assert scored_tensors(helper.make_model(graph)) == ["logits", "r"]


def power_model(path: Path, side_conv: bool = False) -> Path:
    """A spectrogram-like front end: two Convs, squares summed by an Add, sqrt, then a Conv
    (``side_conv``: a second Conv reads the sum itself, as a second output)."""
    rng = np.random.default_rng(3)
    w = [numpy_helper.from_array(rng.normal(0, 0.5, s).astype(np.float32), f"w{i}")
         for i, s in enumerate([(8, 1, 9), (8, 1, 9), (16, 8, 3), (16, 8, 3)])]  # fmt: skip
    # 16 output channels: no narrow convolution for auto to measure in float (test_narrow_convs.py)
    nodes = [
        helper.make_node("Conv", ["x", "w0"], ["re"], pads=[4, 4], name="conv_re"),
        helper.make_node("Conv", ["x", "w1"], ["im"], pads=[4, 4], name="conv_im"),
        helper.make_node("Mul", ["re", "re"], ["re2"], name="sq_re"),
        helper.make_node("Mul", ["im", "im"], ["im2"], name="sq_im"),
        helper.make_node("Add", ["re2", "im2"], ["power"], name="power"),
        helper.make_node("Sqrt", ["power"], ["mag"], name="mag"),
        helper.make_node("Conv", ["mag", "w2"], ["y"], pads=[1, 1], name="head"),
    ]
    outputs = [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 16, 64])]
    if side_conv:
        nodes.append(helper.make_node("Conv", ["power", "w3"], ["z"], pads=[1, 1], name="side"))
        outputs.append(helper.make_tensor_value_info("z", TensorProto.FLOAT, ["n", 16, 64]))
    graph = helper.make_graph(
        nodes,
        "power",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 1, 64])],
        outputs,
        w if side_conv else w[:3],
    )
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
    return path


def _power_calibration(tmp_path: Path, side_conv: bool) -> tuple[Path, Any, CalibrationOptions]:
    model = power_model(tmp_path / "power.onnx", side_conv=side_conv)
    rng = np.random.default_rng(4)
    loud = 10.0 ** rng.uniform(-2, 1, (128, 1, 1))  # quiet and loud frames: a wide dynamic range
    np.savez(tmp_path / "calib.npz", x=(rng.standard_normal((128, 1, 64)) * loud).astype(np.float32))
    inputs, _ = model_io(model)
    source = open_source(str(tmp_path / "calib.npz"), inputs, batch_size=8)
    return model, source, CalibrationOptions(algorithm="auto", placement="onnxruntime")


def test_onnxruntime_placement_leaves_an_add_without_integer_consumer_in_float(tmp_path: Path) -> None:
    """The sum of squares feeds only a float Sqrt: int8 there would lose precision for nothing."""
    model, source, options = _power_calibration(tmp_path, side_conv=False)
    result = calibrate(model, source, options, tmp_path / "out")
    report = json.loads(result.report.read_text())
    assert "power" not in report["quantized_nodes"] and {"conv_re", "conv_im", "head"} <= set(
        report["quantized_nodes"]
    )
    outputs = {o for n in onnx.load(result.model).graph.node for o in n.output}
    assert "power_quantized" not in outputs and "re2_quantized" not in outputs
    again = calibrate(model, source, options, tmp_path / "out")  # reuse keeps the plan
    assert again.skipped


def test_auto_on_onnxruntime_placement_measures_leaving_the_add_of_squares_in_float(tmp_path: Path) -> None:
    model, source, options = _power_calibration(tmp_path, side_conv=True)  # the sum feeds a Conv
    result = calibrate(model, source, options, tmp_path / "out")
    selection = json.loads(result.report.read_text())["selection"]
    (other, score), *rest = selection["placement_alternatives"].items()
    assert not rest and other in (
        "quantize all",
        "leave Add, Concat, AveragePool, GlobalAveragePool in float",
    )
    assert selection["held_out_cosine"][selection["winner"]] >= score  # the better plan was kept
    assert ("Add" in selection["exclude_ops"]) == (other == "quantize all")
    again = calibrate(model, source, options, tmp_path / "out")  # reuse keeps the chosen plan
    assert again.skipped
