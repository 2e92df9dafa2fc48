"""The report area's defects found in review (tests/report/test_report_files.py holds the rest)."""

from __future__ import annotations

from edgedeploy.stages.report import data as d
from edgedeploy.stages.report import plots

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
