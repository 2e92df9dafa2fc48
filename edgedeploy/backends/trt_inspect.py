"""Summarise the engine inspector's layer JSON: precision per layer, DLA versus GPU, transitions.

Users cannot tell from a built engine whether INT8 kernels were chosen or the DLA really ran
(docs/design.md, problems 3 and 9); the inspector says so per layer, but as free-form strings. The rules
here read what TensorRT writes with DETAILED verbosity: "Outputs"/"Inputs" entries with a
"Format/Datatype" from the list NVIDIA's engine explorer knows (docs/tensorrt-facts.md, "Engine
inspector": "Row major linear FP32", "Thirty-two wide channel vectorized row major Int8 format",
"Row major linear BFloat16 format", "Row major linear FP8 format", "Row major linear FP4 format",
and the kgen names "Half", "Float", "BFloat16", "FP4E2M1"). DLA-placed layers
carry "DLA" in their type, name or tactic: that wording is unconfirmed on hardware; the counts
stay correct for GPU-only engines either way.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any

PRECISION_PATTERNS = (
    ("INT8", re.compile(r"\bint8\b", re.I)),
    ("FP8", re.compile(r"\bfp8\b|\bfloat8", re.I)),
    ("FP4", re.compile(r"\bfp4", re.I)),  # "FP4", "FP4E2M1", "Row major linear FP4 format"
    ("INT4", re.compile(r"\bint4\b", re.I)),
    ("BF16", re.compile(r"\bbf16\b|\bbfloat16\b", re.I)),
    ("FP16", re.compile(r"\bfp16\b|\bhalf\b", re.I)),
    ("FP32", re.compile(r"\bfp32\b|\bfloat\b", re.I)),
    ("INT32", re.compile(r"\bint32\b", re.I)),
    ("INT64", re.compile(r"\bint64\b", re.I)),
    ("UINT8", re.compile(r"\buint8\b", re.I)),
    ("BOOL", re.compile(r"\bbool\b", re.I)),
)
COMPUTE_TYPES = re.compile(r"conv|matrix|matmul|gemm|fully|deconv|myelin|cask", re.I)
INT8_WARN_FRACTION = 0.5


@dataclass
class LayerSummary:
    layers: int = 0
    per_precision: dict[str, int] = field(default_factory=dict)
    dla_layers: int = 0
    gpu_layers: int = 0
    dla_gpu_transitions: int = 0
    reformat_layers: int = 0
    compute_layers: int = 0
    int8_compute_layers: int = 0
    detailed: bool = True
    warnings: list[str] = field(default_factory=list)


def _datatype(entries: Any) -> str | None:
    if not isinstance(entries, list):
        return None
    for entry in entries:
        text = entry.get("Format/Datatype", "") if isinstance(entry, dict) else str(entry)
        for name, pattern in PRECISION_PATTERNS:
            if pattern.search(text):
                return name
    return None


def layer_precision(layer: dict[str, Any]) -> str:
    """The precision a layer computes in: INT8 if it reads or writes INT8, else its output type."""
    in_type = _datatype(layer.get("Inputs"))
    out_type = _datatype(layer.get("Outputs"))
    if "INT8" in (in_type, out_type) and not is_reformat(layer):
        return "INT8"
    return out_type or in_type or "unknown"


def is_reformat(layer: dict[str, Any]) -> bool:
    kind = str(layer.get("LayerType", ""))
    return "reformat" in kind.lower() or "reformat" in str(layer.get("Name", "")).lower()


def on_dla(layer: dict[str, Any]) -> bool:
    text = " ".join(str(layer.get(k, "")) for k in ("LayerType", "Name", "TacticName", "Metadata"))
    return "dla" in text.lower()


def parse_layers(info_json: str) -> list[dict[str, Any]]:
    """Layer entries from ``get_engine_information(JSON)``; names-only output becomes ``{"Name": ...}``."""
    data = json.loads(info_json) if info_json.strip() else {}
    layers = data.get("Layers", []) if isinstance(data, dict) else data
    return [layer if isinstance(layer, dict) else {"Name": str(layer)} for layer in layers]


def summarise(info_json: str, requested_precision: str) -> LayerSummary:
    layers = parse_layers(info_json)
    summary = LayerSummary(layers=len(layers))
    summary.detailed = any("Outputs" in layer or "LayerType" in layer for layer in layers)
    previous: bool | None = None
    for layer in layers:
        precision = layer_precision(layer)
        summary.per_precision[precision] = summary.per_precision.get(precision, 0) + 1
        dla = on_dla(layer)
        summary.dla_layers += dla
        summary.gpu_layers += not dla
        if previous is not None and previous != dla:
            summary.dla_gpu_transitions += 1
        previous = dla
        if is_reformat(layer):
            summary.reformat_layers += 1
        elif COMPUTE_TYPES.search(str(layer.get("LayerType", ""))):
            summary.compute_layers += 1
            summary.int8_compute_layers += precision == "INT8"
    if not summary.detailed and layers:
        summary.warnings.append("layer info has names only (rebuild with --profiling-verbosity detailed)")
    elif requested_precision == "int8" and layers:
        base = summary.compute_layers or summary.layers
        int8 = summary.int8_compute_layers if summary.compute_layers else summary.per_precision.get("INT8", 0)
        if int8 < INT8_WARN_FRACTION * base:
            summary.warnings.append(
                f"INT8 was asked for but only {int8} of {base} compute layers run in INT8: "
                "TensorRT found no faster INT8 kernels or the Q/DQ placement blocks fusion; "
                "compare latency with fp16"
            )
    if summary.dla_layers and summary.gpu_layers:
        summary.warnings.append(
            f"{summary.gpu_layers} of {summary.layers} layers fell back to the GPU "
            f"({summary.dla_gpu_transitions} DLA-GPU transitions, each a copy through memory)"
        )
    return summary
