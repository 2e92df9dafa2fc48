"""Report charts: matplotlib to inline SVG (what edgedeploy uses) against Plotly with its script inline.

The same four charts of one report (precision trade-off scatter, latency CDF, FP16 ranges, INT8
clipping histograms) are drawn with each library from the same :mod:`edgedeploy.stages.report.data`,
written as one self-contained HTML page each, and opened in headless Chromium (Debian's
``chromium``; the DevTools client of tests/report/cdp.py): page size, load time (navigation start
to load event end, median of 5 loads) and render time in Python are printed side by side.
Plotly is not a dependency: ``pip install plotly`` to include it (it is skipped, with the reason,
when missing).

Run from the repository root after ``make demo``:
``python benchmarks/report_plots.py [edgedeploy-demo] [--json out.json]``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from edgedeploy.stages.report import data as d
from edgedeploy.stages.report.load import RunData, load_run


def matplotlib_page(run: RunData) -> str:
    from edgedeploy.stages.report import plots

    rows = d.tradeoff_rows(run)
    svgs = [
        plots.tradeoff_scatter(d.scatter_points(rows)),
        plots.latency_cdf(d.latency_cdfs(run)),
        plots.fp16_ranges(d.fp16_range_bars(run)),
        plots.clipping(d.clipping_panels(run)),
    ]
    return "<!DOCTYPE html><html><head><meta charset='utf-8'></head><body>" + "".join(svgs) + "</body></html>"


def plotly_page(run: RunData) -> str:
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    rows = d.tradeoff_rows(run)
    figs = []
    scatter = go.Figure()
    for p in d.scatter_points(rows):
        scatter.add_trace(
            go.Scatter(
                x=[p.speedup], y=[p.loss], mode="markers+text", text=[p.precision], name=p.precision,
                marker={"size": 10 + 30 * (p.size_bytes or 1) / max(r.size_bytes or 1 for r in rows)},
            )
        )  # fmt: skip
    scatter.update_yaxes(type="log")
    figs.append(scatter)
    cdf = go.Figure()
    for s in d.latency_cdfs(run):
        cdf.add_trace(go.Scatter(x=s.latencies_ms, y=s.percent, mode="lines", name=s.precision))
    figs.append(cdf)
    bars = d.fp16_range_bars(run)
    ranges = go.Figure()
    for b in bars:
        ranges.add_trace(
            go.Scatter(x=[b.absmin or b.absmax, b.absmax], y=[b.tensor] * 2, mode="lines", showlegend=False)
        )
    ranges.update_xaxes(type="log")
    figs.append(ranges)
    panels = d.clipping_panels(run)
    clip = make_subplots(
        rows=max(1, (len(panels) + 1) // 2), cols=2, subplot_titles=[p.tensor for p in panels]
    )
    for i, p in enumerate(panels):
        clip.add_trace(go.Bar(x=p.edges[:-1], y=p.counts, showlegend=False), row=i // 2 + 1, col=i % 2 + 1)
    clip.update_yaxes(type="log")
    figs.append(clip)
    parts = [fig.to_html(full_html=False, include_plotlyjs=(i == 0)) for i, fig in enumerate(figs)]
    return (
        "<!DOCTYPE html><html><head><meta charset='utf-8'></head><body>" + "".join(parts) + "</body></html>"
    )


def measure(name: str, make: Any, run: RunData, chromium: str | None, out: Path) -> dict[str, Any]:
    start = time.perf_counter()
    page = make(run)
    render_s = time.perf_counter() - start
    path = out / f"{name}.html"
    path.write_text(page, encoding="utf-8")
    result: dict[str, Any] = {
        "library": name,
        "kB": round(len(page.encode()) / 1000, 1),
        "render_s": round(render_s, 2),
    }
    if chromium:
        from tests.report.cdp import visit

        loads = [visit(path, chromium).load_ms for _ in range(5)]
        result["load_ms_median"] = round(statistics.median([x for x in loads if x is not None]), 1)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "run", nargs="?", default="edgedeploy-demo", help="a run workdir (default: make demo's)"
    )
    parser.add_argument("--json", type=Path, help="write the figures here too")
    args = parser.parse_args()
    from tests.report.cdp import find_chromium

    run = load_run([Path(args.run)])
    chromium = find_chromium()
    if chromium is None:
        print("chromium not found: sizes only (apt-get install chromium for load times)")
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        results.append(measure("matplotlib-svg", matplotlib_page, run, chromium, Path(tmp)))
        try:
            import plotly  # noqa: F401
        except ImportError:
            print("plotly not installed (pip install plotly): skipped")
        else:
            results.append(measure("plotly-inline", plotly_page, run, chromium, Path(tmp)))
    print(f"{'library':16} {'page kB':>8} {'render s':>9} {'load ms (median of 5)':>22}")
    for r in results:
        print(f"{r['library']:16} {r['kB']:>8} {r['render_s']:>9} {r.get('load_ms_median', '-'):>22}")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
