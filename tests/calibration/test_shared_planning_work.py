"""Work shared between the plans and Q/DQ models of one model (calibrate and auto make several):
shape inference and constants once (ModelFacts), each weight quantized once (the weight cache).
Both must leave every plan and every Q/DQ model exactly as without them."""

from __future__ import annotations

from pathlib import Path

import onnx
import pytest

from calibration.qdq import QuantizeOptions, WeightCache, model_facts, plan_quantization, write_qdq


@pytest.mark.parametrize("placement", ["tensorrt", "onnxruntime"])
def test_plans_made_with_shared_facts_equal_plans_made_alone(residual_model: Path, placement: str) -> None:
    model = onnx.load(residual_model)
    facts = model_facts(model)
    for options in (
        QuantizeOptions(placement),
        QuantizeOptions(placement, exclude_ops=("Add",)),
        QuantizeOptions(placement, weight_bits=7),
    ):
        assert plan_quantization(model, options, facts) == plan_quantization(model, options)


def test_facts_of_another_model_are_not_used(residual_model: Path) -> None:
    model = onnx.load(residual_model)
    other = onnx.ModelProto()
    other.CopyFrom(model)
    del other.graph.initializer[:]  # facts without any constant: a plan built on them would differ
    options = QuantizeOptions("onnxruntime")
    assert plan_quantization(model, options, model_facts(other)) == plan_quantization(model, options)


@pytest.mark.parametrize("placement", ["tensorrt", "onnxruntime"])
def test_q_dq_models_written_with_a_shared_weight_cache_are_byte_identical(
    residual_model: Path, placement: str
) -> None:
    model = onnx.load(residual_model)
    plan = plan_quantization(model, QuantizeOptions(placement))
    cache: WeightCache = {}
    for amax in (0.5, 2.0, 7.0):
        thresholds = {name: amax for name in plan.calibrated_tensors()}
        cached = write_qdq(model, plan, thresholds, weight_cache=cache).SerializeToString(deterministic=True)
        alone = write_qdq(model, plan, thresholds).SerializeToString(deterministic=True)
        assert cached == alone
    assert len(cache) == len(plan.weights)
