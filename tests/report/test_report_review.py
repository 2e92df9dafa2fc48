"""The report area's defects found in review (tests/report/test_report_files.py holds the rest)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from edgedeploy.stages.report import data as d
from edgedeploy.stages.report import plots
from edgedeploy.stages.report.load import PrecisionData, RunData

# legal ONNX tensor names that matplotlib would read as mathtext: one it cannot parse, one it would
# draw as an italic x² (the name the model has is the text, dollars and all)
NAMES = (r"a$\frac$b", r"$x^2$_{y}", r"c\$d$")


def test_names_with_dollars_are_drawn_as_their_text_in_every_chart() -> None:
    """A tensor named a$\\frac$b made `report` (and `run`, at its last step) die with matplotlib's
    mathtext ParseSyntaxException, exit 1; $x^2$ was drawn as an italic x². Every chart draws the
    names as they are."""
    bad, italic, escaped = NAMES
    bars = [d.RangeBar(n, "Relu", 1e-3, 2.0 + i, False, None, False) for i, n in enumerate(NAMES)]
    svgs = [plots.fp16_ranges(bars)]
    panels = [d.ClipPanel(n, [0.0, 1.0, 2.0, 3.0], [5, 3, 1], 1.5, 2.5, 0.01, f"uint8 {n}") for n in NAMES]
    svgs.append(plots.clipping(panels))
    layers = d.LayerSeries(
        bad, "fp16", list(NAMES), [0, 1, 2], [1e-6, 1e-3, 1e-5], [False, True, False], 1, 1e-4
    )
    svgs.append(plots.per_layer(layers))
    svgs.append(plots.matrix_latency(italic, [d.MatrixBar(bad, escaped, 1.0, 0.99)]))
    svgs.append(plots.tradeoff_scatter([d.ScatterPoint(bad, 1.5, 1e-4, False, 1000)]))
    svgs.append(plots.latency_cdf([d.CdfSeries(italic, "1", [1.0, 2.0, 3.0], [0.0, 50.0, 100.0])]))
    svgs.append(plots.batch_curves([d.BatchSeries(bad, [1, 2], [10.0, 15.0], [1.0, 2.0], [1.5, 2.5])]))
    svgs.append(plots.power([d.PowerTrace(bad, italic, [0.0, 1.0], {escaped: [1.0, 2.0]}, bad)]))
    for svg in svgs[:3]:
        for name in NAMES:
            assert name in svg, name
    assert italic in svgs[3] and bad in svgs[3] and escaped in svgs[3]
    assert bad in svgs[4] and italic in svgs[5] and bad in svgs[6]
    assert bad in svgs[7] and italic in svgs[7] and escaped in svgs[7]


@pytest.mark.parametrize(
    ("value", "gate", "shown"),
    [
        (0.99999997, 0.99999999, "0.99999997"),  # failed: printed "1.000000 < 0.99999999"
        (0.99999965, 0.99999999, "0.9999997"),  # 7 decimals: below 1, below the gate
        (0.9899996, 0.99, "0.9899996"),  # .6f: 0.990000, at the gate it failed
        (0.99000004, 0.99, "0.990000"),  # at or above it: as it passed
        (0.9999996157, None, "0.9999996"),  # a budget's step: not "1"
        (1.0, 0.99999999, "1.000000"),
        (0.987654321, 0.9, "0.987654"),  # the usual figure is untouched
        (None, 0.99, "-"),
    ],
)
def test_a_cosine_prints_with_the_digits_that_tell_it_from_its_gate_and_from_1(
    value: float | None, gate: float | None, shown: str
) -> None:
    from edgedeploy.ui import cosine_figure

    assert cosine_figure(value, gate) == shown


def test_a_failed_strict_gate_shows_a_cosine_below_it_in_the_warning_and_both_reports(tmp_path: Path) -> None:
    """A gate of 0.99999999 failed by a cosine of 0.99999997 read "cosine 1.000000 < 0.99999999" in
    the warning, and "1.000000 ... FAIL" in report.md and report.html: false as printed."""
    from edgedeploy.stages.compare.gates import Gates
    from edgedeploy.stages.compare.outputs import OutputMetrics, gate_failures
    from edgedeploy.stages.report import write_report
    from edgedeploy.stages.report.load import PrecisionData, RunData

    run = RunData(sources=["x"], kind="json", model="m", gates={"min_cosine": 0.99999999})
    for precision, cosine in (("fp32", 1.0), ("fp16", 0.99999997)):
        compare = {"passed": cosine == 1.0, "outputs": {"y": {"cosine": cosine}}}
        run.precisions.append(PrecisionData(precision, compare=compare))
    files = write_report(run, tmp_path / "r")
    md, page = files.markdown.read_text(), files.html.read_text()
    assert "| 0.99999997 |" in md and "1.000000 |" in md  # fp16's, fp32's
    assert '<td class="">0.99999997</td>' in page
    metrics = OutputMetrics("y", [1, 5], 1e-4, 1e-5, 1e-4, 1e-3, 1e-4, 1e-3, 0.99999997, 60.0, 0, 0, 0, True)
    said = gate_failures(metrics, Gates(min_cosine=0.99999999))
    assert "cosine 0.99999997 < 0.99999999" in said, said


def _missed_budget_run() -> RunData:
    """An int8 budget of cosine >= 0.99999999 that only all layers in fp32 met: run did not build int8."""
    steps = [
        {"kept": [], "measured": {"cosine": 0.9999996156917808, "top1": 1.0, "snr": 61.13}, "met": False},
        {"kept": ["linear"], "measured": {"cosine": 0.9999999141354413, "top1": 1.0}, "met": False},
        {"kept": ["linear", "conv"], "measured": {"cosine": 0.9999999690628234, "top1": 1.0}, "met": False},
        {"kept": ["linear", "conv", "conv_1"], "measured": {"cosine": 1.0, "top1": 1.0}, "met": True},
    ]
    run = RunData(sources=["x"], kind="run", model="m", gates={"min_cosine": 0.999})
    run.precisions.append(PrecisionData("fp32", compare={"passed": True, "outputs": {"y": {"cosine": 1.0}}}))
    run.budgets["int8"] = {"budget": "cosine>=0.99999999", "met": True, "higher": "fp32 (not quantized)",
                           "steps": steps}  # fmt: skip
    run.not_built["int8"] = (
        "accuracy budget cosine>=0.99999999 is met only with every layer left in fp32, so no int8 model "
        "meets it; build fp16 or fp32, or loosen the budget"
    )
    return run


def test_a_budget_met_only_with_every_layer_in_fp32_is_said_missed_as_the_run_said_it() -> None:
    """The summary said int8 "not built (accuracy budget missed)", the budget section "budget ...
    met" and report.md "met in 7 step(s)"; and every step's cosine read "cosine 1", met or not."""
    from edgedeploy.stages.report.render import build_sections, render_markdown

    run = _missed_budget_run()
    (budget,) = [s for s in build_sections(run, None) if s.key == "budget"]
    assert "<span class='pass'>met</span>" not in budget.body
    assert "not met" in budget.body and "not built" in budget.body
    assert "met only with every layer left in fp32" in budget.body
    md = render_markdown(run)
    assert ": met in" not in md and "NOT met" in md and "not built" in md
    for cosine in ("0.9999996", "0.9999999", "0.99999997"):  # each below the budget, as printed
        assert f"cosine {cosine}," in budget.body, budget.body
    assert "cosine 1.000000," in budget.body  # the step with every layer in fp32: exactly 1


@pytest.mark.parametrize(
    ("batch", "said"),
    [
        (0, "batches[0].batch_size is 0, not a whole number >= 1"),
        (-2, "batches[0].batch_size is -2, not a whole number >= 1"),
        (1.5, "batches[0].batch_size is 1.5, not a whole number >= 1"),  # was "a number ..., not a number"
    ],
)
def test_a_profile_of_an_impossible_batch_size_is_refused_by_file_and_field(
    tmp_path: Path, batch: float, said: str
) -> None:
    """Batch 0 and -2 were read and printed as the batch the latency is "for", exit 0."""
    from tests.conftest import assert_clean_input_error, run_cli

    figures = {"batch_size": batch, "latency": {"median_ms": 1.0, "p99_ms": 2.0}, "iterations": 10}
    profile = {"artifact": "m.fp16.onnx", "backend": "onnxruntime", "settings": {}, "batches": [figures]}
    (tmp_path / "p.json").write_text(json.dumps(profile))
    res = run_cli("report", "p.json", "-o", "r", cwd=tmp_path)
    assert_clean_input_error(res, f"p.json: field {said}")
    assert not (tmp_path / "r").exists()


def test_a_workdir_beside_other_inputs_is_not_said_missing(tmp_path: Path) -> None:
    """`report WORKDIR OTHER` said "not found or not a file: WORKDIR" of a workdir that is there."""
    from edgedeploy.errors import InputError
    from edgedeploy.stages.report import load_run

    (tmp_path / "w").mkdir()
    (tmp_path / "w" / "run.json").write_text("{}")
    (tmp_path / "p.json").write_text("{}")
    with pytest.raises(InputError) as refused:
        load_run([tmp_path / "p.json", tmp_path / "w"])
    said = str(refused.value)
    assert "not found" not in said and "is a folder" in said and "alone" in said, said
    with pytest.raises(InputError, match=r"not found or not a file: .*nothing\.json"):
        load_run([tmp_path / "p.json", tmp_path / "nothing.json"])


def test_an_interrupted_runs_workdir_is_said_so(tmp_path: Path) -> None:
    """A workdir whose run stopped before writing run.json was "not an `edgedeploy run` workdir"."""
    from edgedeploy.errors import InputError
    from edgedeploy.fileio import CACHE_DIR
    from edgedeploy.stages.report import load_run

    (tmp_path / "w" / CACHE_DIR).mkdir(parents=True)
    # a stage finished (a run stopped in its first: tests/test_hostile.py's
    # test_a_run_interrupted_in_its_first_stage_is_reported_as_such)
    (tmp_path / "w" / CACHE_DIR / "export.json").write_text("{}")
    with pytest.raises(InputError) as refused:
        load_run([tmp_path / "w"])
    said = str(refused.value)
    assert "not an `edgedeploy run` workdir" not in said and "stopped before" in said, said
    assert "rerun `edgedeploy run CONFIG`" in said and "the finished stages are reused" in said


def _figures(monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    """The matplotlib figures the plots draw, drawn, as they were when written to SVG."""
    drawn: list[Any] = []
    write = plots._svg

    def keep(fig: Any, title: str) -> str:
        fig.canvas.draw()
        drawn.append(fig)
        return write(fig, title)

    monkeypatch.setattr(plots, "_svg", keep)
    return drawn


def test_every_marker_of_the_trade_off_scatter_is_whole_inside_the_axes(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """int8 at a speed-up of 0.06x sat on the axis' left end: half its marker was cut off."""
    drawn = _figures(monkeypatch)
    points = [
        d.ScatterPoint("fp32", 1.0, 1e-12, True, 1_000_000),
        d.ScatterPoint("fp16", 1.1, 1e-5, False, 500_000),
        d.ScatterPoint("int8", 0.06, 1e-3, False, 260_000),
    ]
    plots.tradeoff_scatter(points)
    (fig,) = drawn
    ax = fig.axes[0]
    box = ax.get_window_extent()
    for marks in ax.collections:
        (x, y), (area,) = ax.transData.transform(marks.get_offsets())[0], marks.get_sizes()
        radius = (area**0.5) / 2 * fig.dpi / 72  # a marker's size is its box's area in points²
        assert box.x0 <= x - radius and x + radius <= box.x1, (marks.get_label(), x, radius, box)
        assert box.y0 <= y - radius and y + radius <= box.y1, (marks.get_label(), y, radius, box)


def test_the_latency_cdf_reads_the_medians_when_a_tail_is_far_above_them(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Medians of 0.027-0.064 ms and a p99 of 29 ms: a linear axis to 37 ms drew every curve as one
    vertical line at 0. The axis is logarithmic where the p99s are far above the medians."""
    drawn = _figures(monkeypatch)

    def series(precision: str, p50: float, p99: float) -> d.CdfSeries:
        quantiles = [p50 * (0.8 + 0.4 * i / 99) for i in range(99)] + [p99, p99 * 1.3]
        return d.CdfSeries(precision, "1", quantiles, [float(i) for i in range(101)])

    plots.latency_cdf([series("fp32", 0.027, 0.16), series("fp16", 0.029, 8.2), series("int8", 0.064, 29.4)])
    plots.latency_cdf([series("fp32", 2.0, 2.6), series("int8", 1.2, 1.9)])
    wide, narrow = (fig.axes[0] for fig in drawn)
    assert wide.get_xscale() == "log" and narrow.get_xscale() == "linear"
    left, right = wide.get_xlim()
    assert left <= 0.027 * 0.8 and right >= 29.4  # every median and p99 inside

    # the medians apart: fp32's and int8's p50 at least a tenth of the axis apart
    def to_axes(ms: float) -> float:
        return float(wide.transAxes.inverted().transform(wide.transData.transform((ms, 50.0)))[0])

    assert to_axes(0.064) - to_axes(0.027) > 0.1


def test_batch_sizes_are_labelled_as_numbers_not_powers_of_two(monkeypatch: pytest.MonkeyPatch) -> None:
    drawn = _figures(monkeypatch)
    plots.batch_curves([d.BatchSeries("fp32", [1, 2, 4, 8], [10.0, 15.0, 18.0, 20.0], [1.0, 1.3, 2.2, 4.0],
                                      [1.5, 2.5, 3.0, 5.0])])  # fmt: skip
    (fig,) = drawn
    for ax in fig.axes:
        labels = [t.get_text() for t in ax.get_xticklabels() if t.get_text()]
        assert labels == ["1", "2", "4", "8"], labels


def test_the_trade_off_table_with_a_task_metric_and_energy_shows_its_gate_column(tmp_path: Path) -> None:
    """The demo's table (11 columns with its "digits accuracy") overflowed the page's 60rem: its
    last column, the gate, was cut at its first pixel behind a scrollbar at 1400 and 1920 px."""
    from edgedeploy.stages.report import write_report
    from tests.report.cdp import find_chromium, visit

    run = RunData(
        sources=["x"], kind="run", model="digits_cnn", target="x86-64-cpu", gates={"min_cosine": 0.99}
    )
    for precision, p50, cosine in (
        ("fp32", 0.0312, 1.0),
        ("fp16", 0.0296, 0.99999961),
        ("int8", 0.0541, 0.99981),
    ):
        figures = {"median_ms": p50, "p99_ms": p50 * 3.1, "throughput_ips": 1000 / p50,
                   "energy": {"measurable": True, "energy_per_inference_mj": 0.0123, "source": "rapl"},
                   "quantiles_ms": [p50 * (0.9 + 0.002 * i) for i in range(101)]}  # fmt: skip
        compare = {"passed": True, "outputs": {"logits": {"cosine": cosine, "norm_ratio": 1.000123,
                                                          "top1_agreement": 0.9987}}}  # fmt: skip
        run.precisions.append(
            PrecisionData(precision, size_bytes=123_456, compare=compare,
                          profile={"backend": "onnxruntime", "batch_sizes": {"1": figures}},
                          info={"task_metric": {"name": "digits accuracy", "value": 0.9933}})
        )  # fmt: skip
    files = write_report(run, tmp_path / "r")
    chromium = find_chromium()
    if chromium is None:
        pytest.skip("no chromium to lay the page out")
    overflow = (
        "(() => { const b = document.querySelector('#tradeoff .table-wrap');"
        " return [b.scrollWidth - b.clientWidth, document.querySelectorAll('#tradeoff th').length]; })()"
    )
    for width in (1400, 1920):
        seen = visit(files.html, chromium, width=width, expression=overflow)
        scrolled, columns = seen.value
        assert columns == 12 and scrolled <= 0, (width, seen.value)


def test_a_task_metric_given_to_the_run_is_in_its_record_its_bundle_and_every_report(
    digits: Any, tmp_path: Path
) -> None:
    """The demo's per-precision accuracy was added to its own report.html only: the bundle's report,
    `report WORKDIR` and `report bundle.tar.gz` had no such column, and --json said task_metric null.
    run_pipeline takes the task metric per precision and records it in run.json and the manifest."""
    from edgedeploy.config import load_config
    from edgedeploy.pipeline import run_pipeline
    from edgedeploy.stages.report import load_run
    from edgedeploy.stages.report.data import report_figures
    from tests.test_pipeline import _config

    config = load_config(_config(tmp_path, digits, ""))
    config.profile.enabled = False
    metric = {"fp32": 0.9933, "fp16": 0.9931}
    result = run_pipeline(
        config, report=False, task_metric=lambda o: ("digits accuracy", metric[o.precision])
    )
    assert result.bundle is not None
    for source in (tmp_path / "work", Path(result.bundle["directory"]), Path(result.bundle["archive"])):
        rows = report_figures(load_run([source]))["precisions"]
        got = {r["precision"]: r["task_metric"] for r in rows}
        assert got == {p: {"name": "digits accuracy", "value": v} for p, v in metric.items()}, source
    page = (Path(result.bundle["directory"]) / "report.html").read_text()
    assert "digits accuracy" in page and "0.9931" in page
