"""report.html is one self-contained page and report.md says what the JSON it came from says."""

from __future__ import annotations

import html
import json
import re
import sys
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest

from edgedeploy.errors import InputError
from edgedeploy.stages.report import load_run, write_report
from edgedeploy.stages.report.load import RunData


def _run_record(tmp: Path) -> dict[str, Any]:
    """A run.json as `edgedeploy run` writes it, with sidecars beside it (made-up figures)."""
    (tmp / "m.fp16.onnx").write_bytes(b"x" * 500)
    (tmp / "m.fp32.onnx").write_bytes(b"x" * 1000)
    (tmp / "m.int8.onnx").write_bytes(b"x" * 250)
    hist = {"top": 8.0, "bins": 128, "counts": [50, 20, 10, 5, 2, 1] + [0] * 60 + [1]}
    calib = {
        "model": "m.fp32.onnx",
        "algorithm": {"algorithm": "entropy"},
        "samples": 64,
        "synthetic": False,
        "placement": "onnxruntime",
        "weight_bits": 7,
        "quantized_nodes": ["conv"],
        "tensors": [
            {
                "name": "relu_out",
                "amax": 4.2,
                "threshold": 2.5,
                "scale": 0.02,
                "clipped": 0.0123,
                "dtype": "uint8",
                "histogram": hist,
            }
        ],
    }
    (tmp / "m.calib.json").write_text(json.dumps(calib))
    ranges = {
        "summary": {"samples": 64, "tensors": 2, "weights": 1, "tensors_at_risk": 1, "weights_at_risk": 0},
        "tensors": [
            {"tensor": "a", "producer": "conv", "op": "Conv", "absmax": 3.0, "absmin": 1e-4, "risks": []},
            {
                "tensor": "b",
                "producer": "pow",
                "op": "Pow",
                "absmax": 7e4,
                "absmin": 2.0,
                "risks": ["overflow"],
            },
        ],
    }
    (tmp / "m.fp16.ranges.json").write_text(json.dumps(ranges))
    plan = {
        "nodes_total": 2,
        "nodes_fp32": 1,
        "nodes": [
            {"node": "conv", "op": "Conv", "precision": "fp16"},
            {"node": "pow", "op": "Pow", "precision": "fp32", "reason": "overflow: 2% of values above 65504"},
        ],
    }
    (tmp / "m.fp16.plan.json").write_text(json.dumps(plan))

    def precision(name: str, median: float, cosine: float, passed: bool, files: list[str]) -> dict[str, Any]:
        quantiles = [median * (0.9 + 0.2 * i / 100) for i in range(101)]
        return {
            "precision": name,
            "backend": "onnxruntime",
            "model": str(tmp / f"m.{name}.onnx"),
            "files": [str(tmp / f) for f in files],
            "info": {},
            "compare": {"passed": passed, "outputs": {"logits": {"cosine": cosine, "top1_agreement": 1.0}}},
            "profile": {
                "settings": {"threads": 2, "warmup": "200 ms", "measure": "2 s"},
                "batch_sizes": {
                    "1": {
                        "median_ms": median,
                        "p99_ms": median * 1.5,
                        "throughput_ips": 1000 / median,
                        "energy": None,
                        "quantiles_ms": quantiles,
                    }
                },
            },
        }

    return {
        "model_name": "m",
        "target": "jetson-orin-nano",
        "tools": {"edgedeploy": "0.1.0", "onnxruntime": "1.2.3", "tensorrt": None},
        "gates": {"min_cosine": 0.99, "min_top1": None},
        "precisions": [
            precision("fp32", 2.0, 1.0, True, ["m.fp32.onnx"]),
            precision("fp16", 1.25, 0.99999, True, ["m.fp16.onnx", "m.fp16.plan.json", "m.fp16.ranges.json"]),
            precision("int8", 0.8, 0.98, False, ["m.int8.onnx", "m.calib.json"]),
        ],
        "bundle": None,
    }


@pytest.fixture()
def workdir(tmp_path: Path) -> Path:
    work = tmp_path / "work"
    work.mkdir()
    (work / "run.json").write_text(json.dumps(_run_record(work)))
    return work


def test_report_html_is_one_page_that_loads_nothing(workdir: Path, tmp_path: Path) -> None:
    files = write_report(load_run([workdir]), tmp_path / "out")
    page = files.html.read_text()
    assert files.sections == ["headline", "tradeoff", "latency", "fp16", "int8"]
    assert page.count("<svg") == 4  # trade-off, CDF, FP16 ranges, INT8 clipping
    assert "<script" not in page and "<link" not in page and "<img" not in page
    assert "@import" not in page
    referenced = set(re.findall(r"url\(([^)]*)\)", page))
    assert all(ref.startswith("#") for ref in referenced), referenced  # clip paths: ids in the page
    # the only URLs are XML namespaces (declarations, never fetched)
    urls = set(re.findall(r"https?://[^\s\"'<>)]+", page))
    assert urls <= {"http://www.w3.org/2000/svg", "http://www.w3.org/1999/xlink"}, urls
    assert "@media print" in page and "@page { size: A4" in page and "@media (max-width" in page
    assert "default-src 'none'" in page
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["report.html", "report.md"]


def test_report_says_pass_and_fail_in_words_not_only_colour(workdir: Path, tmp_path: Path) -> None:
    page = write_report(load_run([workdir]), tmp_path / "out").html.read_text()
    assert '<span class="fail">FAIL</span>' in page and '<span class="pass">pass</span>' in page
    assert "[fp32]" in page  # the range chart labels kept tensors in text
    assert "overflow: 2% of values above 65504" in page  # why the node stays fp32


def _markdown_rows(text: str) -> dict[str, list[str]]:
    rows = {}
    for line in text.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if line.startswith("| ") and cells[0] in ("fp32", "fp16", "int8"):
            rows[cells[0]] = cells
    return rows


def test_markdown_summary_matches_the_run_json_it_came_from(workdir: Path, tmp_path: Path) -> None:
    record = json.loads((workdir / "run.json").read_text())
    text = write_report(load_run([workdir]), tmp_path / "out").markdown.read_text()
    header = next(line for line in text.splitlines() if line.startswith("| precision"))
    columns = [c.strip() for c in header.strip("|").split("|")]
    rows = _markdown_rows(text)
    assert list(rows) == [p["precision"] for p in record["precisions"]]
    fp32_median = record["precisions"][0]["profile"]["batch_sizes"]["1"]["median_ms"]
    for p in record["precisions"]:
        row = dict(zip(columns, rows[p["precision"]], strict=True))
        b1 = p["profile"]["batch_sizes"]["1"]
        assert float(row["p50 ms"]) == pytest.approx(b1["median_ms"], rel=1e-3)
        assert float(row["p99 ms"]) == pytest.approx(b1["p99_ms"], rel=1e-3)
        assert float(row["speed-up"]) == pytest.approx(fp32_median / b1["median_ms"], abs=0.006)
        assert float(row["min cosine"]) == pytest.approx(
            p["compare"]["outputs"]["logits"]["cosine"], abs=1e-6
        )
        assert row["gate"] == ("pass" if p["compare"]["passed"] else "**FAIL**")
    assert "**accuracy gate FAILED: int8**" in text
    assert "recommended precision: **fp16**" in text  # the lowest precision that passed
    assert "`relu_out` (1.230% clipped)" in text
    assert "1 node(s) kept in fp32" in text


def test_report_from_json_files_draws_what_they_hold(workdir: Path, tmp_path: Path) -> None:
    profile = {
        "artifact": str(tmp_path / "m.int8.onnx"),
        "backend": "onnxruntime",
        "settings": {"threads": 1},
        "batches": [
            {
                "batch_size": b,
                "latency": {"median_ms": 0.5 * b, "p99_ms": 0.7 * b},
                "throughput_ips": 2000.0,
                "iterations": 10,
                "quantiles_ms": [0.4 * b, 0.5 * b, 0.9 * b],
            }
            for b in (1, 4)
        ],
        "warnings": [],
    }
    path = tmp_path / "profile.json"
    path.write_text(json.dumps(profile))
    calibrate = tmp_path / "calibrate.json"  # as `calibrate --json` writes it
    calibrate.write_text(
        json.dumps(
            {"artifact": {"precision": "int8"}, "report": json.loads((workdir / "m.calib.json").read_text())}
        )
    )
    run = load_run([path, calibrate])
    assert run.kind == "json" and [p.precision for p in run.precisions] == ["int8"]
    files = write_report(run, tmp_path / "out")
    assert files.sections == ["headline", "tradeoff", "latency", "int8"]
    assert files.html.read_text().count("<svg") == 3  # CDF, batch curves, clipping


def test_a_json_file_of_another_kind_is_refused_by_name(tmp_path: Path) -> None:
    path = tmp_path / "other.json"
    path.write_text('{"hello": 1}')
    with pytest.raises(InputError, match=r"other\.json: not a JSON file edgedeploy wrote"):
        load_run([path])
    with pytest.raises(InputError, match=r"no run\.json"):
        load_run([tmp_path])


def test_without_matplotlib_report_names_the_install_line_and_writes_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    with pytest.raises(InputError, match=r"pip install 'edgedeploy\[report\]'"):
        write_report(RunData(sources=["x"], kind="json"), tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_report_command_writes_into_its_default_folder_and_prints_the_page(
    workdir: Path, tmp_path: Path
) -> None:
    from tests.conftest import assert_clean_input_error, run_cli

    result = run_cli("report", workdir, "--json", "r.json", cwd=tmp_path)
    assert result.code == 0, result.stderr
    page = tmp_path / "edgedeploy-report" / "report.html"
    assert Path(result.stdout.strip()) == page.resolve() and page.is_file()
    info = json.loads((tmp_path / "r.json").read_text())
    assert info["sections"] == ["headline", "tradeoff", "latency", "fp16", "int8"]
    assert info["size_bytes"] == page.stat().st_size
    assert_clean_input_error(run_cli("report", tmp_path / "nowhere.json", cwd=tmp_path), "nowhere.json")


def test_every_section_draws_when_its_data_is_there(workdir: Path, tmp_path: Path) -> None:
    run = load_run([workdir])
    int8 = run.row("int8")
    assert int8.profile is not None
    batch1 = int8.profile["batch_sizes"]["1"]
    batch1["energy"] = {
        "measurable": True, "source": "tegrastats", "avg_power_w": 5.5, "energy_per_inference_mj": 4.4,
        "rails": {"VDD_IN": 5.5, "VDD_SOC": 1.2}, "rails_covered": "VDD_IN: whole-module input power",
        "trace": {"t_s": [0.0, 0.1, 0.2], "rails": {"VDD_IN": [5.0, 6.0, 5.5], "VDD_SOC": [1.1, 1.3, 1.2]}},
    }  # fmt: skip
    int8.profile["batch_sizes"]["8"] = {"median_ms": 3.0, "p99_ms": 4.0, "throughput_ips": 2666.0}
    layers = [
        {"tensor": f"t{i}", "order": i, "cosine": 1 - 10.0 ** (i - 6), "exceeds": i >= 3} for i in range(5)
    ]
    run.per_layer.append(
        {"precision": "int8", "mode": "onnx", "gates": {"min_cosine": 0.999}, "layers": layers}
    )
    steps = [
        {"kept": [], "measured": {"cosine": 0.98}, "met": False},
        {"kept": ["conv"], "measured": {"cosine": 0.995}, "met": True},
    ]
    run.budgets["int8"] = {
        "budget": "cosine>=0.99",
        "met": True,
        "higher": "fp32 (not quantized)",
        "steps": steps,
        "measurements": 2,
        "probe_measurements": 3,
        "ranking": "one at a time on 8 sample(s)",
        "ranking_seconds": 1.0,
        "seconds": 2.5,
    }
    files = write_report(run, tmp_path / "out")
    page = files.html.read_text()
    assert files.sections == ["headline", "tradeoff", "latency", "fp16", "int8", "budget", "power"]
    # scatter, CDF, batch curves, FP16 ranges, clipping, per-layer, power trace
    assert page.count("<svg") == 7
    assert "First tensor over tolerance (int8): <code>t3</code>" in page
    assert "VDD_IN 5.50 W" in page and "1: conv" in page
    assert "Search cost: 2 variant(s) measured on all the samples, 3 for the ranking" in page
    summary = files.markdown.read_text()
    assert "3 for the ranking (one at a time on 8 sample(s), 1.0 s); 2.5 s in all)" in summary
    assert "energy mJ/inf" in files.markdown.read_text() and "| 4.4 |" in files.markdown.read_text()


def test_a_build_json_elsewhere_gives_the_size_model_and_target(digits: Any, tmp_path: Path) -> None:
    """`build -o out --json j/b.json` records a path relative to where it ran: the report, reading
    j/b.json, takes the size, model and target from the record instead of showing '-'."""
    from tests.conftest import run_cli

    (tmp_path / "j").mkdir()
    built = run_cli(
        "build", digits.onnx_path, "--precision", "fp16", "--target", "x86-64-cpu", "-o", "o",
        "--json", "j/b.json", cwd=tmp_path,
    )  # fmt: skip
    assert built.code == 0, built.stderr
    record = json.loads((tmp_path / "j" / "b.json").read_text())
    size = (tmp_path / record["precision"]["path"]).stat().st_size
    assert record["precision"]["bytes"] == size and record["build"]["bytes"] > 0
    run = load_run([tmp_path / "j" / "b.json"])
    assert run.target == "x86-64-cpu" and run.model == Path(digits.onnx_path).stem
    assert [p.size_bytes for p in run.precisions] == [size]


def test_two_calibrate_or_two_analyze_json_files_are_refused(workdir: Path, tmp_path: Path) -> None:
    """A report holds one calibration report and one range analysis: a second calibrate --json or
    analyze --json file silently replaced the first; it is refused by name, as two profiles are."""
    from tests.conftest import assert_clean_input_error, run_cli

    calib = json.loads((workdir / "m.calib.json").read_text())
    ranges = json.loads((workdir / "m.fp16.ranges.json").read_text())
    files = {
        "a.calib.json": {"artifact": {"precision": "int8"}, "report": calib},  # as calibrate --json writes
        "b.calib.json": {"artifact": {"precision": "int8"}, "report": {**calib, "samples": 32}},
        "a.ranges.json": {"model": "m.fp32.onnx", "thresholds": {}, **ranges},  # as analyze --json writes
        "b.ranges.json": {"model": "m.fp32.onnx", "thresholds": {}, **ranges},
    }
    for name, content in files.items():
        (tmp_path / name).write_text(json.dumps(content))
    assert load_run([tmp_path / "a.calib.json", tmp_path / "a.ranges.json"]).calibration == calib
    with pytest.raises(InputError, match=r"b\.calib\.json and .*a\.calib\.json are both INT8 calibration"):
        load_run([tmp_path / "a.calib.json", tmp_path / "b.calib.json"])
    with pytest.raises(InputError, match=r"b\.ranges\.json and .*a\.ranges\.json are both fp16 range"):
        load_run([tmp_path / "a.ranges.json", tmp_path / "a.calib.json", tmp_path / "b.ranges.json"])
    result = run_cli("report", "a.calib.json", "b.calib.json", "-o", "r", cwd=tmp_path)
    assert_clean_input_error(result, "b.calib.json and a.calib.json are both INT8 calibration reports")
    assert not (tmp_path / "r").exists()


def test_a_gpu_targets_latencies_measured_on_this_cpu_say_so_as_runs_table_does(
    workdir: Path, tmp_path: Path
) -> None:
    """A run for a Jetson whose backend fell back to ONNX Runtime here: `run`'s table title says the
    figures were measured on this machine's CPU; the report titled its latency and speed-up columns
    just 'm on jetson-orin-nano', as if they were the board's."""
    import html

    from edgedeploy.cli.run import _where_measured

    MEASURED_OFF_TARGET = "measured with ONNX Runtime on this machine's CPU, not on the device"
    run = load_run([workdir])  # jetson-orin-nano, every precision on onnxruntime
    files = write_report(run, tmp_path / "out")
    page = html.unescape(files.html.read_text())
    assert f"<h1>m on jetson-orin-nano ({MEASURED_OFF_TARGET})</h1>" in page
    assert f"Latency and speed-up: {MEASURED_OFF_TARGET}." in page  # the trade-off table's caption
    assert f"Latencies {MEASURED_OFF_TARGET}." in page  # the latency section
    summary = files.markdown.read_text()
    assert summary.startswith(f"## edgedeploy: m on jetson-orin-nano ({MEASURED_OFF_TARGET})\n")
    assert _where_measured(run) == f" ({MEASURED_OFF_TARGET})"  # what `run`'s table title says
    for target, backend in (("x86-64-cpu", "onnxruntime"), ("jetson-orin-nano", "tensorrt")):
        run.target = target
        for row in run.precisions:
            row.backend = backend
        files = write_report(run, tmp_path / target)
        assert "not on the device" not in files.html.read_text() + files.markdown.read_text()


def test_a_report_of_build_and_profile_json_names_the_tool_versions_they_recorded(tmp_path: Path) -> None:
    """build --json records onnxruntime's version in its build info and profile --json in its
    settings (tensorrt's, for an engine); the report of those files said 'tools –'."""
    import onnx
    import onnxruntime
    from onnx import TensorProto, helper

    from tests.conftest import run_cli

    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])
    graph = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "tiny", [x], [y])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), tmp_path / "m.onnx")
    built = run_cli(
        "build", "m.onnx", "--precision", "fp16", "--target", "x86-64-cpu", "-o", "o", "--json", "b.json",
        cwd=tmp_path,
    )  # fmt: skip
    assert built.code == 0, built.stderr
    profiled = run_cli("profile", "o/m.fp16.onnx", "--iterations", "3", "--json", "p.json", cwd=tmp_path)
    assert profiled.code == 0, profiled.stderr
    version = onnxruntime.__version__
    for files in (["b.json"], ["p.json"], ["b.json", "p.json"]):
        run = load_run([tmp_path / f for f in files])
        assert run.tools == {"onnxruntime": version}, files
    written = write_report(run, tmp_path / "out")
    assert f"<dt>tools</dt><dd>onnxruntime {version}</dd>" in written.html.read_text()
    assert f"- tools: onnxruntime {version}\n" in written.markdown.read_text()
    # an engine's profile records tensorrt's; files made with two releases show both
    record = json.loads((tmp_path / "p.json").read_text())
    trt = {"tensorrt": "10.3.0"}
    engine = {**record, "artifact": "o/m.fp16.engine", "backend": "tensorrt", "settings": trt}
    older = {**record, "artifact": "o/m.onnx", "precision": "fp32", "settings": {"onnxruntime": "1.0.0"}}
    (tmp_path / "e.json").write_text(json.dumps(engine))
    (tmp_path / "o.json").write_text(json.dumps(older))
    run = load_run([tmp_path / "b.json", tmp_path / "e.json", tmp_path / "o.json"])
    assert run.tools == {"onnxruntime": f"{version} / 1.0.0", "tensorrt": "10.3.0"}


def test_a_matrix_json_or_workdir_is_named_as_such_with_what_to_report_instead(tmp_path: Path) -> None:
    """report of `matrix --json`'s file said it was not a file edgedeploy wrote, and of a matrix
    workdir 'rerun edgedeploy run': both now say what they are, and point at matrix.html and at a
    bundle folder (each has its own report), one line, exit 2."""
    import onnx
    from onnx import TensorProto, helper

    from edgedeploy.pipeline.cache import CACHE_DIR
    from edgedeploy.pipeline.matrix import STORE_DIR
    from edgedeploy.stages.report import load
    from tests.conftest import assert_clean_input_error, run_cli

    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])
    graph = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "tiny", [x], [y])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), tmp_path / "tiny.onnx")
    (tmp_path / "m.toml").write_text(
        'workdir = "farm"\n[profile]\nduration_s = 0.2\n[matrix]\ntargets = ["x86-64-cpu"]\n'
        'precisions = ["fp32"]\n[[matrix.models]]\nsource = "tiny.onnx"\n'
    )
    ran = run_cli("matrix", "m.toml", "--jobs", "1", "--json", "m.json", cwd=tmp_path)
    assert ran.code == 0, ran.stderr
    bundle = tmp_path / "bundle" / "tiny" / "x86-64-cpu"
    assert (bundle / "report.html").is_file() and (tmp_path / "farm" / "matrix.html").is_file()
    assert_clean_input_error(
        run_cli("report", "m.json", "-o", "r", cwd=tmp_path),
        "m.json is an `edgedeploy matrix` result, not one model's report",
        f"{tmp_path / 'farm' / 'matrix.html'} shows every cell",
        f"edgedeploy report {bundle}",
    )
    assert_clean_input_error(
        run_cli("report", "farm", "-o", "r", cwd=tmp_path),
        "farm is an `edgedeploy matrix` workdir, not one run's",
        "farm/matrix.html shows every cell",
        f"edgedeploy report {bundle}",
    )
    assert not (tmp_path / "r").exists()
    assert run_cli("report", bundle, "-o", "r", cwd=tmp_path).code == 0  # what it points at reports
    assert load.json_kind(json.loads((tmp_path / "m.json").read_text())) == "matrix"
    assert (load.MATRIX_CACHE, load.MATRIX_STORE) == (CACHE_DIR, STORE_DIR)  # the stage cannot import them
    # without its page (no report extra) or any bundle ([bundle] enabled = false): said without them
    (tmp_path / "farm" / "matrix.html").unlink()
    (tmp_path / "farm" / "matrix.md").unlink()
    for record in (tmp_path / "farm" / CACHE_DIR).glob("bundle-*.json"):
        record.unlink()
    with pytest.raises(InputError, match=r"workdir, not one run's: report one \(model, target\) with its"):
        load_run([tmp_path / "farm"])


def test_the_matrix_pages_carry_the_notes_the_command_warned() -> None:
    """matrix warned "int8 ran slower than fp32 here" on the terminal only: matrix.md and
    matrix.html, the pages CI keeps, said nothing of it."""
    from edgedeploy.stages.report import plots
    from edgedeploy.stages.report.matrix import render_matrix_html, render_matrix_markdown

    cell = {"model": "m", "target": "x86-64-cpu", "precision": "int8", "status": "ok", "latency_ms": 2.0}
    note = "m/x86-64-cpu: int8 ran slower than fp32 here (p50 2 ms against 1 ms)"
    assert f"- note: {note}" in render_matrix_markdown([cell], notes=[note])
    page = render_matrix_html([cell], {}, Path("."), {"notes": [note]}, plots)
    assert "<dt>note</dt><dd>m/x86-64-cpu: int8 ran slower than fp32 here" in page


@pytest.mark.parametrize("model", ["v2#1?x", "100%41", "a b&c'd"])
def test_matrix_links_to_bundle_reports_are_urls(tmp_path: Path, model: str) -> None:
    """matrix.html linked a model named "v2#1?x" to '../bundle/v2#1?x/...': the browser took
    '#1?x/...' for a fragment and opened another page (a % broke it too); the path is percent-encoded."""
    from urllib.parse import unquote, urlsplit

    from edgedeploy.stages.report.matrix import render_matrix_html

    bundle = tmp_path / "bundle" / model / "x86-64-cpu"
    bundle.mkdir(parents=True)
    (bundle / "report.html").write_text("<html></html>")
    cell = {"model": model, "target": "x86-64-cpu", "precision": "fp32", "status": "ok", "latency_ms": 1.0}
    page = render_matrix_html([cell], {f"{model}/x86-64-cpu": str(bundle)}, tmp_path / "farm", {}, None)
    hrefs = re.findall(r"<a href='([^']*)'>report</a>", page)
    assert len(hrefs) == 1
    url = urlsplit(html.unescape(hrefs[0]))
    assert (url.query, url.fragment) == ("", "")
    assert (tmp_path / "farm" / unquote(url.path)).resolve() == (bundle / "report.html").resolve()


HOSTILE = "d <b>x&amp;y é|z <img src=x onerror=alert(1)> *a* _b_ `c` [l](u) \\ ~~s~~"


# what our summaries' own Markdown draws: a name's text adds none
MARKDOWN_TAGS = {"h2", "ul", "li", "p", "strong", "code", "table", "thead", "tbody", "tr", "th", "td"}


class _Rendered(HTMLParser):
    """The elements and the text of rendered Markdown."""

    def __init__(self, page: str) -> None:
        super().__init__(convert_charrefs=True)
        self.tags: set[str] = set()
        self.text = ""
        self.feed(page)

    def handle_starttag(self, tag: str, attrs: Any) -> None:
        self.tags.add(tag)

    def handle_data(self, data: str) -> None:
        self.text += data


def _render_markdown(text: str) -> _Rendered:
    """As GitHub draws a step summary or a PR comment: CommonMark with tables and strikethrough."""
    markdown_it = pytest.importorskip("markdown_it")
    return _Rendered(markdown_it.MarkdownIt("commonmark").enable(["table", "strikethrough"]).render(text))


def test_markdown_summaries_draw_names_as_their_text_not_as_html(workdir: Path, tmp_path: Path) -> None:
    """report.md and matrix.md put a model's name in raw: a renderer drew its <b> and <img> as live
    HTML (the HTML pages escaped it); now every name renders as itself, table cells unbroken."""
    from edgedeploy.stages.report.matrix import render_matrix_markdown

    run = load_run([workdir])
    run.model, run.target = HOSTILE, f"t {HOSTILE}"
    assert run.calibration is not None
    run.calibration["tensors"][0]["name"] = "`relu` <i>out</i>"
    summary = _render_markdown(write_report(run, tmp_path / "out").markdown.read_text())
    cell = {"model": HOSTILE, "target": "x86-64-cpu", "precision": "fp32", "status": "failed"}
    cell["reason"] = HOSTILE
    matrix = _render_markdown(render_matrix_markdown([cell]))
    for page in (summary, matrix):
        assert page.tags <= MARKDOWN_TAGS
        assert HOSTILE in page.text
    assert f"edgedeploy: {HOSTILE} on t {HOSTILE}" in summary.text
    assert "worst-clipped tensor `relu` <i>out</i> (" in summary.text  # a code span: literal
    assert "code" in summary.tags
    row = next(line for line in render_matrix_markdown([cell]).splitlines() if line.startswith("| d "))
    assert len(re.findall(r"(?<!\\)\|", row)) == 11  # the | in the name does not split a cell


def test_a_field_of_the_wrong_type_is_refused_by_file_and_field(workdir: Path, tmp_path: Path) -> None:
    """A profile whose median was "fast", or a compare whose outputs were a list, ended report in
    a traceback (stats.py's float(), .items()), exit 1 as if a gate had failed; one line, exit 2."""
    from tests.conftest import assert_clean_input_error, run_cli

    batch = {"batch_size": 1, "latency": {"median_ms": "fast"}, "iterations": 10}
    profile = {"artifact": "m.fp16.onnx", "backend": "onnxruntime", "settings": {}, "batches": [batch]}
    (tmp_path / "p.json").write_text(json.dumps(profile))
    compare = {"reference": "m.onnx", "candidate": "m.fp16.onnx", "outputs": [1], "passed": True}
    (tmp_path / "c.json").write_text(json.dumps(compare))
    said = "p.json: field batches[0].latency.median_ms is a string ('fast'), not a number"
    assert_clean_input_error(run_cli("report", "p.json", "-o", "r", cwd=tmp_path), said)
    said = "c.json: field outputs is a list, not an object"
    assert_clean_input_error(run_cli("report", "c.json", "-o", "r", cwd=tmp_path), said)
    record = json.loads((workdir / "run.json").read_text())
    record["precisions"][1]["profile"]["batch_sizes"]["1"]["quantiles_ms"][3] = "x"
    (workdir / "run.json").write_text(json.dumps(record))
    said = r"run\.json: field precisions\[1\]\.profile\.batch_sizes\.1\.quantiles_ms\[3\] is a string"
    with pytest.raises(InputError, match=said):
        load_run([workdir])
    assert not (tmp_path / "r").exists()


def _paths(value: Any, where: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Every field and list item of a JSON value (a list's first two items only)."""
    found = [where] if where else []
    if isinstance(value, dict):
        for key, item in value.items():
            found += _paths(item, (*where, key))
    elif isinstance(value, list):
        for i, item in enumerate(value[:2]):
            found += _paths(item, (*where, i))
    return found


def _json_files(workdir: Path, tmp_path: Path) -> list[Path]:
    """The --json files report reads, of every kind a run record's workdir does not hold."""
    compare = {
        "reference": "m.onnx",
        "candidate": "m.fp16.onnx",
        "mode": "fp16",
        "passed": True,
        "gates": {"min_cosine": 0.99},
        "outputs": {"y": {"cosine": 0.999, "top1_agreement": 1.0, "nan_count": 0, "inf_count": 0}},
    }
    layers = {"precision": "int8", "gates": {"min_cosine": 0.99}, "layers": [
        {"tensor": "a", "order": 0, "cosine": 0.9999, "exceeds": False},
        {"tensor": "b", "order": 1, "cosine": 0.9, "exceeds": True},
    ]}  # fmt: skip
    energy = {
        "measurable": True, "source": "tegrastats", "avg_power_w": 5.0, "energy_per_inference_mj": 4.4,
        "rails": {"VDD_IN": 5.0}, "trace": {"t_s": [0.0, 0.5], "rails": {"VDD_IN": [4.9, 5.1]}},
    }  # fmt: skip
    profile = {
        "artifact": "m.int8.onnx", "backend": "onnxruntime", "bytes": 250,
        "settings": {"threads": 1, "host_target": "x86-64-cpu", "onnxruntime": "1.2.3"},
        "batches": [
            {"batch_size": b, "latency": {"median_ms": b, "p99_ms": 2.0 * b}, "throughput_ips": 10.0,
             "quantiles_ms": [0.5 * b, b, 2.0 * b], "energy": energy}
            for b in (1, 4)
        ],
    }  # fmt: skip
    build = {
        "precision": {"precision": "fp16", "path": "m.fp16.onnx", "bytes": 500, "files": [],
                      "info": {"task_metric": {"name": "acc", "value": 0.9}}},
        "build": {"backend": "onnxruntime", "info": {"target": "x86-64-cpu", "onnxruntime": "1.2.3"}},
    }  # fmt: skip
    budget = {
        "precision": "int8", "budget": "cosine>=0.999", "met": False, "higher": "fp16", "measurements": 3,
        "probe_measurements": 2, "ranking": "probe", "ranking_seconds": 1.5, "seconds": 9.0,
        "steps": [{"kept": ["conv"], "measured": {"cosine": 0.99}, "met": False}],
    }  # fmt: skip
    (tmp_path / "m.int8.budget.json").write_text(json.dumps(budget))
    precisions = json.loads((workdir / "run.json").read_text())["precisions"]
    artifacts = [{**p, "precision_info": p["info"]} for p in precisions]
    bundle = {"schema_version": 1, "files": {}, "model": {"name": "m"}, "target": {"name": "x86-64-cpu"},
              "primary_precision": "fp16", "artifacts": artifacts}  # fmt: skip
    files = []
    for name, content in (
        ("c.json", compare),
        ("l.json", {"compare": {**compare, "candidate": "m.int8.onnx"}, "per_layer": layers}),
        ("p.json", profile),
        ("b.json", build),
        ("m.bundle.json", bundle),
    ):
        (tmp_path / name).write_text(json.dumps(content))
        files.append(tmp_path / name)
    return files


@pytest.mark.parametrize("bad", ["x", 5, True, None, [1], {"k": 1}])
def test_every_field_given_another_type_is_drawn_or_refused_by_name(
    workdir: Path, tmp_path: Path, bad: Any
) -> None:
    """Each field of each file the report reads, set to another JSON type: the page and the summary
    are made, or the file is refused naming itself, never another exception (a traceback)."""
    from edgedeploy.stages.report.render import build_sections, render_markdown

    jsons = _json_files(workdir, tmp_path)
    record = json.loads((workdir / "run.json").read_text())
    record["precisions"][2]["files"].append(str(tmp_path / "m.int8.budget.json"))
    record["not_built"] = {"fp8": {"reason": "budget missed", "steps": str(tmp_path / "m.int8.budget.json")}}
    (workdir / "run.json").write_text(json.dumps(record))
    sidecars = [workdir / name for name in ("m.calib.json", "m.fp16.ranges.json", "m.fp16.plan.json")]
    cases = [(path, [workdir]) for path in (workdir / "run.json", *sidecars, tmp_path / "m.int8.budget.json")]
    cases += [(path, [path]) for path in jsons]
    cases += [(jsons[0], [jsons[0], jsons[2]])]  # a compare and a profile together: slower than fp32
    tried = 0
    for path, run_paths in cases:
        original = path.read_text()
        for where in _paths(json.loads(original)):
            content = json.loads(original)
            parent = content
            for key in where[:-1]:
                parent = parent[key]
            if parent[where[-1]] == bad or type(parent[where[-1]]) is type(bad):
                continue
            parent[where[-1]] = bad
            path.write_text(json.dumps(content))
            tried += 1
            try:
                run = load_run(run_paths)
                build_sections(run, None)
                render_markdown(run)
            except InputError as exc:
                assert str(exc).startswith(f"{path}: "), (where, str(exc))
            except Exception as exc:  # what the test is for: no other exception
                pytest.fail(f"{path.name} {where} = {bad!r}: {type(exc).__name__}: {exc}")
        path.write_text(original)
    assert tried > 200


def test_report_reads_compare_json_with_non_finite_figures(tmp_path: Path) -> None:
    """compare --json writes an SNR of -inf as "-Infinity" and a NaN cosine as "NaN" (null is an
    identical output's SNR): the report takes them as those numbers, and the gate as failed."""
    compare = {
        "reference": "m.onnx",
        "candidate": "m.fp16.onnx",
        "mode": "fp16",
        "passed": True,
        "gates": {"min_cosine": 0.99},
        "outputs": {
            "y": {"cosine": "NaN", "snr_db": "-Infinity", "max_abs": "Infinity", "identical": False},
            "z": {"cosine": 1.0, "snr_db": None, "max_abs": 0.0, "identical": True},
        },
    }
    path = tmp_path / "cmp.json"
    path.write_text(json.dumps(compare))
    from edgedeploy.stages.report.data import tradeoff_rows

    data = load_run([path])
    outputs = data.row("fp16").compare["outputs"]
    assert outputs["y"]["snr_db"] == -float("inf") and outputs["y"]["identical"] is False
    assert outputs["z"]["snr_db"] is None and outputs["z"]["identical"] is True
    assert [r.passed for r in tradeoff_rows(data) if r.precision == "fp16"] == [False]


def test_a_profile_of_another_artifact_beside_a_run_record_is_refused_in_either_order(
    workdir: Path, tmp_path: Path
) -> None:
    """A run record carries its precisions' figures and the sha256 of its artifacts: another model's
    profile beside it swapped its latency into the run's int8 row (or not, by argument order); it is
    refused in either order, and so is a profile of the run's own int8 artifact (a second source of
    the same figures)."""
    from tests.conftest import assert_clean_input_error, run_cli

    record = _run_record(workdir)
    for item in record["precisions"]:
        item["info"] = {"source_sha256": f"{item['precision']}-sha"}
    (workdir / "run.json").write_text(json.dumps(record))

    def profile(name: str, artifact: str, sha256: str) -> Path:
        content = {
            "artifact": artifact,
            "backend": "onnxruntime",
            "settings": {},
            "batches": [{"batch_size": 1, "latency": {"median_ms": 9.0}, "quantiles_ms": [9.0]}],
            "precision": "int8",
            "sha256": sha256,
        }
        (tmp_path / name).write_text(json.dumps(content))
        return tmp_path / name

    other = profile("other.json", "/elsewhere/cnn.int8.onnx", "other-sha")
    renamed = profile("renamed.json", "/elsewhere/m.int8.onnx", "other-sha")  # the run's name, not its file
    same = profile("same.json", str(workdir / "m.int8.onnx"), "int8-sha")
    run = workdir / "run.json"
    for paths in ([run, other], [other, run]):
        with pytest.raises(InputError, match="a report is of one model"):
            load_run(paths)
    for paths in ([run, renamed], [renamed, run]):
        with pytest.raises(InputError, match="other content are two models"):
            load_run(paths)
    for paths in ([run, same], [same, run]):
        with pytest.raises(InputError, match="both give int8's profile figures"):
            load_run(paths)
    result = run_cli("report", str(run), str(other), "-o", "r", cwd=tmp_path)
    assert_clean_input_error(result, "a report is of one model")
    assert not (tmp_path / "r").exists()


def test_report_json_holds_the_tables_figures_recommendation_and_gates_the_page_shows(
    workdir: Path, tmp_path: Path
) -> None:
    """`report --json` held only the page's paths, size and sections: no figure. It now holds each
    precision's row (the numbers report.md shows), the recommended precision and the gate results."""
    from tests.conftest import run_cli

    result = run_cli("report", workdir, "-o", "r", "--json", "r.json", cwd=tmp_path)
    assert result.code == 0, result.stderr
    info = json.loads((tmp_path / "r.json").read_text())
    record = json.loads((workdir / "run.json").read_text())
    text = (tmp_path / "r" / "report.md").read_text()
    header = next(line for line in text.splitlines() if line.startswith("| precision"))
    columns = [c.strip() for c in header.strip("|").split("|")]
    page = {p: dict(zip(columns, row, strict=True)) for p, row in _markdown_rows(text).items()}
    assert [r["precision"] for r in info["precisions"]] == [p["precision"] for p in record["precisions"]]
    for row, p in zip(info["precisions"], record["precisions"], strict=True):
        b1 = p["profile"]["batch_sizes"]["1"]
        assert row["p50_ms"] == b1["median_ms"] and row["p99_ms"] == b1["p99_ms"]
        assert row["throughput_ips"] == b1["throughput_ips"] and row["batch_size"] == 1
        assert row["min_cosine"] == p["compare"]["outputs"]["logits"]["cosine"]
        assert row["size_bytes"] == (workdir / f"m.{p['precision']}.onnx").stat().st_size
        assert row["gate"] == ("pass" if p["compare"]["passed"] else "FAIL")
        assert float(page[p["precision"]]["speed-up"]) == pytest.approx(row["speedup"], abs=0.006)
    assert info["precisions"][1]["speedup"] == pytest.approx(2.0 / 1.25)
    why = "the lowest precision whose accuracy gate passed"
    assert info["recommended"] == {"precision": "fp16", "why": why}
    assert info["gates"]["thresholds"] == {"min_cosine": 0.99, "min_top1": None}
    assert info["gates"]["failed"] == ["int8"] and info["gates"]["passed"] is False
    assert info["model"] == "m" and info["target"] == "jetson-orin-nano"
    assert info["sections"] and info["html"].endswith("report.html")


def test_the_matrix_pages_say_a_gpu_targets_latencies_were_measured_on_this_cpu() -> None:
    """matrix.md and matrix.html showed a Jetson's p50 measured with ONNX Runtime on this CPU without
    a word, where the bundle's report.md says "(measured with ONNX Runtime on this machine's CPU, not
    on the device)"; they now say it, naming the targets, and not of a CPU target's own figures."""
    from edgedeploy.stages.report import plots
    from edgedeploy.stages.report.matrix import render_matrix_html, render_matrix_markdown
    from edgedeploy.targets import MEASURED_OFF_TARGET

    def cell(target: str, backend: str) -> dict[str, Any]:
        return {"model": "m", "target": target, "precision": "fp32", "status": "ok", "latency_ms": 2.0,
                "backend": backend}  # fmt: skip

    jetson, cpu = cell("jetson-orin-nano", "onnxruntime"), cell("x86-64-cpu", "onnxruntime")
    said = f"p50 and speed-up of jetson-orin-nano: {MEASURED_OFF_TARGET}"
    assert said in render_matrix_markdown([jetson, cpu])
    assert html.escape(said, quote=True) in render_matrix_html([jetson, cpu], {}, Path("."), {}, plots)
    assert MEASURED_OFF_TARGET not in render_matrix_markdown([cpu, cell("jetson-orin-nano", "tensorrt")])


@pytest.mark.parametrize(
    ("latency", "said"),
    [
        ({"median_ms": -1.0, "p99_ms": 2.0}, "latency.median_ms is -1.0, not a finite number >= 0"),
        ({"median_ms": float("nan")}, "latency.median_ms is nan, not a finite number >= 0"),
        ({"median_ms": 1.0, "p99_ms": float("inf")}, "latency.p99_ms is inf, not a finite number >= 0"),
        ({"median_ms": 5.0, "p90_ms": 6.0, "p99_ms": 2.0}, "latency.p90_ms (6.0) > p99_ms (2.0)"),
        ({"median_ms": 5.0, "p99_ms": 2.0}, "latency.median_ms (5.0) > p99_ms (2.0)"),
    ],
)
def test_a_profile_with_impossible_latencies_is_refused_by_file_and_field(
    tmp_path: Path, latency: dict[str, float], said: str
) -> None:
    """A profile JSON edited to a p50 of -1 was drawn as -1, a NaN one as "-", exit 0; negative, NaN
    or infinite latencies and percentiles out of order (p50 > p99) are a damaged file: one line, exit 2."""
    from tests.conftest import assert_clean_input_error, run_cli

    batch = {"batch_size": 1, "latency": latency, "iterations": 10}
    profile = {"artifact": "m.fp16.onnx", "backend": "onnxruntime", "settings": {}, "batches": [batch]}
    (tmp_path / "p.json").write_text(json.dumps(profile))  # NaN and Infinity: as json.dumps writes them
    res = run_cli("report", "p.json", "-o", "r", cwd=tmp_path)
    assert_clean_input_error(res, f"p.json: field batches[0].{said}")
    assert not (tmp_path / "r").exists()


def test_a_run_record_with_quantiles_out_of_order_is_refused(workdir: Path) -> None:
    """The same figures in a run record's (and a manifest's) profile summary, and its latency CDF."""
    record = json.loads((workdir / "run.json").read_text())
    figures = record["precisions"][1]["profile"]["batch_sizes"]["1"]
    figures["quantiles_ms"][3] = figures["quantiles_ms"][2] - 0.5
    (workdir / "run.json").write_text(json.dumps(record))
    said = r"run\.json: field precisions\[1\]\.profile\.batch_sizes\.1\.quantiles_ms\[3\] \(.*\) < \[2\] \("
    with pytest.raises(InputError, match=said):
        load_run([workdir])
    figures["quantiles_ms"] = sorted(figures["quantiles_ms"])
    figures["median_ms"] = -0.5
    (workdir / "run.json").write_text(json.dumps(record))
    with pytest.raises(InputError, match=r"batch_sizes\.1\.median_ms is -0\.5, not a finite number >= 0"):
        load_run([workdir])


def _matrix_cells_with_reasons() -> list[dict[str, Any]]:
    """Three targets x three precisions of one model: seven ok, one failed, one skipped, with the
    reasons matrix gives them."""
    ok = {"status": "ok", "backend": "onnxruntime", "size_bytes": 155_000, "latency_ms": 0.01597,
          "min_cosine": 0.999939, "top1": 1.0, "gate": "pass"}  # fmt: skip
    cells = [
        {"model": "cnn", "target": t, "precision": p, **ok}
        for t in ("x86-64-cpu", "jetson-orin-nano", "jetson-nano")
        for p in ("fp32", "fp16", "int8")
    ]
    failed = "build: /very/long/path/to/the/workdir/cache/cnn.jetson-nano.fp16.onnx could not be built"
    cells[-2] = {**cells[-2], "status": "failed", "gate": None, "reason": failed}
    skipped = "target 'jetson-nano' does not support int8 (maxwell sm_53 has no fast INT8); supported: fp32"
    cells[-1] = {**cells[-1], "status": "skipped", "reason": skipped}
    for key in ("backend", "size_bytes", "latency_ms", "min_cosine", "top1", "gate"):
        del cells[-1][key]
    return cells


def test_matrix_page_table_with_reasons_fits_the_page_at_1200px(tmp_path: Path) -> None:
    """matrix.html's reason column of a skipped or failed cell lay past the page's 60rem: at 1200 px
    it read "t ( f", one letter a line, and the table needed scrolling. The page is wider, and a long
    path in a reason breaks where it must."""
    from edgedeploy.stages.report.matrix import render_matrix_html
    from tests.report.cdp import find_chromium, visit

    page = tmp_path / "matrix.html"
    page.write_text(render_matrix_html(_matrix_cells_with_reasons(), {}, tmp_path, {}, None))
    chromium = find_chromium()
    if chromium is not None:
        overflow = (
            "(() => { const w = document.querySelector('.table-wrap').getBoundingClientRect();"
            " const b = document.querySelector('.table-wrap'); const r = document.querySelector('td.wrap');"
            " return [b.scrollWidth - b.clientWidth, r.getBoundingClientRect().right - w.right,"
            " r.getBoundingClientRect().width]; })()"
        )
        seen = visit(page, chromium, width=1200, expression=overflow)
        scrolled, past, reason_width = seen.value
        assert scrolled <= 0 and past <= 0.5, seen.value  # no horizontal scrolling, the reason cell inside
        assert reason_width >= 12 * 16 - 1, seen.value  # 12rem: words a line, not letters
    assert "<body class='wide'>" in page.read_text()  # what it relies on (render.CSS's body.wide)


_NOT_MEASURED = "not a finite number >= 0"
_IPS = ("batches", 0, "throughput_ips")
_ENERGY = ("batches", 0, "energy")


@pytest.mark.parametrize(
    ("where", "bad", "said"),
    [
        (_IPS, -5.0, f"batches[0].throughput_ips is -5.0, {_NOT_MEASURED}"),
        (_IPS, float("nan"), f"batches[0].throughput_ips is nan, {_NOT_MEASURED}"),
        (_IPS, "fast", "batches[0].throughput_ips is a string ('fast'), not a number"),
        (("batches", 0, "throughput_qps"), float("inf"), f"throughput_qps is inf, {_NOT_MEASURED}"),
        (("batches", 0, "peak_rss_mb"), -1, f"batches[0].peak_rss_mb is -1, {_NOT_MEASURED}"),
        ((*_ENERGY, "avg_power_w"), -2.0, f"energy.avg_power_w is -2.0, {_NOT_MEASURED}"),
        ((*_ENERGY, "energy_per_inference_mj"), float("nan"), f"inference_mj is nan, {_NOT_MEASURED}"),
        ((*_ENERGY, "rails", "VDD_IN"), -1.0, f"energy.rails.VDD_IN is -1.0, {_NOT_MEASURED}"),
        ((*_ENERGY, "trace", "rails", "VDD_IN", 1), float("-inf"), f"VDD_IN[1] is -inf, {_NOT_MEASURED}"),
        (("batches", 0, "iterations"), -3, f"batches[0].iterations is -3, {_NOT_MEASURED}"),
        (("bytes",), -100, "field bytes is -100, not a whole number >= 0"),
        (("bytes",), 2.5, "field bytes is 2.5, not a whole number >= 0"),
    ],
)
def test_a_profile_with_impossible_throughput_memory_energy_or_size_is_refused_by_file_and_field(
    tmp_path: Path, where: tuple[Any, ...], bad: Any, said: str
) -> None:
    """Latencies were range-checked, the other figures not: a throughput of -5 or NaN, a negative
    peak memory, power, energy or size was drawn as given, exit 0. They are refused as latencies are:
    the file and the field in one line."""
    trace = {"t_s": [0.0, 0.5], "rails": {"VDD_IN": [4.9, 5.1]}}
    energy = {"measurable": True, "source": "rapl", "avg_power_w": 5.0, "energy_per_inference_mj": 4.0,
              "rails": {"VDD_IN": 5.0}, "trace": trace}  # fmt: skip
    batch = {"batch_size": 1, "latency": {"median_ms": 1.0, "p99_ms": 2.0}, "iterations": 10,
             "throughput_ips": 1000.0, "throughput_qps": 1000.0, "peak_rss_mb": 80.0,
             "energy": energy}  # fmt: skip
    profile = {"artifact": "m.fp16.onnx", "backend": "onnxruntime", "settings": {}, "bytes": 250,
               "batches": [batch]}  # fmt: skip
    (tmp_path / "p.json").write_text(json.dumps(profile))
    load_run([tmp_path / "p.json"])  # as measured: read
    parent: Any = profile
    for key in where[:-1]:
        parent = parent[key]
    parent[where[-1]] = bad
    (tmp_path / "p.json").write_text(json.dumps(profile))  # NaN and Infinity: as json.dumps writes them
    with pytest.raises(InputError) as refused:
        load_run([tmp_path / "p.json"])
    assert str(refused.value).startswith(f"{tmp_path / 'p.json'}: field "), str(refused.value)
    assert said in str(refused.value)


def test_a_run_record_or_build_with_an_impossible_figure_is_refused(workdir: Path, tmp_path: Path) -> None:
    """The same figures in a run record's profile summary, and a build JSON's size; exit 2 from the CLI."""
    from tests.conftest import assert_clean_input_error, run_cli

    record = json.loads((workdir / "run.json").read_text())
    record["precisions"][1]["profile"]["batch_sizes"]["1"]["throughput_ips"] = -10.0
    (workdir / "run.json").write_text(json.dumps(record))
    said = r"run\.json: field precisions\[1\]\.profile\.batch_sizes\.1\.throughput_ips is -10\.0, not a"
    with pytest.raises(InputError, match=said):
        load_run([workdir])
    build = {
        "precision": {"precision": "fp16", "path": "m.fp16.onnx", "bytes": -500, "files": []},
        "build": {"backend": "onnxruntime", "info": {"target": "x86-64-cpu"}},
    }
    (tmp_path / "b.json").write_text(json.dumps(build))
    result = run_cli("report", "b.json", "-o", "r", cwd=tmp_path)
    assert_clean_input_error(result, "b.json: field precision.bytes is -500, not a whole number >= 0")
    assert not (tmp_path / "r").exists()


def test_the_latency_cdf_axis_says_the_latency_is_per_batch_and_names_the_batch() -> None:
    """The CDF's axis said "latency per inference (ms)" while it drew each batch's time (batch 4:
    the time of 4 inferences); it says per batch now, as the batch-size chart does, with the batch."""
    from edgedeploy.stages.report import plots
    from edgedeploy.stages.report.data import CdfSeries

    one = CdfSeries("fp32", "4", [4.0, 5.0, 8.0], [0.0, 50.0, 100.0])
    svg = plots.latency_cdf([one, CdfSeries("int8", "4", [2.0, 2.5, 3.0], [0.0, 50.0, 100.0])])
    assert "per inference" not in svg and "latency per batch of 4 (ms)" in svg
    mixed = plots.latency_cdf([one, CdfSeries("int8", "1", [1.0, 1.2, 2.0], [0.0, 50.0, 100.0])])
    assert "latency per batch (ms), batch size in the legend" in mixed and "int8 (batch 1)" in mixed
