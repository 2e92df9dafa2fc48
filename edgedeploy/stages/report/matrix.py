"""The matrix report: ``matrix.html`` and ``matrix.md`` for a whole ``edgedeploy matrix`` run.

One page for every (model, target, precision) cell: a headline (how many cells ran, failed, were
skipped or came from the cache, and which gates failed), then per model a table of its cells with
size, latency, speed-up over fp32 on the same target, accuracy, gate and the one-line reason of
each failed or skipped cell, a link from each cell that ran to its (model, target) bundle's own ``report.html``, and a
chart of p50 latency per target and precision. It takes plain rows (the cells as the matrix's
JSON writes them), so it knows nothing of executors or the pipeline. The page shares the single
report's styles and rules (no script, nothing loaded from anywhere); the charts come from
:mod:`.plots` (matplotlib, the ``edgedeploy[report]`` extra).
"""

from __future__ import annotations

import datetime as dt
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import quote

from edgedeploy.fileio import atomic_write_text
from edgedeploy.stages.report import ReportFiles
from edgedeploy.stages.report.data import MatrixBar
from edgedeploy.stages.report.load import MATRIX_HTML, MATRIX_MARKDOWN, PRECISION_ORDER
from edgedeploy.stages.report.render import _e, _num, _size, _table, page
from edgedeploy.targets import MEASURED_OFF_TARGET, measured_off_target
from edgedeploy.ui import cosine_figure, md_text

HTML_NAME = MATRIX_HTML
MARKDOWN_NAME = MATRIX_MARKDOWN


def speedups(cells: Sequence[Mapping[str, Any]]) -> dict[tuple[str, str, str], float]:
    """Each cell's speed-up over the fp32 cell of its (model, target), as the matrix placed it
    (``MatrixResult``: both at one batch size, ``batch_size``)."""
    return {
        (c["model"], c["target"], c["precision"]): float(c["speedup"])
        for c in cells
        if c.get("speedup") is not None
    }


def batch_notes(cells: Sequence[Mapping[str, Any]], speedups: bool = True) -> list[str]:
    """What the pages say of the batch sizes the p50 and speed-ups of ``cells`` (one model's, or
    all) are at: one batch for all, else each profiled cell's; and why a profiled cell has no
    speed-up. ``speedups=False``: the p50's batch sizes only, for the command's table, which shows
    no speed-up."""
    profiled = [c for c in cells if c.get("latency_ms") is not None and c.get("batch_size") is not None]
    notes = []
    if len({c["batch_size"] for c in profiled}) == 1:
        notes.append(f"p50 at batch {profiled[0]['batch_size']}.")
    elif profiled:
        each = ", ".join(
            f"{c['model']}/{c['target']}/{c['precision']} at batch {c['batch_size']}" for c in profiled
        )
        same = "; a speed-up compares with fp32 at the same batch" if speedups else ""
        notes.append(f"p50 not all at one batch size: {each}{same}.")
    if not speedups:
        return notes
    return notes + [
        f"{c['model']}/{c['target']}/{c['precision']}: no speed-up: {c['no_speedup']}."
        for c in cells
        if c.get("no_speedup")
    ]


def _status(cell: Mapping[str, Any]) -> str:
    if cell.get("cached") and cell["status"] == "ok":
        return "ok (cached)"
    return str(cell["status"])


def headline(cells: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Counts by status and the cells that failed or missed a gate."""
    count = {s: sum(c["status"] == s for c in cells) for s in ("ok", "failed", "skipped")}
    return {
        **count,
        "cells": len(cells),
        "cached": sum(bool(c.get("cached")) for c in cells),
        "failed_cells": [
            f"{c['model']}/{c['target']}/{c['precision']}"
            for c in cells
            if c["status"] == "failed" or c.get("gate") == "FAIL"
        ],
    }


def latency_bars(cells: Sequence[Mapping[str, Any]], model: str) -> list[MatrixBar]:
    """The profiled cells of one model, as bars for the latency chart (targets in order of first use)."""
    return [
        MatrixBar(c["target"], c["precision"], float(c["latency_ms"]), c.get("min_cosine"))
        for c in sorted(
            (c for c in cells if c["model"] == model and c.get("latency_ms")),
            key=lambda c: PRECISION_ORDER.get(c["precision"], len(PRECISION_ORDER)),
        )
    ]


def off_target_note(cells: Sequence[Mapping[str, Any]]) -> str | None:
    """What the pages and the command's table say when GPU targets' cells were profiled with ONNX
    Runtime on this machine's CPU (as a bundle's report says it): their p50 and speed-up are not the
    device's. None when every profiled cell was measured on its target."""
    targets = dict.fromkeys(
        str(c["target"])
        for c in cells
        if c.get("latency_ms") is not None and measured_off_target(c["target"], [str(c.get("backend") or "")])
    )
    return f"p50 and speed-up of {', '.join(targets)}: {MEASURED_OFF_TARGET}" if targets else None


def _link(bundles: Mapping[str, str], key: str, out_dir: Path) -> str:
    folder = bundles.get(key)
    if not folder or not (Path(folder) / "report.html").is_file():
        return "–"
    href = Path(os.path.relpath(Path(folder) / "report.html", out_dir)).as_posix()
    # a URL, not a path: a model named "v2#1?x" (or with a %) cut the link at its # or ?
    return f"<a href='{_e(quote(href))}'>report</a>"


def _model_section(
    model: str,
    cells: Sequence[Mapping[str, Any]],
    bundles: Mapping[str, str],
    out_dir: Path,
    ups: Mapping[tuple[str, str, str], float],
    plots: Any,
) -> str:
    rows = []
    for c in cells:
        gate = c.get("gate") or ""
        gate_css = {"pass": "pass", "FAIL": "fail"}.get(gate, "")
        status_css = {"ok": "pass", "failed": "fail"}.get(c["status"], "")
        rows.append(
            [
                _e(c["target"]),
                _e(c["precision"]),
                f"<span class='{status_css}'>{_e(_status(c))}</span>",
                _e(c.get("backend") or "–"),
                _size(c.get("size_bytes")),
                _num(c.get("latency_ms"), ".4g"),
                _num(ups.get((model, c["target"], c["precision"])), ".2f"),
                cosine_figure(c.get("min_cosine"), c.get("min_cosine_gate"), "–"),
                _num(c.get("top1"), ".4f"),
                f"<span class='{gate_css}'>{_e(gate)}</span>" if gate_css else "–",
                _link(bundles, f"{model}/{c['target']}", out_dir) if c["status"] == "ok" else "–",
                _e(c.get("reason") or ""),
            ]
        )
    body = _table(
        [
            "target",
            "precision",
            "status",
            "backend",
            "size",
            "p50 ms",
            "speed-up",
            "min cosine",
            "argmax agr.",
            "gate",
            "bundle",
            "reason",
        ],
        rows,
        text_cols=4,
        caption=" ".join(
            [
                "speed-up: the same target's fp32 p50 over this p50, at the smallest batch size both were "
                "profiled at.",
                *batch_notes(cells),
            ]
        ),
        wrap=(11,),
    )
    bars = latency_bars(cells, model)
    if plots is not None and bars:
        svg = plots.matrix_latency(model, bars)
        body += f"<figure>{svg}<figcaption>p50 latency per target and precision; labels give the min cosine</figcaption></figure>"
    return body


def render_matrix_html(
    cells: Sequence[Mapping[str, Any]],
    bundles: Mapping[str, str],
    out_dir: Path,
    meta: Mapping[str, Any],
    plots: Any,
) -> str:
    head = headline(cells)
    ups = speedups(cells)
    models = list(dict.fromkeys(c["model"] for c in cells))
    failed = head["failed_cells"]
    summary = (
        f"<dl class='headline'><dt>cells</dt><dd>{head['cells']}: {head['ok']} ok ({head['cached']} from the cache), "
        f"{head['failed']} failed, {head['skipped']} skipped</dd>"
        f"<dt>failed or gate missed</dt><dd class='{'fail' if failed else 'pass'}'>"
        f"{_e(', '.join(failed)) if failed else 'none'}</dd>"
        f"<dt>executor</dt><dd>{_e(meta.get('executor', '–'))}, {_num(meta.get('wall_seconds'), '.1f')} s wall time, "
        f"{_e(meta.get('tasks_submitted', 0))} task(s) run</dd>"
        + (f"<dt>latencies</dt><dd>{_e(off)}</dd>" if (off := off_target_note(cells)) else "")
        + "".join(f"<dt>note</dt><dd>{_e(note)}</dd>" for note in meta.get("notes") or [])
        + "</dl>"
    )
    sections = "".join(
        f"<section id='m{i}' aria-labelledby='m{i}-h'><h2 id='m{i}-h'>{_e(model)}</h2>"
        + _model_section(model, [c for c in cells if c["model"] == model], bundles, out_dir, ups, plots)
        + "</section>"
        for i, model in enumerate(models)
    )
    nav = (
        "<nav aria-label='models'><ol>"
        + "".join(f"<li><a href='#m{i}'>{_e(m)}</a></li>" for i, m in enumerate(models))
        + "</ol></nav>"
    )
    made = dt.datetime.now(dt.timezone.utc).replace(microsecond=0).isoformat()
    title = f"matrix: {len(models)} model(s) × {len({c['target'] for c in cells})} target(s)"
    # 12 columns with a reason that wraps: at 60rem the reason lay past the page, one letter a line
    return page(
        title, f"edgedeploy matrix report · {made}", f"{summary}{nav}<main>{sections}</main>", wide=True
    )


def render_matrix_markdown(
    cells: Sequence[Mapping[str, Any]], html_name: str | None = HTML_NAME, notes: Sequence[str] = ()
) -> str:
    """The summary for $GITHUB_STEP_SUMMARY: counts, failures, notes (a precision slower than fp32
    on its target, as the command warned), and one row per cell."""
    head = headline(cells)
    ups = speedups(cells)
    lines = [
        f"## edgedeploy matrix: {head['cells']} cells",
        "",
        f"- {head['ok']} ok ({head['cached']} from the cache), {head['failed']} failed, {head['skipped']} skipped",
        "- failed or gate missed: "
        + (", ".join(f"**{md_text(f)}**" for f in head["failed_cells"]) if head["failed_cells"] else "none"),
        *(f"- note: {md_text(note)}" for note in notes),
        *([f"- {md_text(off)}"] if (off := off_target_note(cells)) else []),
        "",
        "| model | target | precision | status | size | p50 ms | speed-up | min cosine | gate | reason |",
        "|---|---|---|---|--:|--:|--:|--:|---|---|",
    ]
    for c in cells:
        lines.append(
            f"| {md_text(c['model'])} | {md_text(c['target'])} | {md_text(c['precision'])} | {md_text(_status(c))} "
            f"| {_size(c.get('size_bytes'))} | {_num(c.get('latency_ms'), '.4g', '-')} "
            f"| {_num(ups.get((c['model'], c['target'], c['precision'])), '.2f', '-')} "
            f"| {cosine_figure(c.get('min_cosine'), c.get('min_cosine_gate'))} | {md_text(c.get('gate') or '-')} | {md_text(c.get('reason') or '')} |"
        )
    if notes_below := batch_notes(cells):
        lines += ["", md_text(" ".join(notes_below))]
    if html_name:
        lines += [
            "",
            f"Per-model tables, latency charts and links to each bundle's report are in `{html_name}`.",
        ]
    return "\n".join(lines) + "\n"


def write_matrix_report(
    cells: Sequence[Mapping[str, Any]],
    bundles: Mapping[str, str],
    out_dir: str | os.PathLike[str],
    meta: Mapping[str, Any],
) -> ReportFiles:
    """Write ``matrix.html`` and ``matrix.md`` into ``out_dir`` (atomically, nothing else).

    Raises InputError naming the install line when matplotlib is missing, before any write.
    """
    from edgedeploy.stages.report import plots

    plots.require_matplotlib()
    out = Path(out_dir)
    page = render_matrix_html(cells, bundles, out, meta, plots)
    summary = render_matrix_markdown(cells, notes=meta.get("notes") or ())
    out.mkdir(parents=True, exist_ok=True)
    html_path = atomic_write_text(out / HTML_NAME, page)
    md_path = atomic_write_text(out / MARKDOWN_NAME, summary)
    models = list(dict.fromkeys(str(c["model"]) for c in cells))
    return ReportFiles(html_path, md_path, len(page.encode()), models)
