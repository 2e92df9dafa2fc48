"""Work calibrate no longer does twice, or on the weights: the opset upgrade and shape inference run
on a copy without the weights' bytes, the Q/DQ writer copies only the initializers still read, and
auto's winning Q/DQ model (written to be scored) is the artifact instead of a second write of it;
models are serialized once where a copy with extra outputs or a second serialization was made.
Each gives the same models byte for byte."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, numpy_helper, shape_inference, version_converter

import calibration.calibrate as calibrate_module
import calibration.observers as observers_module
import calibration.qdq as qdq_module
import calibration.select as select_module
from calibration.calibrate import CalibrationOptions, calibrate
from calibration.errors import CalibrationError
from calibration.graphs import LIGHT_WEIGHT_ELEMENTS, without_weight_bytes
from calibration.modelinfo import model_io
from calibration.observers import collect, with_outputs
from calibration.qdq import QuantizeOptions, plan_quantization, upgrade_opset, write_qdq
from calibration.select import Selection
from calibration.sources import open_source
from tests.calibration.conftest import squeeze_conv_opset12


def _opset12(path: Path | None = None) -> onnx.ModelProto:
    """x[1,1,1,8,16] -> Squeeze(axes attribute: the converter makes it an input) -> Conv(w 16x1x9x9,
    more values than LIGHT_WEIGHT_ELEMENTS) -> Relu -> Conv(small w) -> y."""
    rng = np.random.default_rng(0)
    big = rng.normal(0, 0.1, (16, 1, 9, 9)).astype(np.float32)
    assert big.size > LIGHT_WEIGHT_ELEMENTS
    inits = [
        numpy_helper.from_array(big, "w1"),
        numpy_helper.from_array(rng.normal(0, 0.1, (16,)).astype(np.float32), "b1"),
        numpy_helper.from_array(rng.normal(0, 0.3, (2, 16, 3, 3)).astype(np.float32), "w2"),
    ]
    model = squeeze_conv_opset12(inits, first_pads=4)
    if path is not None:
        onnx.save(model, path)
    return model


def test_without_weight_bytes_keeps_every_field_of_a_weight_but_its_bytes() -> None:
    model = _opset12()
    light, held = without_weight_bytes(model)
    assert set(held) == {"w1"} and held["w1"] is model.graph.initializer[0]
    stub = light.graph.initializer[0]
    assert not stub.raw_data and list(stub.dims) == [16, 1, 9, 9] and stub.data_type == TensorProto.FLOAT
    restored = onnx.TensorProto()
    restored.CopyFrom(stub)
    restored.raw_data = held["w1"].raw_data
    assert restored == held["w1"]
    assert list(light.graph.initializer[1:]) == list(model.graph.initializer[1:])  # small ones copied whole
    assert list(light.graph.node) == list(model.graph.node)


def test_the_opset_upgrade_without_the_weights_is_the_whole_models_upgrade() -> None:
    model = _opset12()
    before = model.SerializeToString()
    upgraded = upgrade_opset(model)
    assert upgraded.SerializeToString() == version_converter.convert_version(model, 13).SerializeToString()
    assert model.SerializeToString() == before  # the caller's model is not touched
    assert {o.version for o in upgraded.opset_import if o.domain == ""} == {13}


@pytest.mark.parametrize("change", ["altered", "dropped"])
def test_a_weight_the_converter_changes_is_converted_with_its_values(
    monkeypatch: pytest.MonkeyPatch, change: str
) -> None:
    model = _opset12()
    real = version_converter.convert_version
    calls: list[bool] = []

    def converter(m: onnx.ModelProto, version: int) -> onnx.ModelProto:
        stripped = not m.graph.initializer[0].raw_data
        calls.append(stripped)
        out = real(m, version)
        if stripped:  # an adapter that rewrote (or removed) the weight it was handed without bytes
            if change == "altered":
                out.graph.initializer[0].doc_string = "rewritten"
            else:
                del out.graph.initializer[0]
        return out

    monkeypatch.setattr(version_converter, "convert_version", converter)
    upgraded = upgrade_opset(model)
    assert calls == [True, False]  # the light conversion, then the whole model's
    assert upgraded.SerializeToString() == real(model, 13).SerializeToString()


def test_element_types_are_inferred_without_the_weights_as_with_them() -> None:
    model = upgrade_opset(_opset12())
    inferred = shape_inference.infer_shapes(model)
    want = {
        vi.name: vi.type.tensor_type.elem_type
        for vi in [*inferred.graph.value_info, *inferred.graph.input, *inferred.graph.output]
        if vi.type.tensor_type.elem_type
    }
    want.update({init.name: init.data_type for init in model.graph.initializer})
    assert qdq_module._inferred_types(model) == want


@pytest.mark.parametrize("placement", ["tensorrt", "onnxruntime"])
def test_the_q_dq_writer_copies_only_the_initializers_still_read(placement: str) -> None:
    model = upgrade_opset(_opset12())
    before = model.SerializeToString()
    plan = plan_quantization(model, QuantizeOptions(placement=placement))
    thresholds = dict.fromkeys(plan.calibrated_tensors(), 1.0)
    qdq = write_qdq(model, plan, thresholds)
    assert model.SerializeToString() == before
    names = [init.name for init in qdq.graph.initializer]
    originals = [init.name for init in model.graph.initializer]
    kept = [n for n in names if n in originals]
    assert "w1" not in names and "w2" not in names  # replaced by their int8 values, never copied
    assert names[: len(kept)] == [n for n in originals if n in kept]  # originals first, in order
    read = {i for node in qdq.graph.node for i in node.input}
    assert set(names) <= read
    onnx.checker.check_model(qdq, full_check=True)


def _calibrate(model: Path, tmp_path: Path, out: str, placement: str) -> tuple[bytes, dict[str, object]]:
    x = np.random.default_rng(1).uniform(0, 1, (32, 1, 1, 8, 16)).astype(np.float32)
    x[::5] *= 4.0  # a few loud samples: the rules disagree on the thresholds
    np.savez(tmp_path / "calib.npz", x=x)
    source = open_source(str(tmp_path / "calib.npz"), model_io(model)[0], batch_size=1)
    options = CalibrationOptions(algorithm="auto", placement=placement, force=True)
    result = calibrate(model, source, options, tmp_path / out)
    return result.model.read_bytes(), json.loads(result.report.read_text())


@pytest.mark.parametrize("placement", ["tensorrt", "onnxruntime"])
def test_auto_writes_its_scored_winner_as_the_artifact_the_same_bytes_as_a_new_write(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, placement: str
) -> None:
    model = tmp_path / "old.onnx"
    _opset12(model)
    writes: list[int] = []
    real_write = calibrate_module.write_qdq
    monkeypatch.setattr(
        calibrate_module, "write_qdq", lambda *a, **k: writes.append(1) or real_write(*a, **k)
    )
    reused, report = _calibrate(model, tmp_path, "reused", placement)
    assert writes == []  # the artifact is the winner's model, not written again
    monkeypatch.setattr(calibrate_module, "_scored_qdq", lambda *a: None)
    written, again = _calibrate(model, tmp_path, "written", placement)
    assert writes == [1]
    assert reused == written
    assert report["tensors"] == again["tensors"] and report["selection"] == again["selection"]


def test_the_scored_model_is_used_only_for_its_plan_and_thresholds() -> None:
    model = upgrade_opset(_opset12())
    plan = plan_quantization(model, QuantizeOptions())
    other = plan_quantization(model, QuantizeOptions(exclude_ops=("Relu",)))
    thresholds = dict.fromkeys(plan.calibrated_tensors(), 1.0)
    qdq = write_qdq(model, plan, thresholds)
    selection = Selection(dict(thresholds), {}, "max", plan=plan, qdq=qdq)
    assert calibrate_module._scored_qdq(selection, plan, thresholds) is qdq
    assert calibrate_module._scored_qdq(None, plan, thresholds) is None
    assert calibrate_module._scored_qdq(selection, other, thresholds) is None
    moved = {**thresholds, plan.calibrated_tensors()[0]: 2.0}
    assert calibrate_module._scored_qdq(selection, plan, moved) is None
    kept_none = Selection(dict(thresholds), {}, "max", plan=plan)
    assert calibrate_module._scored_qdq(kept_none, plan, thresholds) is None


def test_check_qdq_checks_the_bytes_it_is_given() -> None:
    model = upgrade_opset(_opset12())
    plan = plan_quantization(model, QuantizeOptions())
    qdq = write_qdq(model, plan, dict.fromkeys(plan.calibrated_tensors(), 1.0))
    qdq_module.check_qdq(qdq, serialized=qdq.SerializeToString())
    broken = onnx.ModelProto()
    broken.CopyFrom(qdq)
    broken.graph.node[-1].input[0] = "nowhere"  # reads a tensor nobody makes
    with pytest.raises(CalibrationError, match=r"fails onnx\.checker"):
        qdq_module.check_qdq(qdq, serialized=broken.SerializeToString())


def test_the_artifact_goes_through_onnx_checker_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """check_qdq checks the Q/DQ model's bytes before they are written; the written file's
    verification (ONNX Runtime's load and run) does not run onnx's full checker on it again."""
    import calibration.artifacts as artifacts_module

    model = tmp_path / "old.onnx"
    _opset12(model)
    checked: list[str] = []
    real_check = artifacts_module.full_check

    def full_check(target: object) -> None:
        checked.append(type(target).__name__)
        real_check(target)  # type: ignore[arg-type]

    monkeypatch.setattr(artifacts_module, "full_check", full_check)
    _calibrate(model, tmp_path, "once", "tensorrt")
    assert checked == ["bytes"]  # check_qdq's, of the bytes written

    # a model the checker refuses is still refused before it is written (check_qdq), none kept
    def refused(target: object) -> None:
        if isinstance(target, bytes):  # the Q/DQ model's (the source model passes)
            raise ValueError("bad")
        real_check(target)  # type: ignore[arg-type]

    monkeypatch.setattr(artifacts_module, "full_check", refused)
    with pytest.raises(CalibrationError, match=r"fails onnx\.checker"):
        _calibrate(model, tmp_path, "refused", "tensorrt")
    assert not list((tmp_path / "refused").glob("*.onnx"))


def test_the_statistics_session_sees_the_same_values_without_copying_the_model() -> None:
    model = upgrade_opset(_opset12())
    x = np.random.default_rng(3).uniform(0, 1, (2, 1, 1, 8, 16)).astype(np.float32)
    seen: dict[str, np.ndarray] = {}

    class Keep:
        def observe(self, name: str, array: np.ndarray) -> None:
            seen[name] = array

    before = model.SerializeToString()
    collect(model, [{"x": x[:1]}], ["c1", "r1", "y"], [Keep()])
    assert model.SerializeToString() == before
    copied = observers_module._session(with_outputs(model, ["c1", "r1"]), None)  # the former way
    want = copied.run(["c1", "r1", "y"], {"x": x[:1]})  # type: ignore[attr-defined]
    for name, value in zip(["c1", "r1", "y"], want, strict=True):
        np.testing.assert_array_equal(seen[name], value)


def test_the_relative_error_with_the_references_energy_given_is_the_same_figure() -> None:
    rng = np.random.default_rng(4)
    ref = rng.standard_normal(1000)
    got = ref + rng.standard_normal(1000) * 0.01
    assert select_module._relative(got, ref, select_module._energy(ref)) == select_module._relative(got, ref)
    zero = np.zeros(10)
    assert (
        select_module._relative(zero + 1.0, zero)
        == 10.0 / 1e-30
        == select_module._relative(zero + 1.0, zero, select_module._energy(zero))
    )
