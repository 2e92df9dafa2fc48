"""auto measures leaving narrow convolutions (fewer than 16 channels in a shape TensorRT's int8
kernels do not take well: an STFT front end, 1 channel into 258) in float, as Model Optimizer
leaves them; it keeps that plan only where the held-out vote says so, and a rerun from the report
rebuilds the same plan."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

import calibration.calibrate as calibrate_module
from calibration.calibrate import CalibrationOptions, calibrate
from calibration.modelinfo import model_io
from calibration.qdq import QuantizeOptions, narrow_convs, plan_quantization
from calibration.report import content_digest
from calibration.select import Selection, _sample_sums, output_cosine, plan_vote
from calibration.sources import open_source


def _conv(name: str, x: str, w: str, y: str, **attrs: object) -> onnx.NodeProto:
    return helper.make_node("Conv", [x, w], [y], name=name, **attrs)


def front_end_model(path: Path) -> Path:
    """A 1-channel signal through a 1 -> 10 strided convolution (narrow), then 10 -> 16 and
    16 -> 16 convolutions (TensorRT takes those in int8)."""
    rng = np.random.default_rng(0)
    weights = {
        "w1": rng.standard_normal((10, 1, 8)).astype(np.float32),
        "w2": (rng.standard_normal((16, 10, 3)) * 0.3).astype(np.float32),
        "w3": (rng.standard_normal((16, 16, 3)) * 0.3).astype(np.float32),
    }
    nodes = [
        _conv("front", "x", "w1", "a", strides=[4]),
        helper.make_node("Abs", ["a"], ["m"], name="magnitude"),
        _conv("mid", "m", "w2", "b", pads=[1, 1]),
        helper.make_node("Relu", ["b"], ["c"], name="relu"),
        _conv("last", "c", "w3", "y", pads=[1, 1]),
    ]
    graph = helper.make_graph(
        nodes,
        "front",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 1, 64])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 16, 15])],
        [numpy_helper.from_array(v, k) for k, v in weights.items()],
    )
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
    return path


def test_narrow_convolutions_are_found_by_shape(tmp_path: Path) -> None:
    model = onnx.load(front_end_model(tmp_path / "m.onnx"))
    for placement in ("tensorrt", "onnxruntime"):
        assert narrow_convs(model, plan_quantization(model, QuantizeOptions(placement))) == ["front"]
    # one already left in float is not offered again
    plan = plan_quantization(model, QuantizeOptions(exclude_nodes=("front",)))
    assert narrow_convs(model, plan) == []
    # a first layer reading the graph input with 8 output channels and a square kernel is fine
    first = onnx.load(tmp_path / "m.onnx")
    first.graph.initializer[0].CopyFrom(numpy_helper.from_array(np.ones((8, 1, 8), np.float32), "w1"))
    assert narrow_convs(first, plan_quantization(first, QuantizeOptions())) == []


def _calibrate(path: Path, out: Path, name: str, placement: str):  # type: ignore[no-untyped-def]
    rng = np.random.default_rng(1)
    np.savez(out / "calib.npz", x=rng.standard_normal((64, 1, 64)).astype(np.float32))
    inputs, _ = model_io(path)
    source = open_source(str(out / "calib.npz"), inputs, batch_size=8)
    options = CalibrationOptions(algorithm="auto", placement=placement, weight_bits=8)
    return calibrate(path, source, options, out, qdq_name=name)


def _float_convs(path: Path) -> set[str]:
    model = onnx.load(path)
    dq = {o for n in model.graph.node if n.op_type == "DequantizeLinear" for o in n.output}
    return {n.name for n in model.graph.node if n.op_type == "Conv" and n.input[1] not in dq}


@pytest.mark.parametrize("placement", ["tensorrt", "onnxruntime"])
@pytest.mark.parametrize("kept", [True, False])
def test_the_vote_decides_and_a_rerun_keeps_the_decision(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, placement: str, kept: bool
) -> None:
    path = front_end_model(tmp_path / "m.onnx")
    votes: list[dict[str, object]] = []

    def vote(best, variant):  # type: ignore[no-untyped-def]
        votes.append({"best": best.plan.excluded, "variant": variant.plan.excluded})
        return {"held_out_cosine": variant.scores[variant.winner], "kept": kept}

    monkeypatch.setattr(calibrate_module, "plan_vote", vote)
    first = _calibrate(path, tmp_path, "first.onnx", placement)
    assert votes == [{"best": [], "variant": ["front"]}]  # measured once, against the best plan
    selection = json.loads(first.report.read_text())["selection"]
    assert _float_convs(first.model) == ({"front"} if kept else set())
    assert selection["exclude_nodes"] == (["front"] if kept else [])
    assert ("quantize them" in selection["placement_alternatives"]) == kept
    again = _calibrate(path, tmp_path, "again.onnx", placement)  # reuses the report
    assert again.reused and len(votes) == 1
    assert again.model.read_bytes() == first.model.read_bytes()


def _selection(ref: np.ndarray, got: np.ndarray) -> Selection:
    sums = _sample_sums([[ref]], [[got]], [len(ref)])
    assert sums is not None
    return Selection({}, {}, "per-tensor", {"per-tensor": output_cosine([[ref]], [[got]])}, sample_sums=sums)


def test_plan_vote_does_not_let_one_sample_carry_a_plan() -> None:
    rng = np.random.default_rng(2)
    ref = rng.standard_normal((8, 32))
    small = ref + 0.01 * rng.standard_normal(ref.shape)
    best = _selection(ref, small)
    better = _selection(ref, ref + 0.005 * rng.standard_normal(ref.shape))  # closer on every sample
    assert plan_vote(best, better)["kept"]
    assert plan_vote(best, better)["samples_better_worse"] == [8, 0]
    # closer on one sample with a large error, a little further on the seven others
    worse = ref + 0.012 * rng.standard_normal(ref.shape)
    lopsided_best = small.copy()
    lopsided_best[0] = ref[0] + 0.5 * rng.standard_normal(32)
    worse[0] = ref[0] + 0.05 * rng.standard_normal(32)
    vote = plan_vote(_selection(ref, lopsided_best), _selection(ref, worse))
    assert vote["held_out_cosine"] > output_cosine([[ref]], [[lopsided_best]])  # ahead pooled
    better, worse_on = vote["samples_better_worse"]
    assert better == 1 and worse_on >= 5 and not vote["kept"]


@pytest.mark.parametrize(
    "damage",
    [{"exclude_nodes": 3}, {"exclude_nodes": ["front["]}, {"exclude_nodes": [7]}, {"exclude_ops": "Add"}],
    ids=["number", "bad-regex", "not-text", "ops-not-a-list"],
)
def test_a_damaged_recorded_exclusion_recalibrates_instead_of_failing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, damage: dict[str, object]
) -> None:
    """A hand-edited report whose recorded exclusions are not patterns is unusable (recalibrate),
    as any unreadable report is: no traceback, no error blaming the user's --exclude-nodes."""
    path = front_end_model(tmp_path / "m.onnx")
    monkeypatch.setattr(
        calibrate_module, "plan_vote", lambda best, variant: {"held_out_cosine": 1.0, "kept": True}
    )
    first = _calibrate(path, tmp_path, "first.onnx", "tensorrt")
    report = json.loads(first.report.read_text())
    assert report["selection"]["exclude_nodes"] == ["front"]
    report["selection"].update(damage)
    report["content_sha256"] = content_digest(report)  # damaged, yet signed: still refused
    first.report.write_text(json.dumps(report))
    again = _calibrate(path, tmp_path, "again.onnx", "tensorrt")
    assert not again.reused and again.reason.startswith("calibrating: the earlier")
    assert json.loads(again.report.read_text())["selection"]["exclude_nodes"] == ["front"]
