"""ONNX Runtime's placement: a Conv output read only by SiLU or HardSwish gets an asymmetric range
whose floor is where the activation's output stops changing (calibration/qdq.py
saturation_floor), so its levels go to the values that still matter."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from calibration.qdq import (
    FLOOR_SHARE,
    FLOOR_STEP,
    QuantizeOptions,
    activation_qparams,
    check_qdq,
    plan_quantization,
    saturating_activation,
    saturation_floor,
    write_qdq,
)

CPU = ["CPUExecutionProvider"]


def _model(
    gate: list[onnx.NodeProto], out: str, extra_outputs: tuple[str, ...] = (), scale: float = 4.0
) -> onnx.ModelProto:
    """Conv (wide outputs: weights times ``scale``) -> ``gate`` nodes reading "a" -> Conv."""
    rng = np.random.default_rng(0)
    w0 = numpy_helper.from_array((rng.normal(0, 0.4, (16, 4, 3)) * scale).astype(np.float32), "w0")
    w1 = numpy_helper.from_array(rng.normal(0, 0.2, (8, 16, 3)).astype(np.float32), "w1")
    nodes = [
        helper.make_node("Conv", ["x", "w0"], ["a"], pads=[1, 1], name="conv0"),
        *gate,
        helper.make_node("Conv", [out, "w1"], ["y"], pads=[1, 1], name="conv1"),
    ]
    outputs = [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 8, 32])]
    outputs += [helper.make_tensor_value_info(o, TensorProto.FLOAT, None) for o in extra_outputs]
    graph = helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 4, 32])], outputs, [w0, w1]
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


SILU = [
    helper.make_node("Sigmoid", ["a"], ["s"], name="sig"),
    helper.make_node("Mul", ["a", "s"], ["act"], name="mul"),
]


def _saturates(model: onnx.ModelProto) -> str:
    return plan_quantization(model, QuantizeOptions("onnxruntime", 8)).activations["a"].saturates


def test_the_plan_finds_silu_and_hardswish_read_by_every_consumer() -> None:
    assert _saturates(_model(SILU, "act")) == "silu"
    assert _saturates(_model([helper.make_node("HardSwish", ["a"], ["act"])], "act")) == "hardswish"
    hard = [
        helper.make_node("HardSigmoid", ["a"], ["s"], alpha=1 / 6, beta=0.5),
        helper.make_node("Mul", ["s", "a"], ["act"]),
    ]
    assert _saturates(_model(hard, "act")) == "hardswish"
    default_hard = [
        helper.make_node("HardSigmoid", ["a"], ["s"]),
        helper.make_node("Mul", ["s", "a"], ["act"]),
    ]
    assert _saturates(_model(default_hard, "act")) == ""  # alpha 0.2: not HardSwish, no floor
    # the gate's output read elsewhere too (here: a graph output): its values below the floor matter
    assert _saturates(_model(SILU, "act", extra_outputs=("s",))) == ""
    # "a" read by a third node: its negative values reach it
    more = [*SILU, helper.make_node("Relu", ["a"], ["r"])]
    assert _saturates(_model(more, "act", extra_outputs=("r",))) == ""
    # a Mul of "a" with something else than its gate
    other = [helper.make_node("Sigmoid", ["a"], ["s"]), helper.make_node("Mul", ["a", "a"], ["act"])]
    assert _saturates(_model(other, "act", extra_outputs=("s",))) == ""
    # TensorRT's placement quantizes no Conv output: nothing to mark
    trt = plan_quantization(_model(SILU, "act"), QuantizeOptions("tensorrt", 8))
    assert "a" not in trt.activations


@pytest.mark.parametrize("hi", [2.0, 8.6, 15.6, 51.9, 300.0])
@pytest.mark.parametrize("lo", [-200.0, -31.0, -6.0, -1.0])
def test_the_silu_floor_moves_the_output_by_at_most_its_share_of_a_step(lo: float, hi: float) -> None:
    floor = saturation_floor("silu", lo, hi)
    assert lo <= floor <= 0
    if floor == lo:  # no grid point above lo is safe enough: the observed range stays
        return
    x = np.linspace(lo, floor, 10001)
    moved = np.abs(saturating_activation("silu", x) - saturating_activation("silu", np.array(floor))).max()
    assert moved <= FLOOR_SHARE * (hi - floor) / 255 + 1e-12
    higher = floor + FLOOR_STEP  # the next grid point up is not safe
    assert (
        higher > -1.5
        or abs(float(saturating_activation("silu", np.array(higher)))) > FLOOR_SHARE * (hi - higher) / 255
    )


def test_hardswish_floor_is_exact_and_only_the_onnxruntime_placement_uses_floors() -> None:
    assert saturation_floor("hardswish", -40.0, 10.0) == -3.0
    assert float(saturating_activation("hardswish", np.array(-3.0))) == 0.0
    plan = plan_quantization(_model(SILU, "act"), QuantizeOptions("onnxruntime", 8))
    tq = plan.activations["a"]
    scale, zero, _ = activation_qparams(tq, 30.0, plan.options, (-40.0, 25.0))
    low = -zero * scale
    assert low == pytest.approx(saturation_floor("silu", -30.0, 25.0), abs=scale)
    assert scale < 55.0 / 255  # finer than over [-30, 25]
    symmetric = QuantizeOptions("onnxruntime", 8, asymmetric=False)
    assert activation_qparams(tq, 30.0, symmetric, (-40.0, 25.0))[1] == 128  # no floor without a zero point
    tq.saturates = ""
    assert activation_qparams(tq, 30.0, plan.options, (-40.0, 25.0))[0] == pytest.approx(55.0 / 255)


def test_the_floor_lowers_the_error_of_a_wide_silu_input(tmp_path: Path) -> None:
    model = _model(SILU, "act")
    path = tmp_path / "silu.onnx"
    onnx.save(model, path)
    x = np.random.default_rng(1).standard_normal((16, 4, 32)).astype(np.float32)
    marked = onnx.load(path)
    marked.graph.output.extend(helper.make_empty_tensor_value_info(n) for n in ("a", "act"))
    ref, a, act = ort.InferenceSession(marked.SerializeToString(), providers=CPU).run(None, {"x": x})
    assert a.min() < -10  # wide: most of the negative range is where SiLU is ~0
    values = {"x": x, "a": a, "act": act, "y": ref}
    extents = {n: (float(v.min()), float(v.max())) for n, v in values.items()}
    thresholds = {n: float(np.abs(v).max()) for n, v in values.items()}
    errors = {}
    for floor in (True, False):
        plan = plan_quantization(model, QuantizeOptions("onnxruntime", 8))
        if not floor:
            plan.activations["a"].saturates = ""
        qdq = write_qdq(model, plan, thresholds, extents)
        check_qdq(qdq, "onnxruntime", source=model)
        qdq.graph.output.extend([helper.make_empty_tensor_value_info("act")])
        got = ort.InferenceSession(qdq.SerializeToString(), providers=CPU).run(None, {"x": x})
        errors[floor] = [
            float(((g - r) ** 2).sum() / (r**2).sum()) for g, r in zip(got, (ref, act), strict=True)
        ]
    assert errors[True][1] < 0.85 * errors[False][1]  # at the SiLU's output (its own Q/DQ is the same)
    assert errors[True][0] < errors[False][0]  # and at the model's
