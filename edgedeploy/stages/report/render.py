"""The report as one self-contained HTML page and as a Markdown summary.

The page carries its styles and its charts (inline SVG) and loads nothing: no script, font, image
or style sheet from anywhere, so it opens offline, in a CI artifact viewer and in a mail client.
CSS makes it readable in a narrow window (tables scroll, charts scale) and on A4 paper
(``@media print``: no backgrounds, page breaks kept out of charts and tables).
Hand-written: a page template is a few dozen lines, not worth a template engine dependency.
"""

from __future__ import annotations

import datetime as dt
import html
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from calibration.report import recorded_type
from edgedeploy.stages.report import data as d
from edgedeploy.stages.report.load import RunData
from edgedeploy.ui import cosine_figure, human_size, md_code, md_text

CSS = """
:root { --ink: #1a1a1a; --muted: #555; --rule: #ccc; --pass: #006d2c; --fail: #a50f15; }
* { box-sizing: border-box; }
body { font: 15px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, "DejaVu Sans", sans-serif;
       color: var(--ink); max-width: 60rem; margin: 0 auto; padding: 1rem; }
h1 { font-size: 1.5rem; margin: 0.2rem 0 0.6rem; }
h2 { font-size: 1.2rem; margin-top: 2rem; border-bottom: 1px solid var(--rule); padding-bottom: 0.2rem; }
h3 { font-size: 1rem; }
.muted, figcaption, .note { color: var(--muted); font-size: 0.9rem; }
dl.headline { display: grid; grid-template-columns: max-content 1fr; gap: 0.15rem 1rem; margin: 0; }
dl.headline dt { font-weight: 600; }
dl.headline dd { margin: 0; overflow-wrap: anywhere; }
.table-wrap { overflow-x: auto; max-width: 100%; }
table { border-collapse: collapse; font-size: 0.85rem; margin: 0.5rem 0; }
th, td { border: 1px solid var(--rule); padding: 0.2rem 0.4rem; text-align: right; vertical-align: top;
         white-space: nowrap; }
th { background: #f3f3f3; }
td.text, th.text { text-align: left; }
td.wrap, th.wrap { text-align: left; white-space: normal; overflow-wrap: anywhere; min-width: 12rem; }
.pass { color: var(--pass); font-weight: 600; }
.fail { color: var(--fail); font-weight: 600; }
.pass::before { content: "✔ "; }
.fail::before { content: "✘ "; }
figure { margin: 1rem 0; }
figure svg { width: 100%; height: auto; max-width: 100%; display: block; }
nav ol { columns: 2; padding-left: 1.2rem; }
/* a page of wide tables (matrix.html: 12 columns and a reason that wraps): wider, its charts not */
body.wide { max-width: 84rem; }
body.wide figure { max-width: 58rem; }
@media (max-width: 40rem) {
  body { font-size: 14px; padding: 0.5rem; }
  dl.headline { grid-template-columns: 1fr; }
  dl.headline dd { margin-bottom: 0.3rem; }
  nav ol { columns: 1; }
}
@media print {
  @page { size: A4; margin: 15mm; }
  body { max-width: none; padding: 0; font-size: 10.5pt; }
  th { background: none; }
  .table-wrap { overflow: visible; }  /* paper cannot scroll: wrap the cells instead */
  table { font-size: 8pt; width: 100%; }
  th, td { white-space: normal; padding: 0.1rem 0.25rem; }
  nav { display: none; }
  figure, table, dl.headline { break-inside: avoid; }
  h2 { break-after: avoid; }
  a { color: inherit; text-decoration: none; }
}
"""


@dataclass
class Section:
    key: str
    title: str
    body: str  # HTML
    wide: bool = False  # a table that needs the wide page (render.page's ``wide``)


@dataclass
class Report:
    title: str
    html: str
    markdown: str
    sections: list[str] = field(default_factory=list)  # keys of the sections drawn


def _e(value: Any) -> str:
    return html.escape(str(value), quote=True)


def _num(value: float | None, spec: str = ".3g", none: str = "–") -> str:
    if value is None:
        return none
    if spec.endswith("g") and 1e4 <= abs(value) < 1e9:  # 41,273 rather than 4.127e+04
        return f"{value:,.0f}"  # (beyond, 1e+300 stays short: not a number of 300 digits)
    return format(value, spec)


def _size(n: int | None) -> str:
    return human_size(n, "–")


def _gate(passed: bool | None) -> tuple[str, str]:
    """(css class, word): the word carries the meaning, the class only adds colour."""
    if passed is None:
        return "", "not compared"
    return ("pass", "pass") if passed else ("fail", "FAIL")


def _table(
    headers: list[str],
    rows: list[list[str]],
    text_cols: int = 1,
    caption: str | None = None,
    wrap: tuple[int, ...] = (),
) -> str:
    """A table; the first ``text_cols`` columns are left-aligned text, columns in ``wrap`` may wrap."""

    def cls(i: int) -> str:
        return " ".join(c for c, on in (("text", i < text_cols), ("wrap", i in wrap)) if on)

    head = "".join(f'<th scope="col" class="{cls(i)}">{_e(h)}</th>' for i, h in enumerate(headers))
    body = "".join(
        "<tr>" + "".join(f'<td class="{cls(i)}">{c}</td>' for i, c in enumerate(row)) + "</tr>"
        for row in rows
    )
    # the caption goes above the scrolling box, so a narrow window shows all of it
    cap = f"<p class='note'>{_e(caption)}</p>" if caption else ""
    return f'{cap}<div class="table-wrap"><table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table></div>'


def _figure(svg: str, caption: str) -> str:
    return f"<figure>{svg}<figcaption>{_e(caption)}</figcaption></figure>"


# ---------------------------------------------------------------- sections


def _headline(run: RunData, rows: list[d.TradeoffRow]) -> Section:
    best, why = d.recommended(run, rows)
    gates = [(r.precision, r.passed) for r in rows if r.passed is not None]
    gate_html = (
        ", ".join(
            [f'{_e(p)} <span class="{_gate(ok)[0]}">{_gate(ok)[1]}</span>' for p, ok in gates]
            + [f'{_e(p)} <span class="fail">not built</span>' for p in run.not_built]
        )
        or "–"
    )
    tools = ", ".join(f"{_e(k)} {_e(v)}" for k, v in run.tools.items() if v) or "–"
    backends = sorted({r.backend for r in rows})
    items = [
        ("model", _e(run.model or "–")),
        (
            "target",
            _e(run.target or "–")
            + (
                f' <span class="muted">({_e(run.target_description)})</span>'
                if run.target_description
                else ""
            ),
        ),
        ("backend", _e(", ".join(backends) or "–")),
        ("tools", tools),
        ("accuracy gates", _e(d.gate_text(run.gates))),
        ("gate results", gate_html),
        *[(f"{_e(p)} not built", _e(why)) for p, why in run.not_built.items()],
        *[(f"{_e(p)} slower than fp32", _e(fig)) for p, fig in d.slower_precisions(run).items()],
        ("recommended", f"<strong>{_e(best or '–')}</strong> <span class='muted'>({_e(why)})</span>"),
        ("made from", _e(", ".join(run.sources))),
    ]
    body = '<dl class="headline">' + "".join(f"<dt>{k}</dt><dd>{v}</dd>" for k, v in items) + "</dl>"
    return Section("headline", "Summary", body)


def _tradeoff(
    rows: list[d.TradeoffRow],
    plot: Callable[..., str] | None,
    where: str | None = None,
    gate: float | None = None,
) -> Section | None:
    """``gate``: the min cosine the rows were checked against (their cosines print with the digits
    that tell them from it)."""
    if not rows:
        return None
    task_names = {r.task_metric[0] for r in rows if r.task_metric}
    columns: list[tuple[str, Callable[[d.TradeoffRow], str], bool]] = [
        ("precision", lambda r: f"<strong>{_e(r.precision)}</strong>", True),
        ("backend", lambda r: _e(r.backend), len({r.backend for r in rows}) > 1),
        (
            "size (vs fp32)",
            lambda r: _size(r.size_bytes) + (f" ({r.size_ratio:.2f}×)" if r.size_ratio else ""),
            True,
        ),
        ("p50 ms", lambda r: _num(r.p50_ms, ".4g"), True),
        ("p99 ms", lambda r: _num(r.p99_ms, ".4g"), True),
        ("inf/s", lambda r: _num(r.throughput_ips, ".4g"), True),
        ("speed-up", lambda r: _num(r.speedup, ".2f") + ("×" if r.speedup else ""), True),
        ("mJ/inf", lambda r: _num(r.energy_mj, ".3g"), any(r.energy_mj is not None for r in rows)),
        ("min cosine", lambda r: cosine_figure(r.cosine, gate, "–"), True),
        ("norm ratio", lambda r: _num(r.norm_ratio, ".6f"), any(r.norm_ratio is not None for r in rows)),
        ("argmax agr.", lambda r: _num(r.top1, ".4f"), any(r.top1 is not None for r in rows)),
        (
            next(iter(task_names)) if len(task_names) == 1 else "task metric",
            lambda r: (
                (
                    f"{r.task_metric[1]:.4g}"
                    if len(task_names) <= 1
                    else f"{_e(r.task_metric[0])} {r.task_metric[1]:.4g}"
                )
                if r.task_metric
                else "–"
            ),
            bool(task_names),
        ),
        ("gate", lambda r: f'<span class="{_gate(r.passed)[0]}">{_gate(r.passed)[1]}</span>', True),
    ]
    shown = [(name, cell) for name, cell, on in columns if on]
    notes = d.batch_notes(rows)
    if where:  # a GPU target's figures measured on this CPU: not the device's latency or speed-up
        notes.append(f"Latency and speed-up: {where}.")
    if len({r.backend for r in rows}) == 1:
        notes.append(f"Backend: {rows[0].backend}.")
    if not any(r.energy_mj is not None for r in rows):
        notes.append("Energy: not measured on this machine (see Power).")
    body = _table(
        [n for n, _ in shown],
        [[cell(r) for _, cell in shown] for r in rows],
        text_cols=1,
        caption=" ".join(notes),
    )
    points = d.scatter_points(rows)
    if plot is not None and len(points) >= 1:
        body += _figure(
            plot(points),
            "Each precision's accuracy loss against its speed-up over fp32; the marker's area is the model's size. Down and right is better.",
        )
    # 10 columns and more (a task metric, energy, 8-decimal cosines) overflowed 60rem: the last
    # one, the gate, was cut off behind a scrollbar at 1920 px
    return Section("tradeoff", "Precision trade-off", body, wide=len(shown) >= 10)


def _latency(run: RunData, plots: Any) -> Section | None:
    cdfs = d.latency_cdfs(run)
    curves = d.batch_curves(run)
    settings = d.profile_settings(run)
    if not cdfs and not curves and not settings:
        return None
    where = d.where_measured(run)
    body = f"<p class='note'>Latencies {_e(where)}.</p>" if where else ""
    if cdfs and plots is not None:
        batches = sorted({c.batch for c in cdfs})
        at = (
            f"at batch {batches[0]}"
            if len(batches) == 1
            else "each precision at the batch its legend names (no batch size was profiled for all)"
        )
        body += _figure(
            plots.latency_cdf(cdfs),
            f"Share of timed runs (each a whole batch) finishing within a latency, {at}; the steeper and further left, the better. Dotted lines: p50 and p99.",
        )
    elif not cdfs:
        body += "<p class='note'>No latency distribution was recorded (profiles from before quantiles were kept).</p>"
    if curves and plots is not None:
        body += _figure(plots.batch_curves(curves), "Throughput and latency per batch size.")
    if settings:
        body += "<h3>Settings</h3>" + _table(
            ["setting", "value"], [[_e(k), _e(v)] for k, v in settings.items()], text_cols=2, wrap=(1,)
        )
    return Section("latency", "Latency", body)


def _fp16(run: RunData, plots: Any) -> Section | None:
    bars = d.fp16_range_bars(run)
    nodes = d.fp32_nodes(run)
    if not bars and not run.plan:
        return None
    body = ""
    if run.ranges:
        s = run.ranges.get("summary") or {}
        body += (
            f"<p>Range analysis on {_e(s.get('samples', '?'))} samples: {_e(s.get('tensors', '?'))} tensors and "
            f"{_e(s.get('weights', '?'))} weights checked; {_e(s.get('tensors_at_risk', 0))} tensor(s) and "
            f"{_e(s.get('weights_at_risk', 0))} weight(s) at risk.</p>"
        )
    if bars and plots is not None:
        shown = len(bars)
        total = len((run.ranges or {}).get("tensors") or [])
        more = f" ({shown} of {total} tensors: those at risk and nearest a limit)" if total > shown else ""
        body += _figure(
            plots.fp16_ranges(bars),
            f"Each bar spans a tensor's smallest to largest non-zero magnitude{more}. From 65520 fp16 overflows to Inf (65504 is its largest value); below 6.1e-5 it loses precision; at 3e-8 and below it rounds to zero.",
        )
    if run.plan:
        total = run.plan.get("nodes_total", "?")
        body += f"<h3>Nodes kept in fp32: {len(nodes)} of {_e(total)}</h3>"
        if nodes:
            body += _table(
                ["node", "op", "why"],
                [[_e(n.node), _e(n.op), _e(n.reason)] for n in nodes[:200]],
                text_cols=3,
                wrap=(0, 2),
            )
            if len(nodes) > 200:
                body += f"<p class='note'>… and {len(nodes) - 200} more in the precision plan.</p>"
    return Section("fp16", "FP16 safety", body)


def _int8(run: RunData, plots: Any) -> Section | None:
    panels = d.clipping_panels(run)
    layers = d.layer_series(run)
    if not run.calibration and not layers:
        return None
    body = ""
    cal = run.calibration or {}
    if cal:
        algo = cal.get("algorithm") or {}
        body += (
            f"<p>Calibrated with <strong>{_e(algo.get('algorithm', '?'))}</strong> on {_e(cal.get('samples', '?'))} "
            f"samples{' of <strong>synthetic</strong> data' if cal.get('synthetic') else ''}, "
            f"{_e(cal.get('placement', '?'))} placement, {_e(cal.get('weight_bits', '?'))}-bit weights; "
            f"{len(cal.get('tensors') or [])} activation tensors, {len(cal.get('quantized_nodes') or [])} quantized nodes"
            f"{', excluded: ' + _e(', '.join(cal.get('excluded_nodes') or [])) if cal.get('excluded_nodes') else ''}.</p>"
        )
        if panels and plots is not None:
            body += _figure(
                plots.clipping(panels),
                "Histogram of |activation| on the calibration data for the tensors whose threshold clips the largest share of values; values beyond the dashed threshold saturate in INT8.",
            )
        elif cal.get("tensors"):
            body += "<p class='note'>This calibration report has no histograms (made before they were recorded); recalibrate to see them.</p>"
        worst = sorted(cal.get("tensors") or [], key=lambda t: -(t.get("clipped") or 0.0))[:10]
        if worst:
            body += _table(
                ["tensor", "dtype", "max |x|", "threshold", "scale", "clipped"],
                [
                    [
                        _e(t.get("name")),
                        _e(recorded_type(t, cal)),
                        _num(t.get("amax"), ".4g"),
                        _num(t.get("threshold"), ".4g"),
                        _num(t.get("scale"), ".4g"),
                        _num((t.get("clipped") or 0.0) * 100, ".3f") + " %",
                    ]
                    for t in worst
                ],
                text_cols=2,
                caption="Worst-clipped tensors",
                wrap=(0,),
            )
    for s in layers:
        if plots is not None:
            body += _figure(
                plots.per_layer(s),
                "Error of every tensor both graphs share, in graph order; where the error first crosses the tolerance is where to look.",
            )
        if s.first_exceeding is not None:
            body += f"<p>First tensor over tolerance ({_e(s.precision)}): <code>{_e(s.tensors[s.first_exceeding])}</code>.</p>"
    return Section("int8", "INT8", body)


def _budgets(run: RunData) -> Section | None:
    views = d.budget_views(run)
    if not views:
        return None
    body = ""
    for v in views:
        cls, word = ("pass", "met") if v.outcome_met else ("fail", "not met")
        built = f", {_e(v.precision)} not built" if v.not_built else ""
        body += f"<h3>{_e(v.precision)}: budget {_e(v.budget)} <span class='{cls}'>{word}</span>{built}</h3>"
        if v.not_built:  # the run's verdict, as its summary says it
            body += f"<p>Not built: {_e(v.not_built)}.</p>"
        if v.cost:
            body += f"<p>Search cost: {_e(v.cost)}.</p>"
        rows = []
        for i, kept, measured, met in v.steps:
            reached = ", ".join(f"{k} {_step_figure(k, val, v.min_cosine)}" for k, val in measured.items())
            rows.append(
                [
                    str(i),
                    _e(
                        f"{len(kept)}: "
                        + (", ".join(kept[:8]) + (" …" if len(kept) > 8 else "") if kept else "none")
                    ),
                    _e(reached),
                    "yes" if met else "no",
                ]
            )
        body += _table(
            ["step", f"layers kept in {v.higher}", "reached", "met"], rows, text_cols=3, wrap=(1, 2)
        )
    return Section("budget", "Accuracy-budget search", body)


def _step_figure(name: str, value: float | None, bound: float | None) -> str:
    """A budget step's figure: a cosine with the digits that tell it from the budget's bound and
    from 1 (6 significant digits read 0.99999962 as "1", met or not), the others to 6 digits."""
    return cosine_figure(value, bound, "–") if name == "cosine" else _num(value, ".6g")


def _power(run: RunData, plots: Any) -> Section | None:
    traces = d.power_traces(run)
    rows = []
    keys = d.row_batches(run)  # the batch each precision's trade-off row shows
    for i, p in enumerate(run.precisions):
        energy = d.at_batch(p.profile, keys[i]).get("energy") or {}
        if energy:
            rails = ", ".join(f"{k} {v:.2f} W" for k, v in (energy.get("rails") or {}).items())
            rows.append(
                [
                    _e(p.precision),
                    _e(energy.get("source") or "–"),
                    _num(energy.get("avg_power_w"), ".3g"),
                    _num(energy.get("energy_per_inference_mj"), ".3g"),
                    _e(rails or energy.get("reason") or "–"),
                ]
            )
    if not rows:
        return None
    body = _table(
        ["precision", "source", "avg W", "mJ/inference", "rails (or why not measured)"],
        rows,
        text_cols=2,
        wrap=(4,),
        caption="Each precision at the batch size its trade-off row shows.",
    )
    if traces and plots is not None:
        body += _figure(plots.power(traces), "Power per rail during the benchmark.")
    return Section("power", "Power and energy", body)


# ---------------------------------------------------------------- page


def build_sections(run: RunData, plots: Any) -> list[Section]:
    rows = d.tradeoff_rows(run)
    found = [
        _headline(run, rows),
        _tradeoff(
            rows,
            plots.tradeoff_scatter if plots is not None else None,
            d.where_measured(run),
            d.min_cosine(run.gates),
        ),
        _latency(run, plots),
        _fp16(run, plots),
        _int8(run, plots),
        _budgets(run),
        _power(run, plots),
    ]
    return [s for s in found if s is not None]


def render_html(run: RunData, sections: list[Section], title: str) -> str:
    nav = (
        "<nav aria-label='sections'><ol>"
        + "".join(f"<li><a href='#{s.key}'>{_e(s.title)}</a></li>" for s in sections)
        + "</ol></nav>"
    )
    notes = "".join(f"<p class='note'>{_e(n)}</p>" for n in run.notes)
    body = "".join(
        f"<section id='{s.key}' aria-labelledby='{s.key}-h'><h2 id='{s.key}-h'>{_e(s.title)}</h2>{s.body}</section>"
        for s in sections
    )
    made = dt.datetime.now(dt.timezone.utc).replace(microsecond=0).isoformat()
    header = f"edgedeploy report · {made}{' · run made ' + _e(run.created) if run.created else ''}"
    return page(title, header, f"{nav}{notes}<main>{body}</main>", wide=any(s.wide for s in sections))


def page(title: str, header: str, body: str, wide: bool = False) -> str:
    """A whole self-contained page: styles inline, a policy that forbids loading anything. ``wide``:
    84rem instead of 60rem, for tables that do not fit in 60rem (their charts stay as wide as before)."""
    body_tag = "<body class='wide'>" if wide else "<body>"
    return (
        "<!DOCTYPE html>\n<html lang='en'><head><meta charset='utf-8'>"
        "<meta name='viewport' content='width=device-width, initial-scale=1'>"
        "<meta http-equiv='Content-Security-Policy' content=\"default-src 'none'; style-src 'unsafe-inline'; img-src data:\">"
        f"<title>{_e(title)}</title><style>{CSS}</style></head>{body_tag}"
        f"<header><p class='muted'>{header}</p><h1>{_e(title)}</h1></header>{body}</body></html>\n"
    )


def render_markdown(run: RunData, html_name: str | None = "report.html") -> str:
    """The summary for $GITHUB_STEP_SUMMARY or a PR comment: headline, gates, trade-off table."""
    rows = d.tradeoff_rows(run)
    best, why = d.recommended(run, rows)
    where = d.where_measured(run)
    lines = [
        f"## edgedeploy: {md_text(run.model or 'model')} on {md_text(run.target or 'an unrecorded target')}"
        + (f" ({md_text(where)})" if where else ""),
        "",
    ]
    results = d.gate_results(rows)
    failed = results["failed"]
    verdict = (
        "all accuracy gates passed"
        if results["passed"]
        else (
            f"**accuracy gate FAILED: {md_text(', '.join(failed))}**" if failed else "no accuracy comparison"
        )
    )
    if run.not_built:  # a missed accuracy budget: that precision has no model, so no gate passed for it
        missed = f"**not built (accuracy budget missed): {md_text(', '.join(run.not_built))}**"
        verdict = missed if not failed else f"{verdict}; {missed}"
    lines.append(f"- {verdict} (gates: {md_text(d.gate_text(run.gates))})")
    lines.append(f"- recommended precision: **{md_text(best or '-')}** ({md_text(why)})")
    for precision, figures in d.slower_precisions(run).items():
        lines.append(f"- **{md_text(precision)} ran slower than fp32** ({md_text(figures)})")
    backends = sorted({r.backend for r in rows})
    if backends:
        lines.append(f"- backend: {md_text(', '.join(backends))}")
    tools = ", ".join(f"{k} {v}" for k, v in run.tools.items() if v)
    if tools:
        lines.append(f"- tools: {md_text(tools)}")
    if rows:
        lines += [
            "",
            "| precision | size | p50 ms | p99 ms | inf/s | speed-up | energy mJ/inf | min cosine | norm ratio "
            "| argmax agr. | gate |",
            "|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|---|",
        ]
        for r in rows:
            gate = "not compared" if r.passed is None else ("pass" if r.passed else "**FAIL**")
            lines.append(
                f"| {md_text(r.precision)} | {_size(r.size_bytes)} | {_num(r.p50_ms, '.4g', '-')} | {_num(r.p99_ms, '.4g', '-')} "
                f"| {_num(r.throughput_ips, '.4g', '-')} | {_num(r.speedup, '.2f', '-')} | {_num(r.energy_mj, '.3g', '-')} "
                f"| {cosine_figure(r.cosine, d.min_cosine(run.gates))} | {_num(r.norm_ratio, '.6f', '-')} | {_num(r.top1, '.4f', '-')} "
                f"| {gate} |"
            )
        if notes := d.batch_notes(rows):
            lines += ["", md_text(" ".join(notes))]
    extra = []
    if run.ranges:
        s = run.ranges.get("summary") or {}
        kept = f", {len(d.fp32_nodes(run))} node(s) kept in fp32" if run.plan else ""
        extra.append(f"FP16: {md_text(s.get('tensors_at_risk', 0))} tensor(s) at risk{kept}")
    if run.calibration:
        worst = max(run.calibration.get("tensors") or [{}], key=lambda t: t.get("clipped") or 0.0)
        if worst.get("name"):
            extra.append(
                f"INT8: worst-clipped tensor {md_code(worst['name'])} ({(worst.get('clipped') or 0.0):.3%} clipped)"
            )
    for v in d.budget_views(run):
        extra.append(
            f"accuracy budget {md_text(v.precision)} {md_code(v.budget)}: {'met' if v.outcome_met else 'NOT met'}"
            # the reason's first clause: the rest (what to do, the steps file) is in report.html
            + (
                f" ({md_text(v.precision)} not built: {md_text(v.not_built.split('; ')[0])})"
                if v.not_built
                else ""
            )
            + f", {len(v.steps)} step(s)"
            + (f" ({md_text(v.cost)})" if v.cost else "")
        )
    if extra:  # each escaped where it was made: the code spans' text is literal
        lines += [""] + [f"- {x}" for x in extra]
    if html_name:
        lines += ["", f"Charts (trade-off, latency, FP16 ranges, INT8 clipping) are in `{html_name}`."]
    return "\n".join(lines) + "\n"
