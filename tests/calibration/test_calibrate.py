"""calibrate(): accuracy on a real CNN, the result cache, and refusal of bad data without partial files."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from calibration.calibrate import CalibrationOptions, CalibrationResult, calibrate
from calibration.errors import DataError
from calibration.modelinfo import model_io
from calibration.sources import open_source

from .conftest import DigitsCNN


def _top1(model: Path, x: np.ndarray) -> np.ndarray:
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    session = ort.InferenceSession(str(model), options, providers=["CPUExecutionProvider"])
    return np.asarray(session.run(None, {"input": x})[0]).argmax(axis=1)


def _source(digits: DigitsCNN, spec: str | None = None, **kwargs: object):  # type: ignore[no-untyped-def]
    inputs, _ = model_io(digits.model)
    return open_source(spec or str(digits.calib), inputs, batch_size=32, **kwargs)  # type: ignore[arg-type]


@pytest.mark.parametrize(("placement", "bits"), [("tensorrt", 8), ("onnxruntime", 7)])
def test_int8_digits_cnn_keeps_fp32_accuracy(
    digits_cnn: DigitsCNN, tmp_path: Path, placement: str, bits: int
) -> None:
    options = CalibrationOptions(
        algorithm="entropy", placement=placement, weight_bits=bits, trt_version="8.6.1"
    )
    result = calibrate(digits_cnn.model, _source(digits_cnn), options, tmp_path)
    fp32 = _top1(digits_cnn.model, digits_cnn.x_test)
    int8 = _top1(result.model, digits_cnn.x_test)
    fp32_acc, int8_acc = (fp32 == digits_cnn.y_test).mean(), (int8 == digits_cnn.y_test).mean()
    assert fp32_acc > 0.9
    assert int8_acc >= fp32_acc - 0.01
    assert (int8 == fp32).mean() >= 0.995
    assert result.samples == 300 and not result.synthetic
    # outputs: Q/DQ model a quarter-ish of the size, a cache for TensorRT 8.6.1, a JSON report
    assert result.model.stat().st_size < digits_cnn.model.stat().st_size * 0.35
    assert result.cache is not None and result.cache.read_text().startswith("TRT-8601-EntropyCalibration2\n")
    report = json.loads(result.report.read_text())
    assert {"name", "amax", "threshold", "scale", "clipped"} <= set(report["tensors"][0])
    assert all(0 <= t["clipped"] < 0.05 and t["threshold"] <= t["amax"] + 1e-6 for t in report["tensors"])
    # the report's histogram (for the report page's clipping chart) counts every value seen and reaches amax
    first = next(t for t in report["tensors"] if t["name"] == "input")
    hist = first["histogram"]
    assert hist["bins"] == 128 and sum(hist["counts"]) == 300 * 8 * 8  # input: 300 digits of 8x8
    assert (
        (len(hist["counts"]) - 1) * hist["top"] / 128
        <= first["amax"]
        <= len(hist["counts"]) * hist["top"] / 128
    )


def test_a_rerun_writes_again_a_q_dq_model_or_cache_changed_since_not_reuses_it(
    digits_cnn: DigitsCNN, tmp_path: Path
) -> None:
    """Up to date means the same contents, not a file of the name: a model flipped, truncated or
    replaced since, or an edited cache, is written again from the recorded calibration."""
    opts = CalibrationOptions(algorithm="max", trt_version="8.6.1")
    first = calibrate(digits_cnn.model, _source(digits_cnn), opts, tmp_path)
    good, cache = first.model.read_bytes(), first.cache.read_bytes()  # type: ignore[union-attr]
    for damage in (
        lambda: first.model.write_bytes(good[:-7] + b"\xff" * 7),
        lambda: first.model.write_bytes(good[:1000]),
        lambda: first.model.write_bytes(digits_cnn.model.read_bytes()),
        lambda: first.cache.write_text(first.cache.read_text().replace(":", ": 3", 1)),  # type: ignore[union-attr]
    ):
        damage()
        again = calibrate(digits_cnn.model, _source(digits_cnn), opts, tmp_path)
        assert again.reused and not again.skipped, again.reason
        assert first.model.read_bytes() == good and first.cache.read_bytes() == cache  # type: ignore[union-attr]
    assert calibrate(digits_cnn.model, _source(digits_cnn), opts, tmp_path).skipped


def test_rerun_with_the_same_key_reuses_and_a_new_key_says_why(digits_cnn: DigitsCNN, tmp_path: Path) -> None:
    first = calibrate(digits_cnn.model, _source(digits_cnn), CalibrationOptions(algorithm="max"), tmp_path)
    assert not first.reused and "no earlier calibration" in first.reason
    again = calibrate(digits_cnn.model, _source(digits_cnn), CalibrationOptions(algorithm="max"), tmp_path)
    assert again.reused and again.skipped and "up to date" in again.reason
    excluded = calibrate(
        digits_cnn.model,
        _source(digits_cnn),
        CalibrationOptions(algorithm="max", exclude_ops=("Gemm",)),
        tmp_path,
    )
    assert excluded.reused and not excluded.skipped and "reusing calibration" in excluded.reason
    assert not any(
        n.op_type == "Gemm" and n.input[1].endswith("_dequantized")
        for n in onnx.load(excluded.model).graph.node
    )
    other = calibrate(
        digits_cnn.model, _source(digits_cnn), CalibrationOptions(algorithm="entropy"), tmp_path
    )
    assert not other.reused and "algorithm changed" in other.reason and '"max"' in other.reason
    fewer = calibrate(
        digits_cnn.model, _source(digits_cnn, samples=64), CalibrationOptions(algorithm="entropy"), tmp_path
    )
    assert not fewer.reused and "calibration data" in fewer.reason


def test_synthetic_data_is_reported_as_synthetic(digits_cnn: DigitsCNN, tmp_path: Path) -> None:
    result = calibrate(
        digits_cnn.model, _source(digits_cnn, "random:3", samples=64), CalibrationOptions(), tmp_path
    )
    assert result.synthetic and any("synthetic" in w for w in result.warnings)
    assert json.loads(result.report.read_text())["synthetic"] is True


def test_auto_says_when_too_few_samples_left_none_to_hold_out(digits_cnn: DigitsCNN, tmp_path: Path) -> None:
    """16 samples are 2 runs of 8, none held out: auto judged its candidates on a calibration batch
    and the report called those cosines held-out ones, without a word."""
    few = calibrate(
        digits_cnn.model, _source(digits_cnn, "random:3", samples=16), CalibrationOptions(algorithm="auto"),
        tmp_path / "few",
    )  # fmt: skip
    assert any("auto held no samples out" in w for w in few.warnings), few.warnings
    assert json.loads(few.report.read_text())["selection"]["judged_on"] == "calibration samples"
    enough = calibrate(
        digits_cnn.model, _source(digits_cnn, "random:3", samples=32), CalibrationOptions(algorithm="auto"),
        tmp_path / "enough",
    )  # fmt: skip
    assert not any("held no samples out" in w for w in enough.warnings), enough.warnings
    assert json.loads(enough.report.read_text())["selection"]["judged_on"] == "held-out samples"


def _bad_loader(tmp_path: Path) -> str:
    script = tmp_path / "loader.py"
    script.write_text("def load_data():\n    raise RuntimeError('camera offline')\n    yield {}\n")
    return str(script)


@pytest.mark.parametrize("case", ["shape", "dtype", "nan", "empty", "loader"])
def test_bad_calibration_data_is_refused_without_partial_files(
    digits_cnn: DigitsCNN, tmp_path: Path, case: str
) -> None:
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    x = np.load(digits_cnn.calib)["input"][:40]
    expected = {
        "shape": r"input 'input' expects shape input\[batch,1,8,8\]:float32, got \[40, 1, 7, 7\]",
        "dtype": "expects dtype float32, got complex64",
        "nan": "'input' contains NaN",
        "empty": "holds no .npz, .npy or image files",
        "loader": "raised RuntimeError: camera offline",
    }[case]
    spec = str(data_dir)
    if case == "shape":
        np.savez(data_dir / "a.npz", input=x[:, :, :7, :7])
    elif case == "dtype":
        np.savez(data_dir / "a.npz", input=x.astype(np.complex64))
    elif case == "nan":
        x[3, 0, 2, 2] = np.nan
        np.savez(data_dir / "a.npz", input=x)
    elif case == "loader":
        spec = _bad_loader(tmp_path)
    out = tmp_path / "out"
    with pytest.raises(DataError, match=expected):
        calibrate(digits_cnn.model, _source(digits_cnn, spec), CalibrationOptions(trt_version="8.6.1"), out)
    assert not out.exists() or not any(out.iterdir())


def test_an_exclude_nodes_pattern_that_matches_no_node_is_refused(
    digits_cnn: DigitsCNN, tmp_path: Path
) -> None:
    """A misspelt --exclude-nodes name left every node quantized without a word."""
    from calibration.errors import CalibrationError

    options = CalibrationOptions(exclude_nodes=("nosuch",))
    with pytest.raises(CalibrationError, match="--exclude-nodes: no node matches nosuch"):
        calibrate(digits_cnn.model, _source(digits_cnn), options, tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_a_recalibration_names_what_changed_and_nothing_else() -> None:
    """auto -> max also said "the integer kernels are measured differently" (a part only auto's key
    has), and --batch-size 16 for 8 said "the calibration data or preprocessing changed"."""
    from calibration.calibrate import _why_changed

    auto = {"algorithm": {"algorithm": "auto"}, "kernels": "emulated", "data": {"spec": "d", "batch_size": 8}}
    plain = {"algorithm": {"algorithm": "max"}, "data": {"spec": "d", "batch_size": 8}}
    said = 'the algorithm changed ({"algorithm": "auto"} -> {"algorithm": "max"})'
    assert _why_changed(auto, plain) == said
    wider = {**plain, "data": {"spec": "d", "batch_size": 16}}
    assert _why_changed(plain, wider) == "the calibration data's settings changed (batch_size 8 -> 16)"
    edited = {**plain, "data": {"spec": "d", "batch_size": 8, "files": [{"sha256": "b"}]}}
    assert _why_changed(plain, edited) == "the calibration data or preprocessing changed"


def test_a_tensor_all_zeros_in_the_data_is_named_in_a_warning(digits_cnn: DigitsCNN, tmp_path: Path) -> None:
    """A tensor all zeros in the calibration data (silero-vad's LSTM state, zero on its first step)
    got the floor scale, 1e-12 in the TensorRT cache too, without a word."""
    inputs, _ = model_io(digits_cnn.model)
    zeros = tmp_path / "zeros.npz"
    np.savez(zeros, **{inputs[0].name: np.zeros((16, *inputs[0].shape[1:]), np.float32)})
    result = calibrate(
        digits_cnn.model, open_source(str(zeros), inputs, batch_size=8), CalibrationOptions(algorithm="max"),
        tmp_path / "out",
    )  # fmt: skip
    said = [w for w in result.warnings if "all zeros in the calibration data" in w]
    assert said and inputs[0].name in said[0], result.warnings


def _lstm_with_a_zero_state(path: Path) -> Path:
    """x[N,T,8] -> LSTM(16) -> its last state -> MatMul -> y[N,4]: the initial cell state is
    ConstantOfShape(Shape(x)...) as torch.onnx exports an LSTM called without one (zero whatever the
    data), the initial hidden state is an input ``h`` (silero-vad's, zero on its first step)."""
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    consts = {
        "w": rng.standard_normal((1, 64, 8)),
        "r": rng.standard_normal((1, 64, 16)) * 0.3,
        "head": rng.standard_normal((16, 4)),
    }
    inits = [numpy_helper.from_array(v.astype(np.float32), k) for k, v in consts.items()]
    inits += [numpy_helper.from_array(np.array(v, np.int64), k) for k, v in (("one", [1]), ("hidden", [16]))]
    zero = helper.make_tensor("v", TensorProto.FLOAT, [1], [0.0])
    nodes = [
        helper.make_node("Shape", ["x"], ["n"], start=0, end=1),
        helper.make_node("Concat", ["one", "n", "hidden"], ["state_shape"], axis=0),
        helper.make_node("ConstantOfShape", ["state_shape"], ["zero_state"], value=zero),
        helper.make_node("Transpose", ["x"], ["xt"], perm=[1, 0, 2]),
        helper.make_node("LSTM", ["xt", "w", "r", "", "", "h", "zero_state"], ["", "last"], hidden_size=16),
        helper.make_node("Squeeze", ["last", "zero"], ["flat"]),
        helper.make_node("MatMul", ["flat", "head"], ["y"]),
    ]
    inits.append(numpy_helper.from_array(np.array([0], np.int64), "zero"))
    graph = helper.make_graph(
        nodes,
        "lstm",
        [
            helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", "T", 8]),
            helper.make_tensor_value_info("h", TensorProto.FLOAT, [1, "N", 16]),
        ],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 4])],
        inits,
    )
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
    return path


def test_a_tensor_zero_whatever_the_data_is_not_named_among_the_all_zero_ones(tmp_path: Path) -> None:
    """An int8 build of an LSTM (torch.onnx's zero initial state, ConstantOfShape) warned that
    ``/l/ConstantOfShape_output_0`` was all zeros and advised "calibrate on data where they vary":
    no data makes a constant vary, and TensorRT folds it. The TensorRT cache's list of tensors was
    searched too. A state the data feeds as zeros (an input) is still named."""
    model = _lstm_with_a_zero_state(tmp_path / "lstm.onnx")
    inputs, _ = model_io(model)
    rng = np.random.default_rng(1)
    data = tmp_path / "d.npz"
    np.savez(data, x=rng.standard_normal((16, 5, 8)).astype(np.float32), h=np.zeros((1, 16, 16), np.float32))
    options = CalibrationOptions(algorithm="max", trt_version="8.6.1")
    result = calibrate(model, open_source(str(data), inputs, batch_size=8), options, tmp_path / "out")
    said = [w for w in result.warnings if "all zeros in the calibration data" in w]
    assert said and "zero_state" not in said[0], result.warnings
    assert said[0].startswith("1 tensor(s) were all zeros") and ": h;" in said[0], said


def test_a_batch_size_that_is_a_multiple_of_the_runs_reuses_the_calibration(
    digits_cnn: DigitsCNN, tmp_path: Path
) -> None:
    """The statistics run the feeds in runs of RUN_ROWS (8): --batch-size 16 after 8 gives the same
    bytes, and recalibrated. A batch of 12 (runs of 8 and 4) and random data (drawn per batch)
    still do."""
    inputs, _ = model_io(digits_cnn.model)
    options = CalibrationOptions(algorithm="max")

    def run(batch: int, spec: str | None = None) -> CalibrationResult:
        source = open_source(spec or str(digits_cnn.calib), inputs, batch_size=batch, samples=40)
        return calibrate(digits_cnn.model, source, options, tmp_path / (spec or "files"))

    first = run(8)
    model = first.model.read_bytes()
    again = run(16)
    assert again.skipped and again.model.read_bytes() == model
    assert not run(12).reused and run(12).skipped
    run(8, "random")
    assert not run(16, "random").reused


def test_a_state_batched_on_axis_1_calibrates_on_the_samples_asked_for(tmp_path: Path) -> None:
    """x[B,10,8] beside a GRU state h0[1,B,16]: --samples 4 was ignored (the file's dim 0 lengths
    differ) and the whole file ran at once, so sample 20's spike of 40 set x's range."""
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    graph = helper.make_graph(
        [
            helper.make_node("MatMul", ["x", "w"], ["y"]),
            helper.make_node("Transpose", ["h0"], ["ht"], perm=[1, 0, 2]),
            helper.make_node("Add", ["y", "ht"], ["out"]),
        ],
        "gru_like",
        [
            helper.make_tensor_value_info("x", TensorProto.FLOAT, ["B", 10, 8]),
            helper.make_tensor_value_info("h0", TensorProto.FLOAT, [1, "B", 16]),
        ],
        [helper.make_tensor_value_info("out", TensorProto.FLOAT, ["B", 10, 16])],
        [numpy_helper.from_array(rng.standard_normal((8, 16)).astype(np.float32), "w")],
    )
    model = tmp_path / "gru_like.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), model)
    x = rng.standard_normal((32, 10, 8)).astype(np.float32)
    x[20, 3, 0] = 40.0
    np.savez(tmp_path / "spike.npz", x=x, h0=np.zeros((1, 32, 16), np.float32))
    inputs, _ = model_io(model)
    source = open_source(str(tmp_path / "spike.npz"), inputs, batch_size=8, samples=4)
    options = CalibrationOptions(algorithm="max", placement="tensorrt", trt_version="8.6.1")
    result = calibrate(model, source, options, tmp_path / "out")
    assert result.samples == 4
    report = json.loads(result.report.read_text())
    amax = next(t["amax"] for t in report["tensors"] if t["name"] == "x")
    assert amax == pytest.approx(float(np.abs(x[:4]).max()))


def test_the_same_data_folder_spelled_otherwise_reuses_the_calibration(
    digits_cnn: DigitsCNN, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``--data in/calib``, ``/abs/in/calib`` and ``./in/../in/calib`` recalibrated ("the calibration
    data's settings changed (spec ...)"): the key held the path as written, not the data."""
    folder = tmp_path / "in" / "calib"
    folder.mkdir(parents=True)
    x = np.load(digits_cnn.calib)["input"]
    for i in range(3):
        np.save(folder / f"{i}.npy", x[i * 16 : (i + 1) * 16])
    monkeypatch.chdir(tmp_path)
    options = CalibrationOptions(algorithm="max")
    first = calibrate(digits_cnn.model, _source(digits_cnn, "in/calib"), options, tmp_path / "o")
    files = {p.name: p.read_bytes() for p in (tmp_path / "o").iterdir()}
    for spec in (str(folder), "./in/../in/calib", "in/calib/"):
        again = calibrate(digits_cnn.model, _source(digits_cnn, spec), options, tmp_path / "o")
        assert again.skipped, (spec, again.reason)
        assert {p.name: p.read_bytes() for p in (tmp_path / "o").iterdir()} == files
    assert not first.reused


def test_a_cap_above_the_samples_a_loader_gives_is_the_same_calibration(
    residual_model: Path, tmp_path: Path
) -> None:
    """--samples 100 of a loader script that yields 10 samples calibrated the 10 again (its key
    held the cap); the same 10 are now up to date, and a cap that cuts them is a new calibration."""
    loader = tmp_path / "loader.py"
    loader.write_text(
        "import numpy as np\n\ndef load_data():\n    rng = np.random.default_rng(0)\n"
        "    for _ in range(5):\n        yield {'x': rng.random((2, 3, 8, 8), dtype=np.float32)}\n"
    )
    inputs, _ = model_io(residual_model)
    opts = CalibrationOptions(algorithm="max")
    out = tmp_path / "out"
    first = calibrate(residual_model, open_source(str(loader), inputs), opts, out)
    assert not first.reused and first.samples == 10
    again = calibrate(residual_model, open_source(str(loader), inputs, samples=100), opts, out)
    assert again.reused and again.skipped and "up to date" in again.reason, again.reason
    cut = calibrate(residual_model, open_source(str(loader), inputs, samples=6), opts, out)
    assert not cut.reused and cut.samples == 6
