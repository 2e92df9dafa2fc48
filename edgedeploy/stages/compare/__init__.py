"""The compare stage: a candidate (fp16/int8 ONNX, engine) against the fp32 reference.

- :mod:`.gates`: the accuracy gates (cosine and scale, argmax agreement, allclose) a candidate must pass;
- :mod:`.outputs`: per-output metrics through Polygraphy's runners and Comparator;
- :mod:`.layers`: per-layer errors on every intermediate tensor both graphs share.
"""

from __future__ import annotations

from edgedeploy.stages.compare.gates import Gates
from edgedeploy.stages.compare.layers import LayerError, LayerwiseResult, compare_layers
from edgedeploy.stages.compare.outputs import (
    CompareResult,
    OutputMetrics,
    comparable,
    compare,
    gate_failures,
    is_compared,
    output_metrics,
    refuse_without_tensor_outputs,
    run_pair,
)

__all__ = [
    "CompareResult",
    "Gates",
    "LayerError",
    "LayerwiseResult",
    "OutputMetrics",
    "comparable",
    "compare",
    "compare_layers",
    "gate_failures",
    "is_compared",
    "output_metrics",
    "refuse_without_tensor_outputs",
    "run_pair",
]
