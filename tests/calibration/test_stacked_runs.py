"""A model that fixes its batch at 1 runs its statistics and FP16 range passes a few samples at a
time on a copy with a free batch (``collect(stack=...)``), and the observers see each sample's
tensors as the one-sample runs give them: the same arrays in the same order, so the same
histograms, ranges, Q/DQ model and FP16 figures. A copy that does not compute each sample as the
model does (a Reshape to a shape with the 1 written in) is found on the first run and the samples
run one at a time."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

import calibration.calibrate as calibrate_module
import calibration.observers as observers_module
from calibration.calibrate import CalibrationOptions, calibrate
from calibration.modelinfo import model_io
from calibration.observers import collect, float_tensor_names, stacked_copy
from calibration.sources import open_source
from edgedeploy.stages.precision import analysis as analysis_module
from edgedeploy.stages.precision.analysis import analyze, report_json

SAMPLES = 16
STEPS, WIDTH = 5, 3


def _model(baked: bool = False, mixing: bool = False) -> onnx.ModelProto:
    """x[1, 3, 5] -> Conv 1x1 -> Relu -> time-major [5, 1, 4] -> [5, 4] rows (a time-major
    recognizer's flattening: with N samples, row t * N + n) -> MatMul -> [5, 6] -> Sigmoid.
    ``baked``: the last Reshape writes the batch of 1 into its shape ([1, 30]); ``mixing``: a
    ReduceMean over the batch axis is subtracted from the conv's output."""
    rng = np.random.default_rng(3)
    w = numpy_helper.from_array(rng.standard_normal((4, WIDTH, 1)).astype(np.float32), "w")
    m = numpy_helper.from_array(rng.standard_normal((4, 6)).astype(np.float32), "m")
    rows = numpy_helper.from_array(np.array([-1, 4], np.int64), "rows")
    flat = numpy_helper.from_array(np.array([1, 30], np.int64), "flat")
    conv_out = "c" if not mixing else "c0"
    nodes = [helper.make_node("Conv", ["x", "w"], [conv_out], name="conv")]
    if mixing:
        nodes += [
            helper.make_node("ReduceMean", ["c0"], ["mean"], axes=[0], keepdims=1, name="mean"),
            helper.make_node("Sub", ["c0", "mean"], ["c"], name="centre"),
        ]
    nodes += [
        helper.make_node("Relu", ["c"], ["r"], name="relu"),
        helper.make_node("Transpose", ["r"], ["t"], perm=[2, 0, 1], name="time_major"),
        helper.make_node("Reshape", ["t", "rows"], ["flat_rows"], name="rows"),
        helper.make_node("MatMul", ["flat_rows", "m"], ["logits"], name="matmul"),
        helper.make_node("Sigmoid", ["logits"], ["s"], name="sigmoid"),
    ]
    out_shape: list[Any] = [STEPS, 6]
    if baked:
        nodes.append(helper.make_node("Reshape", ["s", "flat"], ["y"], name="flat"))
        out_shape = [1, 30]
    else:
        nodes.append(helper.make_node("Identity", ["s"], ["y"], name="out"))
    graph = helper.make_graph(
        nodes,
        "stacked",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, WIDTH, STEPS])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, out_shape)],
        [w, m, rows, flat],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


def _samples(n: int = SAMPLES) -> np.ndarray:
    x = np.random.default_rng(7).standard_normal((n, WIDTH, STEPS)).astype(np.float32)
    x[::5] *= 8.0  # loud samples: the histograms grow as they arrive
    return x


class _Recorder:
    """Every (tensor, array) shown, in order, copied."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, np.ndarray]] = []

    def observe(self, name: str, array: np.ndarray) -> None:
        self.seen.append((name, np.array(array, copy=True)))


def _runs(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The number of samples (rows of the first input) of every ONNX Runtime run collect makes."""
    rows: list[int] = []
    real = observers_module.run_views

    def counted(session: Any, names: Any, feed: Any) -> list[np.ndarray]:
        rows.append(int(next(iter(feed.values())).shape[0]))
        return real(session, names, feed)

    monkeypatch.setattr(observers_module, "run_views", counted)
    return rows


def _collect(model: onnx.ModelProto, x: np.ndarray, stack: int, **options: Any) -> tuple[list[Any], int]:
    recorder = _Recorder()
    names = float_tensor_names(model)
    feeds = ({"x": x[i : i + 1]} for i in range(len(x)))
    samples = collect(model, feeds, names, [recorder], stack=stack, **options)
    return recorder.seen, samples


def _same(one: list[tuple[str, np.ndarray]], other: list[tuple[str, np.ndarray]]) -> None:
    assert [name for name, _ in one] == [name for name, _ in other]
    for (name, a), (_, b) in zip(one, other, strict=True):
        assert a.shape == b.shape, name
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7, err_msg=name)


@pytest.mark.parametrize("prefetch", [0, 1 << 20])
def test_a_batch_1_models_samples_run_stacked_and_each_is_shown_as_its_one_sample_run(
    monkeypatch: pytest.MonkeyPatch, prefetch: int
) -> None:
    model, x = _model(), _samples(SAMPLES + 2)  # 18: four runs of 4 and one of 2
    alone, count = _collect(model, x, 0, prefetch_bytes=prefetch)
    rows = _runs(monkeypatch)
    stacked, stacked_count = _collect(model, x, 4, prefetch_bytes=prefetch)
    assert count == stacked_count == len(x)
    _same(stacked, alone)
    # the first sample alone, the first four stacked and the fourth alone (the test), then runs of 4
    assert rows == [1, 4, 1, 4, 4, 4, 2]


def test_the_stacked_copy_names_the_batch_and_drops_the_shapes_that_fix_it() -> None:
    model = _model()
    model.graph.value_info.extend(onnx.shape_inference.infer_shapes(model).graph.value_info)
    copy = stacked_copy(model)
    assert copy is not None
    assert copy.graph.input[0].type.tensor_type.shape.dim[0].dim_param == observers_module.STACK_DIM
    assert not copy.graph.output[0].type.tensor_type.HasField("shape")
    assert len(copy.graph.value_info) == 0
    assert model.graph.input[0].type.tensor_type.shape.dim[0].dim_value == 1  # the model is untouched
    free = onnx.ModelProto()
    free.CopyFrom(model)
    free.graph.input[0].type.tensor_type.shape.dim[0].dim_param = "N"
    assert stacked_copy(free) is None  # a free batch is batched by the source already


@pytest.mark.parametrize("variant", ["baked", "mixing"])
def test_a_copy_that_does_not_compute_each_sample_as_the_model_runs_them_one_at_a_time(
    monkeypatch: pytest.MonkeyPatch, variant: str
) -> None:
    model, x = _model(**{variant: True}), _samples()
    alone, _ = _collect(model, x, 0)
    rows = _runs(monkeypatch)
    stacked, count = _collect(model, x, 4)
    assert count == len(x)
    _same(stacked, alone)
    # tested once (the baked Reshape refuses 4 samples; the mixed values differ from the fourth
    # sample's own run), then every sample alone on the model
    tested = [1, 4] if variant == "baked" else [1, 4, 1]
    assert rows == tested + [1] * len(x)


def test_a_run_too_large_to_stack_runs_one_sample_at_a_time(monkeypatch: pytest.MonkeyPatch) -> None:
    model, x = _model(), _samples()
    monkeypatch.setattr(observers_module, "STACK_BYTES", 100)  # one sample's tensors are more
    alone, _ = _collect(model, x, 0)
    rows = _runs(monkeypatch)
    stacked, _ = _collect(model, x, 4)
    _same(stacked, alone)
    assert rows == [1] * len(x)


def test_calibration_of_a_batch_1_model_stacks_its_statistics_and_writes_the_same_model(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "m.onnx"
    onnx.save(_model(), path)
    np.savez(tmp_path / "calib.npz", x=_samples(32))

    def run(out: str) -> tuple[bytes, dict[str, Any]]:
        source = open_source(str(tmp_path / "calib.npz"), model_io(path)[0], batch_size=1)
        result = calibrate(path, source, CalibrationOptions(algorithm="auto", force=True), tmp_path / out)
        report = json.loads(result.report.read_text())
        return result.model.read_bytes(), report

    rows = _runs(monkeypatch)
    stacked, report = run("stacked")
    assert max(rows) == 4  # the statistics pass ran the samples 4 at a time
    monkeypatch.setattr(calibrate_module, "STACK_ROWS", 0)
    alone, before = run("alone")
    assert stacked == alone
    assert report["tensors"] == before["tensors"]
    assert report["selection"] == before["selection"]


def test_fp16_analysis_of_a_batch_1_model_stacks_its_runs_and_gives_the_same_figures(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    model, x = _model(), _samples()

    def figures() -> dict[str, Any]:
        report = analyze(model, ({"x": x[i : i + 1]} for i in range(len(x))), name="m")
        found = report_json(report)
        found["summary"].pop("seconds")
        return found

    rows = _runs(monkeypatch)
    stacked = figures()
    assert max(rows) == 4
    monkeypatch.setattr(analysis_module, "STACK_ROWS", 0)
    assert figures() == stacked


def test_a_single_sample_runs_once(monkeypatch: pytest.MonkeyPatch) -> None:
    model, x = _model(), _samples(1)
    alone, _ = _collect(model, x, 0)
    rows = _runs(monkeypatch)
    stacked, count = _collect(model, x, 4)
    assert count == 1
    _same(stacked, alone)
    assert rows == [1]  # the copy's run of it, no second session's
