"""Whether an opset conversion keeps what a model computes.

onnx.version_converter keeps an op's attributes where the op's meaning changed (Hardmax below 13
flattened its input, at 13 it works along one axis; Scan-8 took a batch axis, Scan-9 takes none):
wrong outputs, or a model that cannot run, and no word. Every conversion edgedeploy makes goes
through :func:`calibration.qdq.convert_opset` (export of an ONNX file, calibration, the import of a
TensorRT cache), which runs :func:`check_conversion` on what it converted and refuses what differs,
or says why it could not be checked.

Lives in calibration/ (the lowest layer) because calibration converts models itself.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import onnx

from calibration.artifacts import default_feed, load_error, model_outputs, output_difference
from calibration.graphs import all_graphs, opset_of, ort_error

# ops that draw new values on every run: their model's outputs cannot be compared run against run
RANDOM_OPS = frozenset(
    {"RandomNormal", "RandomNormalLike", "RandomUniform", "RandomUniformLike", "Multinomial", "Bernoulli"}
)


def check_conversion(
    source: onnx.ModelProto, converted: onnx.ModelProto, feed: Mapping[str, Any] | None = None
) -> tuple[str | None, str | None]:
    """(changed, unchecked): how ``converted`` (``source`` taken to another opset) computes other
    values than ``source`` on ``feed`` (default: one seeded random feed of ``source``'s inputs), or
    cannot run where ``source`` runs, else None; and why the two could not be compared, else None
    (checked). ``changed`` is None where they do not differ beyond float32's rounding
    (:func:`~calibration.artifacts.output_difference`) and where they cannot be compared: no feed can
    be made, ``source`` draws random values, or fails on the feed (ONNX Runtime cannot load it and
    onnx's reference evaluator cannot run it: a custom-domain op beside an opset-6 Gemm), or
    ``converted`` fails as ONNX Runtime fails to load ``source``; ``unchecked`` then says which, for
    the caller to say and record. ``source`` runs in ONNX Runtime, or in the reference evaluator
    where ONNX Runtime cannot load it (opset 6, IR 3), ``converted`` in ONNX Runtime. ``changed``'s
    words start "converting it from opset N to M": the caller names the model."""
    drawn = {n.op_type for g in all_graphs(source.graph) for n in g.node} & RANDOM_OPS
    if drawn:  # values drawn at random on each run: nothing to compare
        return None, f"it draws random values ({', '.join(sorted(drawn))}): no two runs compare"
    feed = default_feed(source) if feed is None else feed
    if feed is None:
        return None, "no input could be made for it"
    try:
        want = model_outputs(source, feed, reference=True)
    except Exception as exc:  # the source fails on random inputs: nothing to compare
        return None, _source_failure(source, exc)
    converting = f"converting it from opset {opset_of(source)} to {opset_of(converted)}"
    converting += " (onnx.version_converter)"
    ops = f"op types converted: {', '.join(converted_op_types(source, converted))}"
    try:
        have = model_outputs(converted, feed)
    except Exception as exc:
        why = ort_error(exc)
        if why == load_error(source):  # ONNX Runtime refuses the source alike (a locale it lacks)
            return None, f"ONNX Runtime cannot run it converted either ({why[:160]})"
        return (
            f"{converting} made a model ONNX Runtime cannot run ({why[:160]}) on random inputs the "
            f"source runs on ({ops})"
        ), None
    for output, expected, got in zip(converted.graph.output, want, have, strict=False):
        if not isinstance(expected, np.ndarray) or not isinstance(got, np.ndarray):
            continue
        if differs := output_difference(expected, got):
            differs += " on random inputs"
            return f"{converting} changed what it computes: output '{output.name}' {differs} ({ops})", None
    return None, None


def _source_failure(source: onnx.ModelProto, exc: BaseException) -> str:
    """Why ``source`` gave no outputs to compare with (``exc``: what running it raised)."""
    loading = load_error(source)
    if loading is None:
        return f"it fails on random inputs in ONNX Runtime ({ort_error(exc)[:160]})"
    evaluator = " ".join((str(exc).strip().splitlines() or [type(exc).__name__])[0].split())
    return (
        f"neither ONNX Runtime ({loading[:160]}) nor onnx's reference evaluator "
        f"({evaluator[:160]}) can run it at its opset"
    )


def converted_op_types(source: onnx.ModelProto, converted: onnx.ModelProto) -> list[str]:
    """The default-domain op types of ``source`` whose definition differs between its opset and
    ``converted``'s (those the version converter had to adapt), in graph order."""
    old, new = opset_of(source), opset_of(converted)
    found: dict[str, None] = {}
    for graph in all_graphs(source.graph):
        for node in graph.node:
            if node.domain not in ("", "ai.onnx") or node.op_type in found:
                continue
            try:
                before = onnx.defs.get_schema(node.op_type, old).since_version
                after = onnx.defs.get_schema(node.op_type, new).since_version
            except Exception:  # not an op onnx defines at one of them
                before, after = -1, -2
            if before != after:
                found[node.op_type] = None
    return list(found) or ["none"]
