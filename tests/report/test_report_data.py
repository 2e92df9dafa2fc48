"""What each chart and table of the report gets: pure functions of RunData, checked on figures
worked out by hand from small, made-up results."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest

from calibration.report import compact_histogram
from edgedeploy.stages.report import data as d
from edgedeploy.stages.report.load import PrecisionData, RunData, json_kind, precision_from_name
from edgedeploy.stages.report.render import build_sections, render_markdown
from tests.conftest import run_cli


def _profile(
    median: float, p99: float, quantiles: list[float] | None = None, **batches: Any
) -> dict[str, Any]:
    sizes = {
        "1": {
            "median_ms": median,
            "p99_ms": p99,
            "throughput_ips": 1000.0 / median,
            "quantiles_ms": quantiles,
        }
    }
    sizes.update(batches)
    return {"backend": "onnxruntime", "settings": {"threads": 2, "warmup": "200 ms"}, "batch_sizes": sizes}


def _compare(cosine: float, top1: float | None = None, passed: bool = True) -> dict[str, Any]:
    return {"passed": passed, "outputs": {"logits": {"cosine": cosine, "top1_agreement": top1}}}


def _run() -> RunData:
    return RunData(
        sources=["x"],
        kind="json",
        model="m",
        target="orin",
        precisions=[
            PrecisionData("fp32", size_bytes=4000, compare=_compare(1.0, 1.0), profile=_profile(2.0, 3.0)),
            PrecisionData("fp16", size_bytes=2000, compare=_compare(0.9999, 1.0), profile=_profile(1.0, 1.5)),
            PrecisionData(
                "int8", size_bytes=1000, compare=_compare(0.99, 0.9, passed=False), profile=_profile(0.5, 2.0)
            ),
        ],
    )


def test_tradeoff_rows_have_speedup_and_size_relative_to_fp32() -> None:
    rows = {r.precision: r for r in d.tradeoff_rows(_run())}
    assert rows["fp32"].speedup == 1.0 and rows["fp32"].size_ratio == 1.0
    assert rows["fp16"].speedup == pytest.approx(2.0) and rows["fp16"].size_ratio == pytest.approx(0.5)
    assert rows["int8"].speedup == pytest.approx(4.0) and rows["int8"].size_ratio == pytest.approx(0.25)
    assert rows["int8"].accuracy_loss == pytest.approx(0.01)
    assert rows["int8"].passed is False and rows["int8"].top1 == 0.9


def test_tradeoff_takes_the_lowest_cosine_over_outputs_and_ignores_nan() -> None:
    run = _run()
    run.precisions[1].compare = {
        "passed": True,
        "outputs": {"a": {"cosine": 0.999}, "b": {"cosine": 0.95}, "c": {"cosine": float("nan")}},
    }
    assert d.tradeoff_rows(run)[1].cosine == 0.95


def test_a_discrete_output_counts_with_its_equal_share_not_its_cosine() -> None:
    """compare gates bool/integer outputs on their share of equal elements: the report's accuracy
    figure is that share, not the cosine of class ids."""
    run = _run()
    run.precisions[2].compare = {
        "passed": False,
        "outputs": {"scores": {"cosine": 0.9995}, "cls": {"cosine": 0.9991, "equal_share": 0.97}},
    }
    assert d.tradeoff_rows(run)[2].cosine == 0.97


def test_a_nan_figure_or_nan_values_fail_the_row_whatever_passed_says() -> None:
    """NaN or Inf always fails (compare); a file that says passed beside a NaN cosine is not believed."""
    run = _run()
    run.precisions[1].compare = {"passed": True, "outputs": {"a": {"cosine": float("nan")}}}
    run.precisions[2].compare = {"passed": True, "outputs": {"a": {"cosine": 0.99, "nan_inf": 3}}}
    rows = d.tradeoff_rows(run)
    assert [r.passed for r in rows] == [True, False, False]
    run.precisions[1].compare = {"passed": True, "outputs": {"a": {"cosine": 1.0, "snr_db": float("inf")}}}
    assert d.tradeoff_rows(run)[1].passed is True  # identical outputs: an infinite SNR
    assert d.recommended(run, d.tradeoff_rows(run))[0] == "fp16"


def test_recommended_is_the_lowest_precision_that_passed_unless_the_bundle_says() -> None:
    run = _run()
    assert d.recommended(run, d.tradeoff_rows(run))[0] == "fp16"  # int8 failed its gate
    run.primary = "fp32"
    assert d.recommended(run, d.tradeoff_rows(run)) == ("fp32", "the bundle's primary precision")


def test_scatter_points_floor_identical_outputs_and_skip_unprofiled_precisions() -> None:
    run = _run()
    run.precisions[1].profile = None
    points = {p.precision: p for p in d.scatter_points(d.tradeoff_rows(run))}
    assert set(points) == {"fp32", "int8"}
    assert points["fp32"].exact and points["fp32"].loss == d.EXACT_LOSS
    assert not points["int8"].exact and points["int8"].speedup == pytest.approx(4.0)
    assert points["int8"].size_bytes == 1000


def test_latency_cdf_uses_the_stored_quantiles_from_0_to_100_percent() -> None:
    run = _run()
    run.precisions[0].profile = _profile(2.0, 3.0, quantiles=[1.0, 2.0, 4.0])
    cdfs = d.latency_cdfs(run)
    assert len(cdfs) == 1  # the others kept no quantiles
    assert cdfs[0].latencies_ms == [1.0, 2.0, 4.0] and cdfs[0].percent == [0.0, 50.0, 100.0]
    assert cdfs[0].batch == "1"


def test_batch_curves_only_for_precisions_profiled_at_two_batch_sizes_in_batch_order() -> None:
    run = _run()
    run.precisions[2].profile = _profile(
        0.5, 2.0, **{"8": {"median_ms": 2.0, "p99_ms": 3.0, "throughput_ips": 4000.0}}
    )
    curves = d.batch_curves(run)
    assert [c.precision for c in curves] == ["int8"]
    assert curves[0].batches == [1, 8] and curves[0].throughput_ips == [2000.0, 4000.0]
    assert curves[0].p99_ms == [2.0, 3.0]


def _ranges() -> dict[str, Any]:
    tensors = [
        {"tensor": "a", "producer": "n0", "op": "Conv", "absmax": 10.0, "absmin": 1e-3, "risks": []},
        {"tensor": "b", "producer": "n1", "op": "Pow", "absmax": 9e4, "absmin": 1.0, "risks": ["overflow"]},
        {"tensor": "c", "producer": "n2", "op": "Relu", "absmax": 0.0, "absmin": None, "risks": []},
        {"tensor": "d", "producer": "n3", "op": "Mul", "absmax": 1.0, "absmin": 1e-7, "risks": []},
    ]
    return {"summary": {"samples": 4}, "tensors": tensors}


def _plan() -> dict[str, Any]:
    nodes = [
        {"node": "n0", "op": "Conv", "precision": "fp16"},
        {"node": "n1", "op": "Pow", "precision": "fp32", "reason": "overflow: 1% above 65504"},
        {"node": "n3", "op": "Mul", "precision": "fp16"},
    ]
    return {"nodes_total": 3, "nodes_fp32": 1, "nodes": nodes}


def test_fp16_range_bars_mark_the_tensors_whose_producer_is_kept_in_fp32_and_why() -> None:
    run = _run()
    run.ranges, run.plan = _ranges(), _plan()
    bars = {b.tensor: b for b in d.fp16_range_bars(run)}
    assert set(bars) == {"a", "b", "d"}  # an all-zero tensor has no range to draw
    assert bars["b"].kept_fp32 and bars["b"].reason == "overflow: 1% above 65504" and bars["b"].risk
    assert not bars["a"].kept_fp32 and bars["a"].absmin == 1e-3
    assert [n.node for n in d.fp32_nodes(run)] == ["n1"]


def test_fp16_range_bars_keep_the_risky_and_the_nearest_to_a_limit_when_there_are_many() -> None:
    run = _run()
    run.ranges, run.plan = _ranges(), _plan()
    kept = {b.tensor for b in d.fp16_range_bars(run, limit=2)}
    assert kept == {"b", "d"}  # b is at risk; d (down to 1e-7) is nearer a limit than a


def _calibration() -> dict[str, Any]:
    tensors = []
    for name, clipped in (("x", 0.001), ("y", 0.02), ("z", 0.0), ("w", 0.005)):
        counts = [0] * 256
        counts[10], counts[200] = 100, 3
        histogram = compact_histogram(counts, 16.0, bins=128)
        tensors.append(
            {
                "name": name,
                "amax": 8.0,
                "threshold": 6.0,
                "scale": 6.0 / 127,
                "clipped": clipped,
                "histogram": histogram,
            }
        )
    tensors.append(
        {"name": "old", "amax": 1.0, "threshold": 1.0, "scale": 1.0, "clipped": 0.5}
    )  # no histogram
    return {"tensors": tensors, "algorithm": {"algorithm": "entropy"}}


def test_compact_histogram_merges_bins_and_drops_trailing_empty_ones() -> None:
    counts = [0] * 256
    counts[0], counts[3], counts[100] = 5, 2, 7
    hist = compact_histogram(counts, 32.0, bins=128)
    assert hist["top"] == 32.0 and hist["bins"] == 128
    assert hist["counts"][0] == 5 and hist["counts"][1] == 2 and hist["counts"][50] == 7
    assert len(hist["counts"]) == 51 and sum(hist["counts"]) == 14


def test_clipping_panels_are_the_worst_clipped_tensors_with_a_histogram() -> None:
    run = _run()
    run.calibration = _calibration()
    panels = d.clipping_panels(run, limit=3)
    assert [p.tensor for p in panels] == ["y", "w", "x"]  # "old" has no histogram to draw
    p = panels[0]
    assert p.threshold == 6.0 and p.amax == 8.0 and p.clipped == 0.02
    assert len(p.edges) == len(p.counts) + 1
    assert p.edges[1] == pytest.approx(16.0 / 128)
    assert sum(p.counts) == 103 and p.counts[5] == 100  # bin 10 of 256 -> bin 5 of 128


def test_layer_series_is_in_graph_order_and_marks_the_first_tensor_over_tolerance() -> None:
    run = _run()
    layers = [
        {"tensor": "t3", "order": 3, "cosine": 0.9, "exceeds": True},
        {"tensor": "t1", "order": 1, "cosine": 1.0, "exceeds": False},
        {"tensor": "t2", "order": 2, "cosine": 0.95, "exceeds": True},
        {"tensor": "t4", "order": 4, "cosine": None, "exceeds": True},
    ]
    run.per_layer = [{"precision": "int8", "mode": "onnx", "gates": {"min_cosine": 0.99}, "layers": layers}]
    (s,) = d.layer_series(run)
    assert s.tensors == ["t1", "t2", "t3", "t4"]
    assert s.first_exceeding == 1 and s.tensors[s.first_exceeding] == "t2"
    assert s.losses[0] == d.EXACT_LOSS and s.losses[1] == pytest.approx(0.05) and s.losses[3] == 1.0
    assert s.tolerance == pytest.approx(0.01)


def test_budget_views_list_every_step_with_the_layers_kept() -> None:
    run = _run()
    run.budgets["int8"] = {
        "budget": "cosine>=0.999",
        "met": True,
        "higher": "fp32 (not quantized)",
        "steps": [
            {"kept": [], "measured": {"cosine": 0.99}, "met": False},
            {"kept": ["conv1"], "measured": {"cosine": 0.9995}, "met": True},
        ],
    }
    (v,) = d.budget_views(run)
    assert v.met and v.higher == "fp32 (not quantized)"
    assert v.steps[1] == (1, ["conv1"], {"cosine": 0.9995}, True)
    assert v.cost == ""  # a result that does not say what it cost
    run.budgets["int8"] |= {
        "measurements": 2, "probe_measurements": 40, "ranking": "one at a time on 8 sample(s)",
        "ranking_seconds": 12.34, "seconds": 20.0,
    }  # fmt: skip
    (v,) = d.budget_views(run)
    assert v.cost == (
        "2 variant(s) measured on all the samples, 40 for the ranking (one at a time on 8 sample(s), "
        "12.3 s); 20.0 s in all"
    )


def test_power_traces_only_where_measured_with_a_trace_and_rails_named() -> None:
    run = _run()
    energy = {
        "measurable": True,
        "source": "tegrastats",
        "rails_covered": "VDD_IN: whole-module input power",
        "trace": {"t_s": [0.0, 0.1, 0.2], "rails": {"VDD_IN": [5.0, 6.0, 5.5], "bad": [1.0]}},
    }
    run.precisions[0].profile = _profile(2.0, 3.0)
    run.precisions[0].profile["batch_sizes"]["1"]["energy"] = energy
    (t,) = d.power_traces(run)
    assert t.rails == {"VDD_IN": [5.0, 6.0, 5.5]}  # a rail whose length does not match is dropped
    assert t.source == "tegrastats" and t.times_s == [0.0, 0.1, 0.2]
    energy["measurable"] = False
    assert d.power_traces(run) == []


def test_profile_settings_flatten_clocks_and_skip_empty_values() -> None:
    run = _run()
    run.precisions[0].profile["settings"] = {"threads": 4, "clocks": {"gpu": "1300 MHz"}, "cpu": "", "x": 1}
    # the first precision that records a setting gives it (warm-up comes from fp16 here)
    assert d.profile_settings(run) == {"threads": "4", "clocks": "gpu=1300 MHz", "warmup": "200 ms"}


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("m.int8.onnx", "int8"),
        ("/a/m.fp16.ort.onnx", "fp16"),
        ("m.fp16.int8.engine", "int8"),
        ("m.onnx", None),
    ],
)
def test_precision_is_read_from_the_artifact_name(name: str, expected: str | None) -> None:
    assert precision_from_name(name) == expected


def test_json_kinds_are_recognised_by_their_keys() -> None:
    assert json_kind({"model_name": "m", "precisions": []}) == "run"
    assert json_kind({"reference": "a", "candidate": "b", "outputs": {}, "passed": True}) == "compare"
    assert json_kind({"compare": {}, "per_layer": {}}) == "compare-per-layer"
    assert json_kind({"artifact": "a", "backend": "b", "settings": {}, "batches": []}) == "profile"
    assert json_kind({"thresholds": {}, "tensors": [], "summary": {}}) == "analyze"
    assert json_kind({"artifact": {}, "report": {"tensors": []}}) == "calibrate"
    assert json_kind({"precision": {"precision": "fp16"}, "build": {}}) == "build"
    assert json_kind({"something": 1}) is None and json_kind([1, 2]) is None
    assert not math.isnan(d.EXACT_LOSS)


def test_json_files_of_two_models_are_refused_and_calibrate_json_names_its_target(tmp_path: Path) -> None:
    """A report is of one model: files about another are refused, not merged under the first's
    title; the artifact names' precision and ONNX Runtime suffixes name the same model."""
    import json

    from edgedeploy.errors import InputError
    from edgedeploy.stages.report.load import _model_of, load_json_files

    compare = {"reference": "ocr.fp32.onnx", "candidate": "ocr.fp16.onnx", "outputs": {}, "passed": True}
    profile = {"artifact": "out/ocr.fp16.ort.onnx", "backend": "onnxruntime", "settings": {}, "batches": []}
    calibrate = {"artifact": {}, "report": {"model": "magika.onnx"}, "target": "x86-64-vnni"}
    assert _model_of(compare) == _model_of(profile) == "ocr" and _model_of(calibrate) == "magika"
    paths = []
    for name, content in (("c.json", compare), ("p.json", profile), ("k.json", calibrate)):
        paths.append(tmp_path / name)
        paths[-1].write_text(json.dumps(content))
    with pytest.raises(InputError, match=r"k\.json is about magika, .*c\.json about ocr"):
        load_json_files(paths)
    assert load_json_files(paths[2:]).target == "x86-64-vnni"


def test_a_calibrate_or_analyze_json_names_the_model_as_the_other_files_do(tmp_path: Path) -> None:
    """The report's title from a calibration report or range analysis was its model's file name less
    .onnx and .fp32 only (``resnet_fp32``), where a compare of the same file names ``resnet``."""
    import json

    from edgedeploy.stages.report.load import _model_of, load_json_files

    compare = {"reference": "resnet_fp32.onnx", "candidate": "resnet_int8.onnx", "outputs": {}}
    compare["passed"] = True
    calibrate = {"artifact": {}, "report": {"model": "resnet_fp32.onnx"}}
    analyze = {"model": "out/resnet-fp32.onnx", "thresholds": {}, "tensors": [], "summary": {}}
    for name, content in (("k.json", calibrate), ("a.json", analyze)):
        (tmp_path / name).write_text(json.dumps(content))
        assert load_json_files([tmp_path / name]).model == _model_of(compare) == "resnet"


def test_artifacts_named_by_other_tools_get_their_precision_from_their_content(tmp_path: Path) -> None:
    """``profile model.onnx`` and ``profile model.quant.onnx`` (Model Optimizer's name) made a
    "candidate" row without a precision, so no speed-up over fp32, and the second file was refused
    as another model. profile and compare now record what the ONNX computes in (its content), and
    a name with another tool's suffix is of the same model."""
    import json

    import onnx
    from onnx import TensorProto, helper

    from edgedeploy.errors import InputError
    from edgedeploy.stages.precision.emulate import onnx_precision
    from edgedeploy.stages.report.load import load_json_files

    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])
    scale = helper.make_tensor("s", TensorProto.FLOAT, [], [0.1])
    quantize = helper.make_node("QuantizeLinear", ["x", "s"], ["q"])
    nodes = [quantize, helper.make_node("DequantizeLinear", ["q", "s"], ["y"])]
    qdq = helper.make_graph(nodes, "qdq", [x], [y], initializer=[scale])
    plain = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "plain", [x], [y])
    down = helper.make_node("Cast", ["x"], ["h"], to=TensorProto.FLOAT16)
    relu = helper.make_node("Relu", ["h"], ["r"])  # computes in float16 (a Cast pair alone does not)
    half = helper.make_graph([down, relu, helper.make_node("Cast", ["r"], ["y"], to=1)], "half", [x], [y])
    assert [onnx_precision(helper.make_model(g)) for g in (qdq, plain, half)] == ["int8", "fp32", "fp16"]
    model = tmp_path / "m.quant.onnx"
    onnx.save(helper.make_model(qdq, opset_imports=[helper.make_opsetid("", 17)]), model)
    result = run_cli("profile", model, "--iterations", "3", "--json", tmp_path / "p.json")
    assert result.code == 0 and json.loads((tmp_path / "p.json").read_text())["precision"] == "int8"
    # and its size, which a report of --json files showed as "-" (the path may be relative)
    assert json.loads((tmp_path / "p.json").read_text())["bytes"] == model.stat().st_size
    assert [r.size_bytes for r in load_json_files([tmp_path / "p.json"]).precisions] == [model.stat().st_size]
    # and the CPU it ran on, which a report of --json files titled "an unrecorded target"
    from edgedeploy.targets import cpu_model, host_target_name

    settings = json.loads((tmp_path / "p.json").read_text())["settings"]
    assert settings["host_target"] == host_target_name() and settings["cpu"].startswith(cpu_model())
    loaded = load_json_files([tmp_path / "p.json"])
    assert (loaded.target, loaded.target_description) == (host_target_name(), settings["cpu"])

    def profile(name: str, precision: str, ms: float) -> dict[str, object]:
        batch = {"batch_size": 1, "latency": {"median_ms": ms, "p99_ms": ms, "count": 5}}
        return {"artifact": name, "backend": "onnxruntime", "settings": {}, "batches": [batch],
                "precision": precision}  # fmt: skip

    files = {
        "a.json": profile("m.onnx", "fp32", 1.0),
        "b.json": profile("out/m.quant.onnx", "int8", 0.5),
        "c.json": {"reference": "m.onnx", "candidate": "m_int8.onnx", "candidate_precision": "int8",
                   "outputs": {}, "passed": True},
    }  # fmt: skip
    for name, content in files.items():
        (tmp_path / name).write_text(json.dumps(content))
    data = load_json_files([tmp_path / name for name in files])
    assert data.model == "m" and [r.precision for r in data.precisions] == ["fp32", "int8"]
    (tmp_path / "e.json").write_text(json.dumps(profile("m_v2.onnx", "fp32", 2.0)))  # not a tool's suffix
    with pytest.raises(InputError, match=r"e\.json is about m_v2, .*a\.json about m:"):
        load_json_files([tmp_path / "a.json", tmp_path / "e.json"])
    (tmp_path / "f.json").write_text(json.dumps(profile("out/m.onnx", "fp32", 2.0)))
    with pytest.raises(InputError, match=r"f\.json and .*a\.json both give fp32's profile figures"):
        load_json_files([tmp_path / "a.json", tmp_path / "f.json"])
    (tmp_path / "d.json").write_text(json.dumps(profile("mobile.onnx", "fp32", 1.0)))
    with pytest.raises(InputError, match=r"d\.json is about mobile, .*a\.json about m:"):
        load_json_files([tmp_path / "a.json", tmp_path / "d.json"])


def test_one_model_is_told_by_artifact_names_reduced_to_the_model_and_by_content(tmp_path: Path) -> None:
    """Names were compared pairwise, one a prefix of the other: ``m.quant`` and ``m_int8`` were refused
    as two models though each is ``m``'s, and ``det`` and ``det-v2`` (two networks) were one, so
    det-v2's cosine went into det's report. Each name is now reduced to its model by the precision
    and tool suffixes the README gives, and two files of one name with other content are two models."""
    import json

    from edgedeploy.errors import InputError
    from edgedeploy.stages.report.load import load_json_files, model_base

    def profile(name: str, precision: str) -> dict[str, object]:
        batch = {"batch_size": 1, "latency": {"median_ms": 1.0, "p99_ms": 1.0, "count": 5}}
        return {"artifact": name, "backend": "onnxruntime", "settings": {}, "batches": [batch],
                "precision": precision}  # fmt: skip

    def compare(reference: str, candidate: str, precision: str) -> dict[str, object]:
        return {"reference": reference, "candidate": candidate, "candidate_precision": precision,
                "outputs": {}, "passed": True}  # fmt: skip

    def written(**files: dict[str, object]) -> list[Path]:
        for name, content in files.items():
            (tmp_path / f"{name}.json").write_text(json.dumps(content))
        return [tmp_path / f"{name}.json" for name in files]

    names = ["m.onnx", "out/m.fp16.ort.onnx", "m.quant.onnx", "m_int8.onnx", "m-opt.onnx", "m.fp16.int8.plan"]
    assert {model_base(n) for n in names} == {"m"}
    assert [model_base(n) for n in ("det-v2.onnx", "m_v2.onnx", "ocr-cls.wheel.onnx")] == [
        "det-v2", "m_v2", "ocr-cls.wheel"
    ]  # fmt: skip
    # the README's case: other tools' artifacts of m, all three together
    three = written(
        p1=profile("m.onnx", "fp32"), p2=profile("m_int8.onnx", "int8"), p3=profile("m.quant.onnx", "fp16")
    )
    data = load_json_files(three)
    assert data.model == "m" and [r.precision for r in data.precisions] == ["fp32", "fp16", "int8"]
    # two networks whose names share a beginning
    two = written(d1=profile("det.onnx", "fp32"), d2=compare("det-v2.onnx", "det-v2.fp16.onnx", "fp16"))
    with pytest.raises(InputError, match=r"d2\.json is about det-v2, .*d1\.json about det: a report"):
        load_json_files(two)
    # one name, two models: the compare files' references are other files of other content
    for folder, weights in (("a", b"1234"), ("b", b"5678"), ("c", b"1234")):
        (tmp_path / folder).mkdir()
        (tmp_path / folder / "m.onnx").write_bytes(weights)
    a, b, c = (str(tmp_path / f / "m.onnx") for f in "abc")
    refs = written(
        r1=compare(a, "m.fp16.onnx", "fp16"),
        r2=compare(b, "m.int8.onnx", "int8"),
        r3=compare(c, "m_int8.onnx", "int8"),
    )
    with pytest.raises(InputError, match=r"r2\.json is about .*b/m\.onnx, .*r1\.json about .*a/m\.onnx: two"):
        load_json_files(refs[:2])
    assert [r.precision for r in load_json_files([refs[0], refs[2]]).precisions] == ["fp16", "int8"]  # a copy
    (tmp_path / "b" / "m.onnx").write_bytes(b"123")  # another size: told without hashing
    with pytest.raises(InputError, match=r"two files named m\.onnx with other content"):
        load_json_files([refs[1], written(p=profile(a, "fp32"))[0]])


def test_one_model_is_told_by_the_sha256_compare_and_profile_recorded(tmp_path: Path) -> None:
    """compare and profile JSON recorded no sha256, so report told two files of one name apart only
    by the files it found where it ran: two models' figures passed where the files were elsewhere
    (or were replaced since), one model's were refused where a file had changed after it was
    measured, and a renamed copy was another model. The recorded sha256 now decides; JSON
    without it reads as before."""
    import json

    from edgedeploy.errors import InputError
    from edgedeploy.stages.report.load import load_json_files

    one, two, three = "1" * 64, "2" * 64, "3" * 64

    def written(name: str, content: dict[str, object]) -> Path:
        (tmp_path / f"{name}.json").write_text(json.dumps(content))
        return tmp_path / f"{name}.json"

    def compare(name: str, reference: str, candidate: str, digests: tuple[str, str] | None = None) -> Path:
        content: dict[str, object] = {"reference": reference, "candidate": candidate}
        if digests:
            content.update(reference_sha256=digests[0], candidate_sha256=digests[1])
        return written(name, {**content, "outputs": {}, "passed": True})

    def profile(name: str, artifact: str, precision: str, digest: object = None) -> Path:
        batch = {"batch_size": 1, "latency": {"median_ms": 1.0, "p99_ms": 1.0, "count": 5}}
        content = {"artifact": artifact, "backend": "onnxruntime", "settings": {}, "batches": [batch]}
        return written(name, {**content, "precision": precision, **({"sha256": digest} if digest else {})})

    fp16 = compare("c1", "a/m.onnx", "a/m.fp16.onnx", (one, two))
    # not found here: the names alone said nothing; the digests say two models
    with pytest.raises(InputError, match=r"p1\.json is about b/m\.onnx, .*two files named m\.onnx"):
        load_json_files([fp16, profile("p1", "b/m.onnx", "fp32", three)])
    # found here with other content now (replaced since): the digests say one file
    for folder, weights in (("a", b"1234"), ("b", b"5678")):
        (tmp_path / folder).mkdir()
        (tmp_path / folder / "m.onnx").write_bytes(weights)
    a, b = str(tmp_path / "a" / "m.onnx"), str(tmp_path / "b" / "m.onnx")
    data = load_json_files([compare("c2", a, "m.fp16.onnx", (one, two)), profile("p2", b, "fp32", one)])
    assert data.model == "m" and [r.precision for r in data.precisions] == ["fp32", "fp16"]
    # a renamed copy of the fp16 model, profiled: the same file, so m's
    data = load_json_files([fp16, profile("p3", "copy.onnx", "fp16", two)])
    assert data.model == "m" and [r.precision for r in data.precisions] == ["fp16"]
    # one digest recorded, the other file's (older JSON) found here: its content against it
    hashed = "03ac674216f3e15c761ee1a5e255f067953623c8b388b4459e13f978d7c846f4"  # sha256 of b"1234"
    old = compare("c3", a, "m.int8.onnx")
    assert load_json_files([old, profile("p4", b, "fp32", hashed)]).model == "m"
    with pytest.raises(InputError, match=r"two files named m\.onnx with other content"):
        load_json_files([old, profile("p5", b, "fp32", one)])
    # a digest of another type refuses the file by its field
    with pytest.raises(InputError, match=r"p6\.json: field sha256 is a number"):
        load_json_files([profile("p6", "m.onnx", "fp32", 5)])
    bad = written("c4", {**json.loads(old.read_text()), "candidate_sha256": ["x"]})
    with pytest.raises(InputError, match=r"c4\.json: field candidate_sha256 is a list"):
        load_json_files([bad])


def test_a_low_precision_slower_than_fp32_is_named_only_where_the_figures_are_the_targets() -> None:
    """int8 can run slower than fp32 (PP-OCR's classifier on ONNX Runtime: 15.6 ms against 10.6 ms);
    a GPU target's figures measured with ONNX Runtime on this CPU say nothing about the device."""
    from edgedeploy.stats import slower_than_fp32

    run = _run()
    run.target = "x86-64-cpu"
    assert d.slower_precisions(run) == {}  # fp16 2x and int8 4x faster
    run.precisions[2].profile = _profile(2.5, 3.0, None, **{"8": {"median_ms": 30.0}})
    run.precisions[0].profile = _profile(2.0, 3.0, None, **{"8": {"median_ms": 20.0}})
    assert d.slower_precisions(run) == {
        "int8": "p50 2.5 ms against fp32's 2 ms at batch 1; slower at all 2 batch sizes profiled"
    }
    run.target = "jetson-orin-nx"  # measured with ONNX Runtime here, not on the board
    assert d.slower_precisions(run) == {}
    run.target = "x86-64-cpu"
    run.precisions[2].profile = _profile(2.5, 3.0, None, **{"8": {"median_ms": 19.0}})
    assert d.slower_precisions(run) == {}  # faster at batch 8: not slower at every batch size
    run.precisions[2].profile = _profile(2.3, 3.0)
    assert d.slower_precisions(run) == {}  # 1.15x: within one run's noise
    other = {**_profile(3.0, 4.0), "backend": "tensorrt"}
    assert slower_than_fp32({"fp32": _profile(2.0, 3.0), "int8": other}) == {}  # another backend
    assert slower_than_fp32({"int8": _profile(3.0, 4.0)}) == {}  # no fp32 to compare with


def test_a_per_layer_compare_beside_a_plain_compare_of_its_precision_is_refused_unless_the_same(
    tmp_path: Path,
) -> None:
    """``compare --per-layer --json`` holds the output table's compare (``compare``) beside the layers:
    next to a plain compare JSON of the same precision it was no duplicate, and whichever came last
    gave the page its figures (int8's cosine 0.95 or 0.999 by argument order). Other figures are now
    refused in one line as two compares of one precision are; the same figures (one compare run,
    written both ways) are one source, taken with the per-layer view; and two per-layer files of one
    precision are refused too."""
    import json

    from edgedeploy.errors import InputError
    from edgedeploy.stages.report.load import load_json_files

    def compare(cosine: float) -> dict[str, object]:
        return {"reference": "m.onnx", "candidate": "m.int8.onnx", "candidate_precision": "int8",
                "mode": "onnx", "passed": True, "gates": {"min_cosine": 0.9},
                "outputs": {"y": {"cosine": cosine, "max_abs": 0.1, "identical": False}}}  # fmt: skip

    layers = {"precision": "int8", "gates": {"min_cosine": 0.9}, "layers": [
        {"tensor": "a", "order": 0, "cosine": 0.99, "exceeds": False}]}  # fmt: skip
    files = {
        "plain": compare(0.999),
        "layers": {"compare": compare(0.95), "per_layer": layers},
        "same": {"compare": compare(0.999), "per_layer": layers},
    }
    for name, content in files.items():
        (tmp_path / f"{name}.json").write_text(json.dumps(content))
    plain, other, same = (tmp_path / f"{name}.json" for name in files)
    for paths in ([plain, other], [other, plain]):
        with pytest.raises(InputError, match=r"both give int8's compare figures"):
            load_json_files(paths)
    for paths in ([plain, same], [same, plain]):
        data = load_json_files(paths)
        assert data.row("int8").compare["outputs"]["y"]["cosine"] == 0.999
        assert len(data.per_layer) == 1
    with pytest.raises(InputError, match=r"both give int8's per-layer figures"):
        load_json_files([other, same])
    (tmp_path / "again.json").write_text(json.dumps(files["same"]))
    with pytest.raises(InputError, match=r"both give int8's per-layer figures"):
        load_json_files([same, tmp_path / "again.json"])


def test_tradeoff_rows_show_the_norm_ratio_farthest_from_1() -> None:
    """compare's cosine gate checks scale (an output 100x the reference has cosine 1): the report
    shows the norm ratio it gated, the output's farthest from 1, in its table and report.md."""
    from edgedeploy.stages.report.render import render_markdown

    run = _run()
    run.precisions[2].compare = {
        "passed": False,
        "outputs": {"a": {"cosine": 1.0, "norm_ratio": 0.98}, "b": {"cosine": 1.0, "norm_ratio": 100.0}},
    }
    rows = d.tradeoff_rows(run)
    assert rows[2].norm_ratio == 100.0 and rows[1].norm_ratio is None and rows[2].passed is False
    text = render_markdown(run, None)
    assert "| norm ratio |" in text and "| 100.000000 |" in text


def _batch(median: float, quantiles: list[float] | None = None) -> dict[str, Any]:
    return {"median_ms": median, "p99_ms": median, "throughput_ips": 1.0, "quantiles_ms": quantiles}


def test_speedup_compares_fp32_and_each_precision_at_a_batch_size_both_profiled() -> None:
    """fp32 profiled at batch 64 only, int8 at 1 and 64: the speed-up is fp32's batch-64 p50 over
    int8's batch-64 p50 (not over its batch-1 p50, 3.6x where the common batch gives 1.66x), and the
    table, its note, the Markdown and the CDF say batch 64."""
    fp32 = {"backend": "onnxruntime", "batch_sizes": {"64": _batch(0.0307, [0.02, 0.03, 0.2])}}
    int8 = {
        "backend": "onnxruntime",
        "batch_sizes": {
            "1": _batch(0.0085, [0.008, 0.0085, 0.02]),
            "64": _batch(0.0185, [0.01, 0.0185, 0.03]),
        },
    }
    run = RunData(
        sources=["x"], kind="json", model="m", target="x86-64",
        precisions=[PrecisionData("fp32", profile=fp32), PrecisionData("int8", profile=int8)],
    )  # fmt: skip
    rows = {r.precision: r for r in d.tradeoff_rows(run)}
    assert rows["int8"].speedup == pytest.approx(0.0307 / 0.0185)
    assert rows["int8"].batch == "64" and rows["int8"].p50_ms == 0.0185
    figures = {p["precision"]: p for p in d.report_figures(run)["precisions"]}
    assert figures["int8"]["batch_size"] == 64
    assert figures["int8"]["speedup"] == pytest.approx(1.659, abs=1e-3)
    assert [c.batch for c in d.latency_cdfs(run)] == ["64", "64"]
    page = "".join(s.body for s in build_sections(run, None))
    assert "batch 1 " not in page and "for batch 64." in page
    assert "Latency figures are for batch 64." in render_markdown(run)


def test_no_speedup_without_a_batch_size_in_common_with_fp32_and_the_page_says_why() -> None:
    fp32 = {"backend": "onnxruntime", "batch_sizes": {"64": _batch(2.0, [1.0, 2.0, 3.0])}}
    int8 = {"backend": "onnxruntime", "batch_sizes": {"1": _batch(0.5, [0.4, 0.5, 0.6])}}
    run = RunData(
        sources=["x"], kind="json", model="m", target="x86-64",
        precisions=[
            PrecisionData("fp32", compare=_compare(1.0), profile=fp32),
            PrecisionData("int8", compare=_compare(0.99), profile=int8),
        ],
    )  # fmt: skip
    rows = {r.precision: r for r in d.tradeoff_rows(run)}
    assert rows["fp32"].speedup == 1.0 and rows["int8"].speedup is None
    assert rows["int8"].batch == "1" and rows["int8"].p50_ms == 0.5
    assert [p.precision for p in d.scatter_points(list(rows.values()))] == ["fp32"]
    note = "int8: no speed-up: no batch size was profiled for both it and fp32 (int8: 1; fp32: 64)."
    page = "".join(s.body for s in build_sections(run, None))
    assert "fp32 at batch 64, int8 at batch 1" in page and note in page
    assert note in render_markdown(run)
    cdfs = d.latency_cdfs(run)  # drawn each at its own batch, and the legend and caption say so
    assert [(c.precision, c.batch) for c in cdfs] == [("fp32", "64"), ("int8", "1")]


def test_the_power_section_is_at_the_batch_the_trade_off_table_shows() -> None:
    """With fp32 at batch 64 only, int8's row is at 64: its power row and trace are too, not batch 1's."""

    def energy(watts: float) -> dict[str, Any]:
        trace = {"t_s": [0.0, 1.0], "rails": {"VDD_IN": [watts, watts]}}
        return {"measurable": True, "source": "tegrastats", "avg_power_w": watts,
                "energy_per_inference_mj": watts, "rails": {"VDD_IN": watts}, "trace": trace}  # fmt: skip

    fp32 = {"backend": "tensorrt", "batch_sizes": {"64": {**_batch(2.0), "energy": energy(9.0)}}}
    one, many = {**_batch(0.5), "energy": energy(3.0)}, {**_batch(1.0), "energy": energy(7.0)}
    int8 = {"backend": "tensorrt", "batch_sizes": {"1": one, "64": many}}
    run = RunData(
        sources=["x"], kind="json", model="m", target="jetson-orin-nano",
        precisions=[PrecisionData("fp32", profile=fp32), PrecisionData("int8", profile=int8)],
    )  # fmt: skip
    assert [t.rails["VDD_IN"][0] for t in d.power_traces(run)] == [9.0, 7.0]
    power = next(s for s in build_sections(run, None) if s.key == "power").body
    assert "VDD_IN 7.00 W" in power and "VDD_IN 3.00 W" not in power


@pytest.mark.parametrize(
    ("fp32", "why"),
    [
        (
            {"backend": "onnxruntime", "batch_sizes": {"64": _batch(2.0, [1.0, 2.0, 3.0])}},
            "no batch size was profiled for both it and fp32 (int8: 1; fp32: 64)",
        ),
        (None, "fp32 was not profiled"),
    ],
    ids=["no-batch-in-common", "fp32-not-profiled"],
)
def test_report_json_says_why_a_profiled_precision_has_no_speedup(
    fp32: dict[str, Any] | None, why: str
) -> None:
    """report.md and report.html said why int8 had no speed-up where it shared no batch size with fp32,
    but report --json held "speedup": null and no reason; and where fp32 was not profiled at all
    neither the page nor the JSON said why. Both now say it, the JSON as "no_speedup"."""
    int8 = {"backend": "onnxruntime", "batch_sizes": {"1": _batch(0.5, [0.4, 0.5, 0.6])}}
    run = RunData(
        sources=["x"], kind="json", model="m", target="x86-64",
        precisions=[
            PrecisionData("fp32", compare=_compare(1.0), profile=fp32),
            PrecisionData("int8", compare=_compare(0.99), profile=int8),
        ],
    )  # fmt: skip
    figures = {p["precision"]: p for p in d.report_figures(run)["precisions"]}
    assert figures["int8"]["speedup"] is None and figures["int8"]["no_speedup"] == why
    assert figures["fp32"]["no_speedup"] is None
    note = f"int8: no speed-up: {why}."
    assert note in "".join(s.body for s in build_sections(run, None))
    assert note in render_markdown(run)
