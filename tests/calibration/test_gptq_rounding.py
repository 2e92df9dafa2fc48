"""GPTQ weight rounding (calibration/rounding.py): the rows a layer multiplies its weight with, the
rounding itself against round-to-nearest, and auto keeping it only where the held-out samples
score it higher (calibration/select.py rounding_checked)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

import calibration.select as select_module
from calibration.calibrate import CalibrationOptions, calibrate
from calibration.modelinfo import model_io
from calibration.qdq import QuantizeOptions, constant_values, plan_quantization, quantized_weight
from calibration.report import content_digest
from calibration.rounding import InputMoments, Layer, gptq, layer_rows, layers, rounded_weights
from calibration.select import ROUNDED
from calibration.sources import open_source

CPU = ["CPUExecutionProvider"]


def _conv_model(
    cin: int, cout: int, kernel: tuple[int, ...], group: int = 1, **attrs: object
) -> tuple[onnx.ModelProto, np.ndarray]:
    rng = np.random.default_rng(0)
    w = rng.normal(0, 0.3, (cout, cin // group, *kernel)).astype(np.float32)
    dims = ["n", cin, *(["s"] * len(kernel))]
    node = helper.make_node("Conv", ["x", "w"], ["y"], name="conv", group=group, **attrs)
    graph = helper.make_graph(
        [node],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, dims)],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
        [numpy_helper.from_array(w, "w")],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), w


CONVS = [
    ((4, 6, (3, 3), 1), {"pads": [1, 1, 1, 1]}),
    ((4, 6, (3, 3), 2), {"pads": [0, 1, 2, 1], "strides": [2, 1]}),
    ((6, 6, (3, 3), 6), {"pads": [1, 1, 1, 1], "dilations": [2, 2]}),  # depthwise
    ((4, 8, (1, 1), 1), {}),
    ((3, 5, (5,), 1), {"pads": [2, 1], "strides": [3]}),  # 1-D
    # auto_pad (TensorFlow exports): one padding more after the input (UPPER) or before it (LOWER)
    ((4, 6, (2, 2), 1), {"auto_pad": "SAME_UPPER"}),
    ((4, 6, (2, 2), 2), {"auto_pad": "SAME_LOWER"}),
    ((4, 6, (3, 3), 1), {"auto_pad": "SAME_UPPER", "strides": [2, 2]}),
    ((3, 5, (4,), 1), {"auto_pad": "SAME_LOWER", "strides": [3]}),
    ((4, 6, (3, 3), 1), {"auto_pad": "VALID", "strides": [2, 1]}),
]


@pytest.mark.parametrize(("shape", "attrs"), CONVS)
def test_conv_rows_times_the_weight_are_the_conv_outputs(shape: tuple, attrs: dict) -> None:
    cin, cout, kernel, group = shape
    model, w = _conv_model(cin, cout, kernel, group, **attrs)
    x = np.random.default_rng(1).normal(0, 1, (2, cin, *([11] * len(kernel)))).astype(np.float32)
    y = ort.InferenceSession(model.SerializeToString(), providers=CPU).run(None, {"x": x})[0]
    layer = Layer("w", 0, model.graph.node[0], group, int(np.prod(w.shape[1:])))
    rows = layer_rows(layer, x, kernel, 1 << 20)
    assert rows is not None
    per_group = w.reshape(group, cout // group, -1)
    got = np.einsum("grc,goc->rgo", rows, per_group).reshape(rows.shape[1], cout)  # (n x positions, cout)
    expected = np.moveaxis(y, 1, -1).reshape(-1, cout)
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-4)


def _im2col(x: np.ndarray, node: onnx.NodeProto, kernel: tuple[int, ...], group: int) -> np.ndarray:
    """Every output position's input patch, one Python loop per position and tap: (groups, rows, columns)."""
    from calibration.qdq import conv_axes

    axes = conv_axes(node, kernel, x.shape[2:])
    assert axes is not None
    strides, dilations, begins, outs = zip(*axes, strict=True)
    rows = []
    for sample in range(x.shape[0]):
        for out in np.ndindex(*outs):
            patch = np.zeros((x.shape[1], *kernel), np.float32)
            for tap in np.ndindex(*kernel):
                at = [out[d] * strides[d] + tap[d] * dilations[d] - begins[d] for d in range(len(kernel))]
                if all(0 <= a < n for a, n in zip(at, x.shape[2:], strict=True)):
                    patch[(slice(None), *tap)] = x[(sample, slice(None), *at)]
            rows.append(patch.reshape(group, -1))
    return np.ascontiguousarray(np.stack(rows).transpose(1, 0, 2))


@pytest.mark.parametrize(("shape", "attrs"), CONVS)
def test_conv_rows_are_the_input_patches_bit_for_bit(shape: tuple, attrs: dict) -> None:
    cin, cout, kernel, group = shape
    model, w = _conv_model(cin, cout, kernel, group, **attrs)
    x = np.random.default_rng(3).normal(0, 1, (2, cin, *([7] * len(kernel)))).astype(np.float32)
    x[0, 0] = -0.0  # signed zeros are copied as they are; the padding is +0.0
    layer = Layer("w", 0, model.graph.node[0], group, int(np.prod(w.shape[1:])))
    rows = layer_rows(layer, x, kernel, 1 << 20)
    assert rows is not None and rows.dtype == np.float32 and rows.flags.c_contiguous
    expected = _im2col(x, model.graph.node[0], kernel, group)
    assert rows.tobytes() == expected.tobytes()


def test_moments_unfold_each_input_shape_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The im2col gather of a layer's input is worked out once per input shape, not per batch (it
    was most of the moments' time on ddddocr's detector), with the same moments as batch by batch."""
    import calibration.rounding as rounding

    model = onnx.load(_two_layer_model(tmp_path / "m.onnx"))
    plan = plan_quantization(model, QuantizeOptions("tensorrt"))
    consts = constant_values(model)
    calls: list[tuple[int, ...]] = []
    real = rounding.conv_axes
    monkeypatch.setattr(rounding, "conv_axes", lambda *a: calls.append(tuple(a[2])) or real(*a))
    moments = InputMoments(model, plan, consts)
    batches = [_inputs(2, seed) for seed in range(4)]
    for x in batches:
        moments.observe("x", x)
    moments.observe("x", _inputs(3, 5))  # another batch size: another gather
    conv = next(layer for layer in moments.layers if layer.weight == "w0")
    assert calls.count((6, 6)) == 2
    expected = None
    for x in [*batches, _inputs(3, 5)]:
        rows = layer_rows(conv, x, (3, 3), rounding.rows_per_sample(conv) * len(x))
        assert rows is not None
        h = np.matmul(rows.transpose(0, 2, 1), rows).astype(np.float64)
        expected = h if expected is None else expected + h
    np.testing.assert_array_equal(moments.moments["w0"], expected)


@pytest.mark.parametrize("auto_pad", ["SAME_UPPER", "SAME_LOWER", "VALID"])
def test_convolutions_with_auto_padding_are_rounded(auto_pad: str) -> None:
    model, _ = _conv_model(4, 6, (3, 3), auto_pad=auto_pad, strides=[2, 2])
    plan = plan_quantization(model, QuantizeOptions("tensorrt"))
    found = layers(model, plan, constant_values(model))
    assert [(layer.weight, layer.columns) for layer in found] == [("w", 36)]


def test_rows_are_capped_evenly_and_keep_their_values() -> None:
    model, _ = _conv_model(4, 6, (3, 3), pads=[1, 1, 1, 1])
    x = np.random.default_rng(1).normal(0, 1, (3, 4, 9, 9)).astype(np.float32)
    layer = Layer("w", 0, model.graph.node[0], 1, 36)
    every = layer_rows(layer, x, (3, 3), 1 << 20)
    some = layer_rows(layer, x, (3, 3), 50)
    assert every is not None and some is not None
    assert every.shape == (1, 3 * 81, 36) and some.shape == (1, 50, 36)
    picked = np.linspace(0, 3 * 81 - 1, 50).astype(np.int64)
    np.testing.assert_array_equal(some[0], every[0][picked])


def test_gptq_is_round_to_nearest_when_the_inputs_are_uncorrelated() -> None:
    rng = np.random.default_rng(2)
    w = rng.normal(0, 1, (1, 5, 7))
    scale = np.abs(w).max(axis=2) / 127
    h = np.diag(rng.uniform(1, 2, 7))[None]  # no input predicts another: nothing to compensate
    q = gptq(w, h, scale, 127)
    np.testing.assert_array_equal(q, np.clip(np.round(w / scale[:, :, None]), -127, 127))


def test_gptq_lowers_the_output_error_of_correlated_inputs() -> None:
    rng = np.random.default_rng(3)
    base = rng.normal(0, 1, (4000, 3))
    x = base @ rng.normal(0, 1, (3, 24)) + 0.05 * rng.normal(0, 1, (4000, 24))  # 24 inputs, rank ~3
    w = rng.normal(0, 1, (1, 16, 24))
    scale = np.abs(w).max(axis=2) / 7  # 4-bit grid: rounding errors that matter
    h = (x.T @ x)[None]
    q = gptq(w, h, scale, 7)
    near = np.clip(np.round(w / scale[:, :, None]), -7, 7)
    assert np.abs(q).max() <= 7
    err = lambda qq: np.linalg.norm(x @ (qq[0] * scale[0][:, None] - w[0]).T)  # noqa: E731
    assert err(q) < 0.6 * err(near)


def _two_layer_model(path: Path) -> Path:
    """Conv -> Relu -> Gemm on inputs with correlated channels (GPTQ has something to exploit)."""
    rng = np.random.default_rng(4)
    w0 = rng.normal(0, 0.4, (8, 6, 3, 3)).astype(np.float32)
    w1 = rng.normal(0, 0.2, (5, 8 * 6 * 6)).astype(np.float32)
    nodes = [
        helper.make_node("Conv", ["x", "w0"], ["a"], name="conv", pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["a"], ["r"], name="relu"),
        helper.make_node("Flatten", ["r"], ["f"], name="flat"),
        helper.make_node("Gemm", ["f", "w1"], ["y"], name="fc", transB=1),
    ]
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 6, 6, 6])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 5])],
        [numpy_helper.from_array(w0, "w0"), numpy_helper.from_array(w1, "w1")],
    )
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
    return path


def _inputs(rows: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    mix = np.random.default_rng(9).normal(0, 1, (2, 6))
    x = np.einsum("nkhw,kc->nchw", rng.normal(0, 1, (rows, 2, 6, 6)), mix)
    return (x + 0.1 * rng.normal(0, 1, x.shape)).astype(np.float32)


def test_moments_are_the_rows_second_moments(tmp_path: Path) -> None:
    model = onnx.load(_two_layer_model(tmp_path / "m.onnx"))
    plan = plan_quantization(model, QuantizeOptions("tensorrt"))
    consts = constant_values(model)
    found = layers(model, plan, consts)
    assert sorted(layer.weight for layer in found) == ["w0", "w1"]
    moments = InputMoments(model, plan, consts)
    x = _inputs(2, 1)
    moments.observe("x", x)
    moments.observe("unrelated", x)
    conv = next(layer for layer in found if layer.weight == "w0")
    rows = layer_rows(conv, x, (3, 3), 1 << 20)
    assert rows is not None and moments.rows["w0"] == 72
    np.testing.assert_allclose(moments.moments["w0"], rows.transpose(0, 2, 1) @ rows, rtol=1e-5)
    assert "w1" not in moments.moments  # its input was not shown


def test_rounded_weights_keep_the_scales_and_lower_the_layer_error(tmp_path: Path) -> None:
    model = onnx.load(_two_layer_model(tmp_path / "m.onnx"))
    plan = plan_quantization(model, QuantizeOptions("onnxruntime", 7))
    consts = constant_values(model)
    moments = InputMoments(model, plan, consts)
    x = _inputs(16, 1)
    moments.observe("x", x)
    rounded = rounded_weights(model, plan, moments, consts)
    assert list(rounded) == [("w0", 0, 63)]
    q, scale = rounded[("w0", 0, 63)]
    q_near, scale_near = quantized_weight(model, "w0", 0, 63)
    np.testing.assert_array_equal(scale, scale_near)
    assert q.dtype == np.int8 and np.abs(q).max() <= 63 and not np.array_equal(q, q_near)
    layer = Layer("w0", 0, model.graph.node[0], 1, 54)
    rows = layer_rows(layer, _inputs(16, 2), (3, 3), 1 << 20)[0]  # held-out inputs
    w = consts["w0"].reshape(8, -1)
    err = lambda qq: np.linalg.norm(rows @ (qq.reshape(8, -1) * scale[:, None] - w).T)  # noqa: E731
    assert err(q) < err(q_near)


@pytest.mark.parametrize("kept", [True, False])
@pytest.mark.parametrize("target", [("tensorrt", 8), ("onnxruntime", 7)])
def test_the_vote_decides_the_artifact_and_a_rewrite_of_rounded_weights_recalibrates(
    tmp_path: Path, target: tuple[str, int], kept: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Whether the held-out samples overrule GPTQ (forced here; the rule itself is tested below)
    decides which weights the artifact holds, and what the report and its .rounding.npz record;
    a rewrite from the report (the model removed) reuses the rounded weights from that file, and
    recalibrates when the file is gone."""
    monkeypatch.setattr(select_module, "_rounding_kept", lambda *args: kept)
    path = _two_layer_model(tmp_path / "m.onnx")
    data = tmp_path / "calib.npz"
    np.savez(data, x=_inputs(64, 1))
    options = CalibrationOptions(algorithm="auto", placement=target[0], weight_bits=target[1])
    inputs = model_io(path)[0]
    result = calibrate(path, open_source(data, inputs, batch_size=4), options, tmp_path / "out", stem="m")
    selection = json.loads(result.report.read_text())["selection"]
    rounding = selection["weight_rounding"]
    # the Gemm reads one row per sample: 48 calibration rows for 288 inputs, too few to round on
    assert rounding["kept"] is kept and rounding["layers"] == 2 and rounding["weights"] == 1
    winner = selection["winner"]
    assert set(rounding["held_out_cosine"]) == {winner, winner + ROUNDED}
    qmax = 127 if target[1] == 8 else 63
    near, _ = quantized_weight(onnx.load(path), "w0", 0, qmax)
    stored = [numpy_helper.to_array(i) for i in onnx.load(result.model).graph.initializer]
    conv = next(v for v in stored if v.dtype == np.int8 and v.shape == near.shape)
    assert np.array_equal(conv, near) is not kept
    rounding_file = tmp_path / "out" / "m.calib.rounding.npz"
    assert rounding_file.is_file() is kept and (rounding_file in result.files) is kept
    result.model.unlink()
    again = calibrate(path, open_source(data, inputs, batch_size=4), options, tmp_path / "out", stem="m")
    assert again.reused and not again.skipped
    restored = [numpy_helper.to_array(i) for i in onnx.load(again.model).graph.initializer]
    same = next(v for v in restored if v.dtype == np.int8 and v.shape == near.shape)
    np.testing.assert_array_equal(same, conv)
    if kept:  # a damaged file beside an intact model was "up to date"; without it, no rebuild
        damaged = bytearray(rounding_file.read_bytes())
        damaged[len(damaged) // 2] ^= 0xFF
        rounding_file.write_bytes(bytes(damaged))
        fourth = calibrate(path, open_source(data, inputs, batch_size=4), options, tmp_path / "out", stem="m")
        assert not fourth.skipped and not fourth.reused and "GPTQ-rounded weights" in fourth.reason
        rounding_file.unlink()
        third = calibrate(path, open_source(data, inputs, batch_size=4), options, tmp_path / "out", stem="m")
        assert not third.reused and "GPTQ-rounded weights" in third.reason
        assert rounding_file.is_file()


@pytest.mark.parametrize(
    ("nearest", "gptq", "wins", "kept"),
    [
        (0.99, 0.995, [0, 16], True),  # ahead on the pooled cosine: kept whatever the samples say
        (0.997, 0.996, [5, 11], True),  # behind, but worse on 11 of 16 only
        (0.997, 0.996, [3, 13], False),  # behind and worse on 13 of 16 (PP-OCRv4's detector, 7-bit)
        (0.997, 0.996, None, True),  # one held-out sample: no per-sample count
        (0.997, 0.996, [0, 0], True),  # every sample a tie
    ],
)
def test_gptq_goes_only_on_clear_evidence(
    nearest: float, gptq: float, wins: list[int] | None, kept: bool
) -> None:
    assert select_module._rounding_kept(nearest, gptq, wins) is kept


@pytest.mark.parametrize(
    "damage",
    [{"weight_rounding": ["kept"]}, {"weight_rounding": {"kept": True, "sha256": 3, "weight_bits": 8}}],
    ids=["not-a-map", "no-hash"],
)
def test_a_damaged_recorded_rounding_recalibrates_instead_of_failing(
    tmp_path: Path, damage: dict[str, object]
) -> None:
    """The report is ours, but a user can edit it: an unusable recorded rounding makes the report
    unusable, as any unreadable report is (calibrate again), instead of a traceback."""
    path = _two_layer_model(tmp_path / "m.onnx")
    np.savez(tmp_path / "calib.npz", x=_inputs(64, 1))
    options = CalibrationOptions(algorithm="auto")
    inputs = model_io(path)[0]
    first = calibrate(path, open_source(tmp_path / "calib.npz", inputs, batch_size=4), options, tmp_path)
    report = json.loads(first.report.read_text())
    report["selection"].update(damage)
    report["content_sha256"] = content_digest(report)  # damaged, yet signed: still refused
    first.report.write_text(json.dumps(report))
    again = calibrate(path, open_source(tmp_path / "calib.npz", inputs, batch_size=4), options, tmp_path)
    assert not again.reused and again.reason.startswith("calibrating: the earlier")


def test_a_report_edited_since_it_was_written_is_not_reused(tmp_path: Path) -> None:
    """A threshold edited in the report no longer made the intact Q/DQ model beside it: the
    calibration runs again (and rewrites both) instead of answering with that model."""
    path = _two_layer_model(tmp_path / "m.onnx")
    np.savez(tmp_path / "calib.npz", x=_inputs(64, 1))
    options = CalibrationOptions(algorithm="max")
    inputs = model_io(path)[0]
    first = calibrate(path, open_source(tmp_path / "calib.npz", inputs, batch_size=4), options, tmp_path)
    made = first.model.read_bytes()
    same = calibrate(path, open_source(tmp_path / "calib.npz", inputs, batch_size=4), options, tmp_path)
    assert same.reused
    report = json.loads(first.report.read_text())
    report["tensors"][0]["threshold"] *= 2
    first.report.write_text(json.dumps(report, indent=2) + "\n")
    again = calibrate(path, open_source(tmp_path / "calib.npz", inputs, batch_size=4), options, tmp_path)
    assert not again.reused and "changed since written" in again.reason
    assert again.model.read_bytes() == made
    rewritten = json.loads(again.report.read_text())["tensors"][0]["threshold"]
    assert rewritten == report["tensors"][0]["threshold"] / 2
