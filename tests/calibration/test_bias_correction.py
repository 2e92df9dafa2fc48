"""Bias correction: the mean error weight rounding adds to a Conv's outputs, taken out of its bias,
and kept by auto only where the held-out samples score it higher."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from calibration.algorithms import AlgorithmOptions
from calibration.calibrate import CalibrationOptions, calibrate
from calibration.modelinfo import model_io
from calibration.observers import ChannelMeanObserver, HistogramObserver, collect, emulate_integer_kernels
from calibration.qdq import QuantizeOptions, bias_corrections, plan_quantization, write_qdq
from calibration.report import content_digest
from calibration.select import BIAS_CORRECTED, HeldOut, SampleObserver, Selection, bias_corrected, select
from calibration.sources import open_source

CIN, COUT = 8, 4


def biased_conv_model(path: Path) -> Path:
    """A 3x3 Conv whose weights all round down: each channel's largest weight (1.0) sets the step,
    the others sit at 0.45 of a step above a level, so every rounding error has the same sign."""
    rng = np.random.default_rng(0)
    step = 1.0 / 127
    w = ((rng.integers(-60, 60, (COUT, CIN, 3, 3)) + 0.45) * step).astype(np.float32)
    w[:, 0, 0, 0] = 1.0
    bias = rng.normal(0, 0.1, COUT).astype(np.float32)
    graph = helper.make_graph(
        [helper.make_node("Conv", ["x", "w", "b"], ["y"], name="conv", pads=[1, 1, 1, 1])],
        "biased",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", CIN, 6, 6])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", COUT, 6, 6])],
        [numpy_helper.from_array(w, "w"), numpy_helper.from_array(bias, "b")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx.save(model, path)
    return path


def data(rows: int, seed: int) -> np.ndarray:
    """Inputs with a positive mean (0.5-1.5): the rounding errors add up instead of cancelling."""
    return np.random.default_rng(seed).uniform(0.5, 1.5, (rows, CIN, 6, 6)).astype(np.float32)


def _run(model: onnx.ModelProto | Path, x: np.ndarray) -> np.ndarray:
    """Outputs with integer kernels emulated: the 8-bit weights of ONNX Runtime's placement
    saturate its u8 x s8 kernels on CPUs without VNNI, and these tests are about the arithmetic."""
    data = model.SerializeToString() if isinstance(model, onnx.ModelProto) else str(model)
    options = ort.SessionOptions()
    emulate_integer_kernels(options)
    session = ort.InferenceSession(data, options, providers=["CPUExecutionProvider"])
    return np.asarray(session.run(None, {"x": x})[0])


def test_channel_means_match_numpy() -> None:
    observer = ChannelMeanObserver(["x"])
    batches = [data(4, seed) for seed in range(3)]
    for batch in batches:
        observer.observe("x", batch)
        observer.observe("other", batch)  # not asked for: not kept
    expected = np.concatenate(batches).mean(axis=(0, 2, 3))
    assert set(observer.means()) == {"x"}
    np.testing.assert_allclose(observer.means()["x"], expected, rtol=1e-6)


@pytest.mark.parametrize("placement", ["tensorrt", "onnxruntime"])
def test_correction_takes_the_rounding_bias_out_of_the_output_mean(tmp_path: Path, placement: str) -> None:
    path = biased_conv_model(tmp_path / "conv.onnx")
    model = onnx.load(path)
    calib, evaluate = data(64, 1), data(64, 2)
    plan = plan_quantization(model, QuantizeOptions(placement))
    ref = _run(path, evaluate)
    thresholds = {"x": 1.5, "y": float(np.abs(ref).max())}
    means = {"x": calib.mean(axis=(0, 2, 3))}
    shifts = bias_corrections(model, plan, means, spatial={"x": (6, 6)})
    # zero padding: a 3x3 tap at the border of a 6x6 map reads real input at 5 of 6 outputs
    unpadded = bias_corrections(model, plan, means)
    assert np.all(np.abs(shifts[0]) < np.abs(unpadded[0]))
    assert set(shifts) == {0} and shifts[0].shape == (COUT,)
    plain = write_qdq(model, plan, {n: thresholds[n] for n in plan.calibrated_tensors()})
    corrected = write_qdq(
        model, plan, {n: thresholds[n] for n in plan.calibrated_tensors()}, bias_shift=shifts
    )
    before = np.abs((_run(plain, evaluate) - ref).mean(axis=(0, 2, 3)))
    after = np.abs((_run(corrected, evaluate) - ref).mean(axis=(0, 2, 3)))
    assert before.min() > 0.02  # the rounding shifts every channel's mean
    assert after.max() < 0.15 * before.min()
    # the float model's own bias is left alone; TensorRT's placement keeps the corrected one in float
    names = {i.name for i in corrected.graph.initializer}
    assert ("b_corrected" in names) == (placement == "tensorrt")


Held = tuple[Selection, list[dict[str, np.ndarray]], list[list[np.ndarray]]]


def _selection(model: onnx.ModelProto) -> Held:
    plan = plan_quantization(model, QuantizeOptions())
    histograms = HistogramObserver(names=plan.levels())
    collect(model, [{"x": data(32, 1)}], list(plan.levels()), [histograms])
    holdout = [{"x": data(8, seed)} for seed in (3, 4)]
    samples = SampleObserver(list(plan.activations))
    collect(model, holdout, list(plan.activations), [samples])
    reference = [[_run(model, f["x"])] for f in holdout]
    chosen = select(
        model, plan, histograms.histograms, plan.levels(), samples.values, holdout, AlgorithmOptions("auto")
    )
    return chosen, holdout, reference


def test_auto_keeps_a_correction_that_helps_and_drops_one_that_hurts(tmp_path: Path) -> None:
    model = onnx.load(biased_conv_model(tmp_path / "conv.onnx"))
    plan = plan_quantization(model, QuantizeOptions())
    good = bias_corrections(model, plan, {"x": data(32, 1).mean(axis=(0, 2, 3))}, spatial={"x": (6, 6)})

    helped, holdout, reference = _selection(model)
    helped = bias_corrected(model, helped, good, HeldOut(holdout, reference))
    label = helped.winner + BIAS_CORRECTED
    scores = helped.bias_check["held_out_cosine"]
    assert helped.bias_shift is not None and scores[label] > scores[helped.winner]
    assert any(i.name == "b_corrected" for i in helped.qdq.graph.initializer)  # type: ignore[union-attr]

    hurt, holdout, reference = _selection(model)
    plain = hurt.qdq
    wrong = {i: -3.0 * shift for i, shift in good.items()}  # the wrong sign: the error grows
    hurt = bias_corrected(model, hurt, wrong, HeldOut(holdout, reference))
    scores = hurt.bias_check["held_out_cosine"]
    assert scores[label] < scores[hurt.winner] and hurt.bias_check["nodes"] == 1
    assert hurt.bias_shift is None and hurt.qdq is plain


def test_calibrate_records_the_correction_and_a_rewrite_applies_it_again(tmp_path: Path) -> None:
    path = biased_conv_model(tmp_path / "conv.onnx")
    np.savez(tmp_path / "calib.npz", x=data(64, 1))
    inputs, _ = model_io(path)
    options = CalibrationOptions(algorithm="auto")
    source = open_source(str(tmp_path / "calib.npz"), inputs, batch_size=8)
    first = calibrate(path, source, options, tmp_path / "out")
    recorded = json.loads(first.report.read_text())["selection"]["bias_correction"]
    assert recorded["kept"] and recorded["nodes"] == 1 and len(recorded["means"]["x"]) == CIN

    source = open_source(str(tmp_path / "calib.npz"), inputs, batch_size=8)
    second = calibrate(path, source, options, tmp_path / "out", qdq_name="again.onnx")
    assert second.reused and not second.skipped

    def bias(p: Path) -> np.ndarray:
        inits = {i.name: i for i in onnx.load(p).graph.initializer}
        return numpy_helper.to_array(inits["b_corrected"])

    np.testing.assert_array_equal(bias(first.model), bias(second.model))
    evaluate = data(32, 2)
    ref = _run(path, evaluate)
    assert np.abs((_run(second.model, evaluate) - ref).mean()) < 0.01


@pytest.mark.parametrize(
    "damage",
    [{"means": {"x": ["oops"]}}, {"means": {"x": [float("nan")]}}, {"sizes": {"x": ["8", 8]}}, {"means": 3}],
    ids=["text", "nan", "size-text", "not-a-map"],
)
def test_a_damaged_recorded_correction_recalibrates_instead_of_failing(
    tmp_path: Path, damage: dict[str, object]
) -> None:
    """The report is our own file, but one a user can edit or truncate: a kept correction whose
    means or sizes are not numbers makes it unusable, as any unreadable report is (recalibrate)."""
    path = biased_conv_model(tmp_path / "conv.onnx")
    np.savez(tmp_path / "calib.npz", x=data(64, 1))
    inputs, _ = model_io(path)
    options = CalibrationOptions(algorithm="auto")
    first = calibrate(path, open_source(str(tmp_path / "calib.npz"), inputs, batch_size=8), options, tmp_path)
    report = json.loads(first.report.read_text())
    assert report["selection"]["bias_correction"]["kept"]
    report["selection"]["bias_correction"].update(damage)
    report["content_sha256"] = content_digest(report)  # damaged, yet signed: still refused
    first.report.write_text(json.dumps(report))
    source = open_source(str(tmp_path / "calib.npz"), inputs, batch_size=8)
    again = calibrate(path, source, options, tmp_path, qdq_name="again.onnx")
    assert not again.reused and again.reason.startswith("calibrating: the earlier")
    assert json.loads(again.report.read_text())["selection"]["bias_correction"]["kept"]


def test_a_recorded_correction_of_an_input_without_spatial_axes_keeps_the_report(tmp_path: Path) -> None:
    """A Gemm's input has no spatial axes: its recorded size is []. That report is whole (a
    rerun reuses it); an earlier check took [] for "not whole numbers" and recalibrated every time."""
    from calibration.report import load_report

    path = biased_conv_model(tmp_path / "conv.onnx")
    np.savez(tmp_path / "calib.npz", x=data(64, 1))
    inputs, _ = model_io(path)
    source = open_source(str(tmp_path / "calib.npz"), inputs, batch_size=8)
    first = calibrate(path, source, CalibrationOptions("auto"), tmp_path)
    report = json.loads(first.report.read_text())
    assert report["selection"]["bias_correction"]["kept"]
    report["selection"]["bias_correction"]["sizes"]["fc_input"] = []
    report["content_sha256"] = content_digest(report)  # as written by a model with such a Gemm
    first.report.write_text(json.dumps(report))
    assert load_report(first.report) is not None
