"""The layer-information summary: precisions, DLA placement and transitions, names-only output."""

from __future__ import annotations

import json

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
