"""The layer-information summary: precisions, DLA placement and transitions, names-only output."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from edgedeploy.backends.trt_inspect import layer_precision, summarise


def layer(name: str, kind: str, out: str, inp: str | None = None, tactic: str = "") -> dict:
    entry = {"Name": name, "LayerType": kind, "Outputs": [{"Format/Datatype": out}], "TacticName": tactic}
    if inp:
        entry["Inputs"] = [{"Format/Datatype": inp}]
    return entry


def test_layer_precision_reads_format_strings() -> None:
    assert (
        layer_precision(layer("a", "CaskConvolution", "Channel major FP16 format where channel % 8 == 0"))
        == "FP16"
    )
    assert (
        layer_precision(layer("b", "CaskConvolution", "Row major linear FP32", inp="Int8 NC32HW32")) == "INT8"
    )
    assert layer_precision(layer("c", "Reformat", "Row major linear FP32", inp="Int8 NC32HW32")) == "FP32"
    assert layer_precision({"Name": "d"}) == "unknown"


def test_summary_counts_dla_gpu_transitions_and_reformats() -> None:
    layers = [
        layer("in", "Reformat", "Row major linear FP16"),
        layer("{ForeignNode[conv1...relu2]}", "DLA", "Channel major FP16"),
        layer("softmax", "Softmax", "Row major linear FP32"),
        layer("{ForeignNode[conv3]}", "DLA", "Channel major FP16"),
    ]
    summary = summarise(json.dumps({"Layers": layers}), "fp16")
    assert summary.layers == 4 and summary.dla_layers == 2 and summary.gpu_layers == 2
    assert summary.dla_gpu_transitions == 3 and summary.reformat_layers == 1
    assert summary.per_precision == {"FP16": 3, "FP32": 1}
    assert any("2 of 4 layers fell back to the GPU (3 DLA-GPU transitions" in w for w in summary.warnings)


def test_names_only_layer_info_is_summarised_with_a_hint() -> None:
    summary = summarise(json.dumps({"Layers": ["conv1", "relu1"]}), "int8")
    assert summary.layers == 2 and not summary.detailed
    assert summary.warnings == ["layer info has names only (rebuild with --profiling-verbosity detailed)"]
    assert summarise("", "fp32").layers == 0


# "Format/Datatype" strings as NVIDIA's engine explorer lists them: docs/tensorrt-facts.md,
# "Engine inspector".
TREX_FORMATS = [
    ("Row major linear FP32", "FP32"),
    ("Row major linear FP16 format", "FP16"),
    ("Thirty-two wide channel vectorized row major Int8 format", "INT8"),
    ("Channel major BFloat16 format where channel % 8 == 0", "BF16"),
    ("Row major linear BFloat16 format", "BF16"),
    ("Row major linear FP8 format", "FP8"),
    ("Row major linear FP4 format (kLINEAR)", "FP4"),
    ("FP4E2M1", "FP4"),
    ("BFloat16", "BF16"),
    ("Half", "FP16"),
    ("Float", "FP32"),
    ("Int4", "INT4"),
    ("Row major linear UInt8 format", "UINT8"),
    ("Row major linear Int64 format", "INT64"),
    ("Row major linear BOOL", "BOOL"),
]


@pytest.mark.parametrize(("text", "precision"), TREX_FORMATS)
def test_every_inspector_format_string_counts_as_its_precision(text: str, precision: str) -> None:
    layer = {"Name": "l", "LayerType": "Reformat", "Outputs": [{"Format/Datatype": text}]}
    assert layer_precision(layer) == precision


TREX_EXAMPLES = Path(__file__).resolve().parents[1] / "data" / "trex"


def test_real_engine_inspector_output_of_a_qat_resnet_counts_int8_compute_layers() -> None:
    """trtexec --exportLayerInfo of a Q/DQ ResNet on an A100, from the engine explorer's examples
    (docs/tensorrt-facts.md, "Engine inspector")."""
    info = (TREX_EXAMPLES / "qat-residual-qgap_resnet-qat-residual-qgap.graph.json").read_text()
    summary = summarise(info, "int8")
    assert summary.layers == 24 and summary.per_precision == {"INT8": 23, "FP32": 1}
    assert summary.compute_layers == summary.int8_compute_layers == 21 and summary.warnings == []


def test_real_fp16_engine_output_warns_when_int8_was_asked() -> None:
    """The same ResNet built fp16 (docs/tensorrt-facts.md, "Engine inspector")."""
    summary = summarise((TREX_EXAMPLES / "fp16_resnet.graph.json").read_text(), "int8")
    assert summary.per_precision == {"FP16": 35, "FP32": 1} and "unknown" not in summary.per_precision
    assert any("only 0 of 22 compute layers run in INT8" in w for w in summary.warnings)
