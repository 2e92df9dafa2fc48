"""A model whose integer kernels this CPU lacks (uint8 activations with 8-bit weights, on a CPU
without VNNI) is measured with its integer arithmetic emulated in float: by auto's candidates,
by compare, by the benchmarks. Without it ONNX Runtime's u8 x s8 kernels saturate here and every
figure (and auto's choice) is this CPU's, not the target's."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

import calibration.select as select_module
import edgedeploy.stages.compare.layers as layers_module
import edgedeploy.stages.compare.outputs as outputs_module
import edgedeploy.stages.precision.int8 as int8_module
from calibration.calibrate import CalibrationOptions, calibrate
from calibration.modelinfo import model_io
from calibration.observers import emulate_integer_kernels
from calibration.qdq import QuantizeOptions, plan_quantization, saturates_without_vnni, write_qdq
from calibration.sources import open_source
from edgedeploy.targets import load_target

from .conftest import DigitsCNN


def wide_conv(path: Path) -> Path:
    """A Conv whose weights use the full int8 range, fed inputs near the top of uint8: the pair
    sums u8 x s8 + u8 x s8 reach about 2 x 255 x 127, beyond the int16 a CPU without VNNI adds in."""
    rng = np.random.default_rng(0)
    w = rng.choice([-1.0, 1.0], size=(8, 16, 3, 3)).astype(np.float32)
    w[:, :, 1, 1] *= 3.0  # the per-channel max sits in the centre tap; the rest still uses 1/3 of the range
    graph = helper.make_graph(
        [helper.make_node("Conv", ["x", "w"], ["y"], pads=[1, 1, 1, 1], name="conv")],
        "wide",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 16, 6, 6])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 8, 6, 6])],
        [numpy_helper.from_array(w, "w")],
    )
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
    return path


def _qdq(model: onnx.ModelProto, placement: str, bits: int) -> onnx.ModelProto:
    plan = plan_quantization(model, QuantizeOptions(placement, bits))
    return write_qdq(model, plan, dict.fromkeys(plan.calibrated_tensors(), 1.0))


def _run(model: onnx.ModelProto, x: np.ndarray, level: str, emulate: bool = False) -> np.ndarray:
    options = ort.SessionOptions()
    options.graph_optimization_level = getattr(ort.GraphOptimizationLevel, level)
    if emulate:
        emulate_integer_kernels(options)
    session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    return np.asarray(session.run(None, {"x": x})[0])


def test_saturating_groups_are_recognised(tmp_path: Path) -> None:
    model = onnx.load(wide_conv(tmp_path / "wide.onnx"))
    assert saturates_without_vnni(_qdq(model, "onnxruntime", 8))
    assert not saturates_without_vnni(_qdq(model, "onnxruntime", 7))  # reduce range: safe everywhere
    assert not saturates_without_vnni(_qdq(model, "tensorrt", 8))  # int8 activations
    assert not saturates_without_vnni(model)


def test_emulation_is_the_unfused_arithmetic(tmp_path: Path) -> None:
    """With the Q/DQ fusions off, the fully optimized session computes what the graph's own
    QuantizeLinear -> DequantizeLinear -> Conv says (no optimization at all), on any CPU."""
    qdq = _qdq(onnx.load(wide_conv(tmp_path / "wide.onnx")), "onnxruntime", 8)
    x = np.random.default_rng(1).uniform(0.9, 1.0, (2, 16, 6, 6)).astype(np.float32)
    unfused = _run(qdq, x, "ORT_DISABLE_ALL")
    np.testing.assert_allclose(_run(qdq, x, "ORT_ENABLE_ALL", emulate=True), unfused, rtol=1e-5, atol=1e-4)


def test_vnni_targets_emulate_only_where_this_cpu_lacks_vnni_and_gpu_targets_always(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(int8_module, "has_vnni", lambda: False)
    assert int8_module.emulate_integer_for(load_target("x86-64-vnni"))
    assert not int8_module.emulate_integer_for(load_target("x86-64-cpu"))  # 7-bit weights
    assert int8_module.emulate_integer_for(load_target("jetson-orin-nx"))  # TensorRT's arithmetic
    monkeypatch.setattr(int8_module, "has_vnni", lambda: True)
    assert not int8_module.emulate_integer_for(load_target("x86-64-vnni"))
    assert int8_module.emulate_integer_for(load_target("jetson-orin-nx"))  # not this CPU's kernels


def test_compare_runs_a_vnni_candidate_emulated_on_a_cpu_without_vnni(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    model = onnx.load(wide_conv(tmp_path / "wide.onnx"))
    wide, narrow = tmp_path / "wide.int8.onnx", tmp_path / "narrow.int8.onnx"
    onnx.save(_qdq(model, "onnxruntime", 8), wide)
    onnx.save(_qdq(model, "onnxruntime", 7), narrow)
    x = np.random.default_rng(1).uniform(0.9, 1.0, (2, 16, 6, 6)).astype(np.float32)
    monkeypatch.setattr(layers_module, "has_vnni", lambda: False)
    result = outputs_module.compare(tmp_path / "wide.onnx", wide, [{"x": x}])
    assert result.mode == layers_module.INTEGER_EMULATED
    assert outputs_module.compare(tmp_path / "wide.onnx", narrow, [{"x": x}]).mode == "onnx"
    # what compare measured is the emulated arithmetic
    _, got = outputs_module.run_pair(tmp_path / "wide.onnx", wide, [{"x": x}], emulate_integer=True)
    np.testing.assert_allclose(got[0]["y"], _run(onnx.load(wide), x, "ORT_DISABLE_ALL"), rtol=1e-5, atol=1e-4)
    monkeypatch.setattr(layers_module, "has_vnni", lambda: True)
    assert outputs_module.compare(tmp_path / "wide.onnx", wide, [{"x": x}]).mode == "onnx"


def test_auto_measures_emulated_candidates_and_the_key_says_so(
    digits_cnn: DigitsCNN, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen: list[bool] = []
    original = select_module._session

    def spy(model: onnx.ModelProto, names: list[str], emulate: bool = False) -> object:
        seen.append(emulate)
        return original(model, names, emulate)

    monkeypatch.setattr(select_module, "_session", spy)
    inputs, _ = model_io(digits_cnn.model)

    def run(emulate: bool):  # type: ignore[no-untyped-def]
        source = open_source(str(digits_cnn.calib), inputs, batch_size=32)
        options = CalibrationOptions(algorithm="auto", placement="onnxruntime", emulate_integer=emulate)
        return calibrate(digits_cnn.model, source, options, tmp_path)

    first = run(True)
    assert seen and all(seen)  # every candidate Q/DQ model ran emulated
    report = json.loads(first.report.read_text())
    assert report["selection"]["integer_kernels"] == "emulated in float"
    assert report["key_parts"]["kernels"] == "emulated"
    seen.clear()
    again = run(False)  # measured on this CPU's kernels: another key, a new measurement
    assert not again.reused and "integer kernels" in again.reason
    assert seen and not any(seen)
    third = run(False)
    assert third.skipped, third.reason


def test_the_int8_accuracy_budget_measures_emulated_where_asked(tmp_path: Path) -> None:
    from edgedeploy.stages.precision.budget import OutputEvaluator

    model = onnx.load(wide_conv(tmp_path / "wide.onnx"))
    qdq = _qdq(model, "onnxruntime", 8)
    x = np.random.default_rng(1).uniform(0.9, 1.0, (2, 16, 6, 6)).astype(np.float32)
    got = OutputEvaluator(model, [{"x": x}], emulate_integer=True).run(qdq)
    np.testing.assert_allclose(got[0][0], _run(qdq, x, "ORT_DISABLE_ALL"), rtol=1e-5, atol=1e-4)


def test_compare_runs_tensorrts_placement_as_tensorrt_computes_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """int8 activations are TensorRT's placement: compare runs them emulated on any CPU, as auto
    and the accuracy budgets measure them (ddddocr's recognizer: the budget met cosine 0.999003,
    compare on ONNX Runtime's s8s8 kernels read 0.998981 on the same data and failed the gate)."""
    from calibration.qdq import int8_activations

    model = onnx.load(wide_conv(tmp_path / "wide.onnx"))
    trt, cpu = tmp_path / "trt.int8.onnx", tmp_path / "cpu.int8.onnx"
    onnx.save(_qdq(model, "tensorrt", 8), trt)
    onnx.save(_qdq(model, "onnxruntime", 7), cpu)
    assert int8_activations(onnx.load(trt)) and not int8_activations(onnx.load(cpu))
    assert not int8_activations(model)
    x = np.random.default_rng(1).uniform(-1.0, 1.0, (2, 16, 6, 6)).astype(np.float32)
    for vnni in (True, False):
        monkeypatch.setattr(layers_module, "has_vnni", lambda vnni=vnni: vnni)
        assert (
            outputs_module.compare(tmp_path / "wide.onnx", trt, [{"x": x}]).mode
            == layers_module.TENSORRT_EMULATED
        )
        assert outputs_module.compare(tmp_path / "wide.onnx", cpu, [{"x": x}]).mode == "onnx"
    _, got = outputs_module.run_pair(tmp_path / "wide.onnx", trt, [{"x": x}], emulate_integer=True)
    np.testing.assert_allclose(got[0]["y"], _run(onnx.load(trt), x, "ORT_DISABLE_ALL"), rtol=1e-5, atol=1e-4)


def test_per_layer_runs_an_int8_candidate_as_compare_does(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """compare --per-layer ran every Q/DQ candidate on ONNX Runtime's integer kernels, which it
    fuses even at the basic optimization level: its output tensor read another figure than
    compare's output table (ddddocr's recognizer, TensorRT's placement: 0.998362 against
    0.998015). It now runs them as compare does (layers.integer_mode)."""
    model = onnx.load(wide_conv(tmp_path / "wide.onnx"))
    trt, cpu = tmp_path / "trt.int8.onnx", tmp_path / "cpu.int8.onnx"
    onnx.save(_qdq(model, "tensorrt", 8), trt)
    onnx.save(_qdq(model, "onnxruntime", 8), cpu)
    x = np.random.default_rng(1).uniform(0.9, 1.0, (2, 16, 6, 6)).astype(np.float32)
    fp32 = _run(model, x, "ORT_DISABLE_ALL")

    def output_cosine(candidate: Path) -> tuple[str, float]:
        result = layers_module.compare_layers(tmp_path / "wide.onnx", candidate, [{"x": x}])
        return result.mode, next(e.cosine for e in result.layers if e.tensor == "y")

    def cosine(got: np.ndarray) -> float:
        a, b = fp32.ravel().astype(np.float64), got.ravel().astype(np.float64)
        return float(a @ b / np.linalg.norm(a) / np.linalg.norm(b))

    for vnni in (True, False):
        monkeypatch.setattr(layers_module, "has_vnni", lambda vnni=vnni: vnni)
        mode, got = output_cosine(trt)
        assert mode == layers_module.TENSORRT_EMULATED
        emulated = _run(onnx.load(trt), x, "ORT_ENABLE_BASIC", emulate=True)
        assert got == pytest.approx(cosine(emulated), abs=1e-7)
        mode, got = output_cosine(cpu)
        assert mode == (layers_module.INTEGER_EMULATED if not vnni else "onnx")
        kernels = _run(onnx.load(cpu), x, "ORT_ENABLE_BASIC", emulate=not vnni)
        assert got == pytest.approx(cosine(kernels), abs=1e-7)
