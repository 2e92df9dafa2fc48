"""The report's charts: matplotlib figures written as inline SVG.

Why matplotlib to SVG, not an interactive library. Measured by ``benchmarks/report_plots.py`` on
the demo's four main charts (trade-off scatter, latency CDF, FP16 ranges, INT8 clipping), each
library drawing the same data into one self-contained page, opened in headless Chromium 156
(2-core AMD EPYC VM; load = navigation start to load event end, median of 5):

* matplotlib 3.11 -> inline SVG, text kept as text: 166 kB, loads in ~100 ms; vectors print
  sharp on A4; no script at all (the page can forbid scripts in its Content-Security-Policy).
  Drawing takes ~2.5 s of Python (most of it importing matplotlib).
* plotly.py 7.1 with plotly.js 4.1 inline: 4,858 kB (the script alone is 4.8 MB),
  loads in 1.5-2.3 s; drawn only after its script runs, so a printout or a CI artifact viewer
  with scripts off shows nothing. Drawing takes ~0.3 s.
* Vega-Lite via vl-convert was not pursued: its static output is SVG like matplotlib's, and its
  interactive output carries ~0.8 MB of vega script, with the same script objections.

A report is read once, attached to CI runs and PRs, and printed: the 29x smaller page that
needs no script reads the same, so matplotlib it is. Hover is replaced by direct labels and by
the tables beside each chart. matplotlib is imported only here, behind ``edgedeploy[report]``.

Readable without colour: each precision has its own marker and line style as well as a colour
(Okabe-Ito, safe for colour-blind readers), and limits are labelled lines, not shaded areas.
"""

from __future__ import annotations

import io
import itertools
import math
import re
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from edgedeploy.errors import InputError
from edgedeploy.interrupts import deferred
from edgedeploy.stages.report.data import (
    EXACT_LOSS,
    FP16_MAX,
    FP16_MIN_NORMAL,
    FP16_ZERO_UPTO,
    BatchSeries,
    CdfSeries,
    ClipPanel,
    LayerSeries,
    MatrixBar,
    PowerTrace,
    RangeBar,
    ScatterPoint,
)
from edgedeploy.ui import human_size

INSTALL = "pip install 'edgedeploy[report]'"
WIDTH_IN = 7.0  # fits A4 portrait with 2 cm margins at 100 %
# Okabe-Ito colours, with a marker and a line style each: precision is never told by colour alone
STYLES = {
    "fp32": ("#0072B2", "o", "-"),
    "tf32": ("#56B4E9", "P", (0, (5, 1))),
    "bf16": ("#009E73", "X", (0, (3, 1, 1, 1))),
    "fp16": ("#E69F00", "s", "--"),
    "fp8": ("#CC79A7", "v", (0, (1, 1))),
    "int8": ("#D55E00", "^", ":"),
    "fp4": ("#000000", "*", "-."),
}
OTHER = ("#555555", "D", "-.")
_counter = itertools.count()


def require_matplotlib() -> Any:
    """matplotlib with the SVG settings the report uses; a clear line (exit 2) when it is missing."""
    try:
        with deferred():  # a signal inside an extension's initialization can crash the process
            import matplotlib
    except ImportError:
        raise InputError(f"the report needs matplotlib: {INSTALL}") from None
    matplotlib.use("Agg", force=True)
    return matplotlib


def style(precision: str) -> tuple[str, str, Any]:
    return STYLES.get(precision, OTHER)


@contextmanager
def _figure(height_in: float, ncols: int = 1, nrows: int = 1, **kw: Any) -> Iterator[tuple[Any, Any]]:
    matplotlib = require_matplotlib()
    with deferred():
        import matplotlib.pyplot as plt

    rc = {
        "svg.fonttype": "none",  # text stays text: smaller, selectable, read by screen readers
        "svg.hashsalt": f"edgedeploy-report-{next(_counter)}",  # unique ids when several SVGs share a page
        "font.family": "sans-serif",
        "font.size": 9,
        "axes.titlesize": 10,
        "axes.spines.top": False,
        "axes.spines.right": False,
        "axes.grid": True,
        "grid.alpha": 0.3,
        "svg.image_inline": True,
    }
    with matplotlib.rc_context(rc):
        fig, axes = plt.subplots(nrows, ncols, figsize=(WIDTH_IN, height_in), **kw)
        try:
            yield fig, axes
        finally:
            plt.close(fig)


def _svg(fig: Any, title: str) -> str:
    """The figure as an inline ``<svg>`` element with a title for assistive technology."""
    buf = io.StringIO()
    fig.savefig(buf, format="svg", bbox_inches="tight", metadata={"Date": None, "Creator": None})
    text = buf.getvalue()
    start = text.index("<svg")
    # the RDF metadata block is boilerplate with no use inline
    svg = re.sub(r"<metadata>.*?</metadata>\s*", "", text[start:], flags=re.S)
    svg = re.sub(r"<svg ", f'<svg role="img" aria-label="{_attr(title)}" ', svg, count=1)
    svg = svg.replace(">", f"><title>{_esc(title)}</title>", 1) if "<title>" not in svg[:400] else svg
    return svg.strip()


def _esc(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _attr(text: str) -> str:
    return _esc(text).replace('"', "&quot;")


def _short(name: str, width: int = 34) -> str:
    """``name`` cut to ``width`` from its start, as :func:`_plain` text."""
    return _plain(name if len(name) <= width else "…" + name[-(width - 1) :])


def _plain(text: object) -> str:
    """``text`` as matplotlib draws it literally. A string with two ``$`` is mathtext to matplotlib:
    a tensor named ``a$\\frac$b`` raised its ParseSyntaxException (the report died) and ``$x^2$`` was
    drawn as an italic x². ONNX allows any string as a name, so every name, precision and label from
    the files read is passed through here: each ``$`` becomes ``\\$``, which matplotlib draws as ``$``
    (a name holding ``\\$`` keeps its backslash: matplotlib's ``is_math_text`` counts ``\\$`` apart).
    Not ``text.parse_math = False`` for the whole figure: the log axes' tick labels are mathtext."""
    return str(text).replace("$", r"\$")


def tradeoff_scatter(points: list[ScatterPoint]) -> str:
    """Accuracy loss (1 - cosine, log) against speed-up over fp32; marker area grows with model size.

    Each marker carries its precision's name; the figures behind it are in the table above it.
    """
    with _figure(3.6) as (fig, ax):
        sizes = [p.size_bytes for p in points if p.size_bytes]
        biggest = max(sizes) if sizes else 1
        areas = [60 + 540 * (p.size_bytes / biggest) if p.size_bytes else 80 for p in points]
        for p, area in zip(points, areas, strict=True):
            colour, marker, _ = style(p.precision)
            ax.scatter(
                [p.speedup],
                [p.loss],
                s=area,
                marker=marker,
                facecolor=colour,
                edgecolor="black",
                linewidth=0.8,
                alpha=0.85,
                zorder=3,
                label=_plain(p.precision) + (f" ({human_size(p.size_bytes)})" if p.size_bytes else ""),
            )
            radius_pt = math.sqrt(area / math.pi)
            ax.annotate(
                _plain(p.precision),
                (p.speedup, p.loss),
                textcoords="offset points",
                xytext=(radius_pt + 3, radius_pt * 0.6),
                fontsize=8,
                fontweight="bold",
                zorder=4,
            )
        ax.set_yscale("log")
        ax.axvline(1.0, color="black", linewidth=0.8, linestyle="--")
        ax.text(1.0, 1.0, " fp32 speed", transform=ax.get_xaxis_transform(), fontsize=7, va="top")
        batches = sorted({str(p.batch) for p in points})
        at = (
            f"batch {_plain(batches[0])}"
            if len(batches) == 1
            else "each at a batch both profiled, see the table"
        )
        ax.set_xlabel(f"speed-up over fp32 (p50 latency, {at}): right is faster")
        ax.set_ylabel("accuracy loss, 1 − cosine (log)\nlower is better")
        lows = [p.loss for p in points]
        ax.set_ylim(min(lows) / 10, max(max(lows) * 30, 1e-6))
        # room for the largest marker whole at either end, and its label on the right: a speed-up of
        # 0.06x sat on the left end of a 0.85x margin, its marker cut in half by the spine
        width_pt = fig.get_size_inches()[0] * 72 * ax.get_position().width
        reach = math.sqrt(max(areas))  # the largest marker's width, in points
        left, right = (reach / 2 + 4) / width_pt, (reach / 2 + 50) / width_pt  # shares of the width
        xs = [p.speedup for p in points]
        lo, hi = min([*xs, 1.0]), max([*xs, 1.0])
        span = max(hi - lo, 0.3) / (1 - left - right)
        ax.set_xlim(lo - span * left, hi + span * right)
        if any(p.exact for p in points):
            ax.axhline(EXACT_LOSS, color="grey", linewidth=0.6, linestyle=":")
            ax.text(
                0.01,
                EXACT_LOSS,
                "1 − cosine ≤ 1e-12",
                transform=ax.get_yaxis_transform(),
                fontsize=7,
                va="bottom",
            )
        # beside the axes: a slow, lossy precision lands top left, under a legend placed inside
        legend = ax.legend(
            loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8, title="precision (model size)",
            title_fontsize=8,
        )  # fmt: skip
        for handle in legend.legend_handles:
            if handle is not None and hasattr(handle, "set_sizes"):
                handle.set_sizes([50])
        ax.set_title("Precision trade-off (marker area: model size)")
        return _svg(fig, "Scatter of accuracy loss against speed-up per precision, marker area by model size")


def latency_cdf(series: list[CdfSeries]) -> str:
    """Cumulative distribution of latency per precision (a batch's time: ``CdfSeries.batch``); p50
    and p99 marked.

    The axis ends a little past the largest p99: the slowest few runs (scheduler hiccups) would
    otherwise squeeze the distribution into a sliver; how far they went is written on the chart.
    """
    with _figure(3.2) as (fig, ax):
        for s in series:
            colour, marker, line = style(s.precision)
            ax.plot(
                s.latencies_ms,
                s.percent,
                color=colour,
                linestyle=line,
                linewidth=1.6,
                marker=marker,
                markevery=max(1, len(s.percent) // 10),
                markersize=5,
                label=_plain(f"{s.precision} (batch {s.batch})"),
            )
        p99s = [_at_percent(s, 99.0) for s in series]
        lowest = min(s.latencies_ms[0] for s in series)
        right = max(p99s) * 1.25
        p50s = [_at_percent(s, 50.0) for s in series]
        if min(p50s) > 0 and max(p99s) > 10 * min(p50s):
            # a p99 far above the medians (29 ms beside 0.03 ms): on a linear axis every curve was
            # one vertical line at 0; on a log axis the medians read apart and the tail fits
            ax.set_xscale("log")
            ax.set_xlim(max(lowest, min(p50s) / 10) * 0.8, right)
        else:
            ax.set_xlim(max(0.0, lowest - 0.1 * (right - lowest)), right)
        slowest = max(s.latencies_ms[-1] for s in series)
        if slowest > right:
            ax.text(
                0.99,
                0.03,
                f"slowest run {slowest:.3g} ms (beyond the axis)",
                transform=ax.transAxes,
                fontsize=7,
                ha="right",
                va="bottom",
            )
        for q in (50, 99):
            ax.axhline(q, color="black", linewidth=0.5, linestyle=":")
            ax.text(ax.get_xlim()[0], q, f" p{q}", fontsize=7, ha="left", va="bottom")
        # each run's time is the whole batch's (as in batch_curves), not one inference's
        batches = sorted({s.batch for s in series})
        ax.set_xlabel(
            f"latency per batch of {_plain(batches[0])} (ms)"
            if len(batches) == 1
            else "latency per batch (ms), batch size in the legend"
        )
        ax.set_ylabel("share of runs at or below (%)")
        ax.set_ylim(0, 101)
        ax.legend(loc="center right", fontsize=8)
        ax.set_title("Latency distribution (CDF)")
        return _svg(fig, "Cumulative latency distribution per precision")


def _at_percent(series: CdfSeries, percent: float) -> float:
    """The latency at ``percent`` by linear interpolation between the stored quantiles."""
    for (x0, y0), (x1, y1) in itertools.pairwise(zip(series.latencies_ms, series.percent, strict=True)):
        if y0 <= percent <= y1:
            return x0 if y1 == y0 else x0 + (x1 - x0) * (percent - y0) / (y1 - y0)
    return series.latencies_ms[-1]


def batch_curves(series: list[BatchSeries]) -> str:
    """Throughput and latency against batch size, one line per precision."""
    with _figure(3.0, ncols=2) as (fig, (left, right)):
        for s in series:
            colour, marker, line = style(s.precision)
            kw = {"color": colour, "marker": marker, "linestyle": line, "label": _plain(s.precision)}
            left.plot(s.batches, [v if v is not None else math.nan for v in s.throughput_ips], **kw)
            right.plot(s.batches, [v if v is not None else math.nan for v in s.p50_ms], **kw)
            right.plot(
                s.batches,
                [v if v is not None else math.nan for v in s.p99_ms],
                color=colour,
                marker=marker,
                linestyle=line,
                alpha=0.45,
                markerfacecolor="none",
            )
        sizes = sorted({b for s in series for b in s.batches})
        for ax in (left, right):
            ax.set_xscale("log", base=2)
            ax.set_xticks(sizes, [str(b) for b in sizes])  # 1, 2, 4: not 2^0, 2^1, 2^2
            ax.minorticks_off()
            ax.set_xlabel("batch size")
        latencies = [v for s in series for v in (*s.p50_ms, *s.p99_ms) if v]
        if latencies and max(latencies) / min(latencies) > 30:
            right.set_yscale("log")  # a slow tail at one batch size would flatten every other point
        left.set_ylabel("throughput (inferences/s)")
        right.set_ylabel("latency per batch (ms): filled p50, hollow p99")
        left.legend(fontsize=8)
        left.set_title("Throughput")
        right.set_title("Latency")
        fig.tight_layout()
        return _svg(fig, "Throughput and latency against batch size per precision")


def matrix_latency(model: str, bars: list[MatrixBar]) -> str:
    """p50 latency per target (rows) and precision (bars in a group), each labelled with its min cosine."""
    targets = list(dict.fromkeys(b.target for b in bars))
    precisions = list(dict.fromkeys(b.precision for b in bars))
    height = 0.8 / max(len(precisions), 1)
    with _figure(0.9 + 0.32 * len(bars) + 0.15 * len(targets)) as (fig, ax):
        for j, precision in enumerate(precisions):
            colour, _, _ = style(precision)
            # precision is never told by colour alone
            hatch = ["", "//", "..", "xx", "\\\\", "--", "++"][j % 7]
            mine = [b for b in bars if b.precision == precision]
            ys = [targets.index(b.target) + (j - (len(precisions) - 1) / 2) * height for b in mine]
            ax.barh(
                ys,
                [b.p50_ms for b in mine],
                height=height * 0.9,
                color=colour,
                hatch=hatch,
                edgecolor="black",
                linewidth=0.5,
                label=_plain(precision),
            )
            for y, b in zip(ys, mine, strict=True):
                label = f" {b.p50_ms:.3g} ms" + (f", cos {b.cosine:.4f}" if b.cosine is not None else "")
                ax.text(b.p50_ms, y, label, va="center", fontsize=7)
        ax.set_yticks(range(len(targets)), [_short(t, 24) for t in targets])
        ax.invert_yaxis()
        ax.set_xlabel("p50 latency (ms), first profiled batch size: shorter is faster")
        ax.set_xlim(0, max(b.p50_ms for b in bars) * 1.6)
        ax.legend(fontsize=8, title="precision", title_fontsize=8, loc="lower right")
        ax.set_title(f"{_short(model, 40)}: latency per target and precision")
        return _svg(fig, f"Bar chart of p50 latency of {model} per target and precision")


def fp16_ranges(bars: list[RangeBar]) -> str:
    """Per tensor, smallest to largest non-zero |x| on a log axis, against the fp16 limits."""
    height = 1.2 + 0.22 * len(bars)
    with _figure(height) as (fig, ax):
        for i, b in enumerate(bars):
            low = b.absmin if b.absmin else b.absmax
            ax.hlines(
                i,
                low,
                b.absmax,
                color="#0072B2" if not b.kept_fp32 else "#D55E00",
                linewidth=5 if b.kept_fp32 else 3,
                linestyle="-",
            )
            ax.plot([b.absmax], [i], marker="|", color="black", markersize=8)
            if b.kept_fp32:
                ax.plot([b.absmax], [i], marker="s", color="#D55E00", markersize=5, linestyle="none")
        labels = [
            _short(b.tensor) + ("  [fp32]" if b.kept_fp32 else "  [risk]" if b.risk else "") for b in bars
        ]
        ax.set_yticks(range(len(bars)), labels, fontsize=7)
        ax.invert_yaxis()
        ax.set_xscale("log")
        limits = (
            (FP16_MAX, "65504: overflow (Inf) above", "-"),
            (FP16_MIN_NORMAL, "6.1e-5: subnormal below", "--"),
            (FP16_ZERO_UPTO, "3e-8: zero at or below", ":"),
        )
        lows = [b.absmin or b.absmax for b in bars]
        ax.set_xlim(min([*lows, FP16_ZERO_UPTO]) / 10, max([b.absmax for b in bars] + [FP16_MAX]) * 10)
        for value, label, line in limits:
            ax.axvline(value, color="black", linestyle=line, linewidth=1)
            ax.text(
                value,
                1.0,
                label,
                transform=ax.get_xaxis_transform(),
                fontsize=7,
                rotation=90,
                ha="right",
                va="top",
            )
        ax.set_xlabel("|value| observed on the data (log): bar from the smallest non-zero to the largest")
        ax.set_title("FP16 safety: tensor ranges against float16 limits ([fp32] = kept in fp32)")
        ax.grid(axis="y", alpha=0)
        return _svg(fig, "Range of every tensor against the float16 overflow, subnormal and zero limits")


def clipping(panels: list[ClipPanel]) -> str:
    """Small multiples: each worst-clipped tensor's |x| histogram with its INT8 threshold and max."""
    ncols = 2 if len(panels) > 1 else 1
    nrows = math.ceil(len(panels) / ncols)
    with _figure(1.9 * nrows + 0.4, ncols=ncols, nrows=nrows, squeeze=False) as (fig, axes):
        flat = [ax for row in axes for ax in row]
        for ax, p in zip(flat, panels, strict=False):
            # one filled step outline per side of the threshold: two paths a panel, not one per bar
            cut = next((i for i, edge in enumerate(p.edges[1:]) if edge > p.threshold), len(p.counts))
            counts = [max(n, 0.5) for n in p.counts]  # a log axis has no zero; 0.5 sits below 1 value
            ax.stairs(counts[: cut + 1], p.edges[: cut + 2], fill=True, color="#0072B2", baseline=0.5)
            if cut + 1 < len(counts):
                ax.stairs(
                    counts[cut + 1 :],
                    p.edges[cut + 1 :],
                    fill=True,
                    facecolor="#D55E00",
                    edgecolor="black",
                    hatch="////",
                    linewidth=0,
                    baseline=0.5,
                )
            ax.set_yscale("log")
            ax.axvline(p.threshold, color="black", linestyle="--", linewidth=1.2)
            ax.axvline(p.amax, color="black", linestyle=":", linewidth=1)
            ax.text(p.threshold, 1.0, " threshold", transform=ax.get_xaxis_transform(), fontsize=7, va="top")
            ax.set_title(f"{_short(p.tensor, 40)}: {p.clipped:.3%} clipped ({_plain(p.dtype)})", fontsize=8)
            ax.set_xlim(0, max(p.amax, p.threshold) * 1.08)
            ax.tick_params(labelsize=7)
        for ax in flat[len(panels) :]:
            ax.set_visible(False)
        fig.supxlabel(
            "|activation| (dashed: calibration threshold, dotted: max seen; hatched: clipped)", fontsize=8
        )
        fig.supylabel("values (log)", fontsize=8)
        fig.suptitle("INT8 calibration: worst-clipped tensors", fontsize=10)
        fig.tight_layout()
        return _svg(fig, "Activation histograms of the worst-clipped tensors with their INT8 thresholds")


def per_layer(series: LayerSeries) -> str:
    """1 - cosine per tensor in graph order, the tolerance line, the first tensor over it marked."""
    with _figure(3.0) as (fig, ax):
        colour, marker, line = style(series.precision)
        x = list(range(len(series.losses)))
        ax.plot(x, series.losses, color=colour, linestyle=line, marker=marker, markersize=3, linewidth=1)
        over = [i for i, e in enumerate(series.exceeds) if e]
        ax.plot(
            over,
            [series.losses[i] for i in over],
            linestyle="none",
            marker="x",
            color="black",
            markersize=6,
            label="over tolerance",
        )
        if series.tolerance:
            ax.axhline(series.tolerance, color="black", linestyle="--", linewidth=1)
            ax.text(0, series.tolerance, " tolerance (1 − min cosine)", fontsize=7, va="bottom")
        if series.first_exceeding is not None:
            i = series.first_exceeding
            ax.annotate(
                f"first over: {_short(series.tensors[i], 30)}",
                (i, series.losses[i]),
                xytext=(15, 20),
                textcoords="offset points",
                fontsize=8,
                arrowprops={"arrowstyle": "->"},
            )
        ax.set_yscale("log")
        if len(x) <= 40:  # few enough to name every tensor under its point
            ax.set_xticks(x, [_short(t, 24) for t in series.tensors], rotation=60, ha="right", fontsize=7)
        ax.set_xlabel("tensor, in graph order")
        ax.set_ylabel("1 − cosine vs fp32 (log)")
        ax.set_title(_plain(f"Per-layer error, {series.precision} ({series.mode})"))
        if over:
            ax.legend(fontsize=8, loc="upper left")
        return _svg(fig, f"Per-layer error of {series.precision} against fp32 in graph order")


def power(traces: list[PowerTrace]) -> str:
    """Power per rail over the benchmark run, one panel per precision."""
    with _figure(2.2 * len(traces) + 0.3, nrows=len(traces), squeeze=False) as (fig, axes):
        line_styles = ["-", "--", ":", "-.", (0, (5, 1)), (0, (3, 1, 1, 1))]
        for ax, t in zip([row[0] for row in axes], traces, strict=True):
            for (rail, watts), ls in zip(t.rails.items(), itertools.cycle(line_styles)):
                ax.plot(
                    t.times_s,
                    [w if w is not None else math.nan for w in watts],
                    linestyle=ls,
                    label=_plain(rail),
                )
            ax.set_ylabel("W")
            ax.set_title(
                _plain(f"{t.precision}: {t.source}" + (f" ({t.covered})" if t.covered else "")), fontsize=8
            )
            ax.set_ylim(bottom=0)  # watts from zero: the share of each rail reads true
            ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))  # beside the lines, not over
        axes[-1][0].set_xlabel("time since the benchmark started (s)")
        fig.tight_layout()
        return _svg(fig, "Power per rail over the benchmark run")
