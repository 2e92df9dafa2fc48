"""The report stage: one self-contained ``report.html`` with charts, and ``report.md`` (the summary
for ``$GITHUB_STEP_SUMMARY`` or a PR comment), from a run workdir, a bundle or ``--json`` files.

Layout: :mod:`.load` reads RUN into a :class:`RunData`; :mod:`.data` turns it into what each chart
and table shows (pure functions, unit-tested); :mod:`.plots` draws with matplotlib (the
``edgedeploy[report]`` extra; the choice is explained there); :mod:`.render` writes HTML and
Markdown. Both files are written atomically into the output folder and nowhere else.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edgedeploy.errors import InputError
from edgedeploy.fileio import atomic_write_text, written_together
from edgedeploy.stages.report.load import RunData, from_manifest, load_run, load_workdir

HTML_NAME = "report.html"
MARKDOWN_NAME = "report.md"

__all__ = [
    "HTML_NAME",
    "MARKDOWN_NAME",
    "ReportFiles",
    "RunData",
    "from_manifest",
    "load_run",
    "load_workdir",
    "plotting_missing",
    "write_bundle_report",
    "write_report",
]


@dataclass
class ReportFiles:
    html: Path
    markdown: Path
    size_bytes: int  # of report.html
    sections: list[str] = field(default_factory=list)
    # the table's rows, recommended precision and gate results the page shows (data.report_figures)
    figures: dict[str, Any] = field(default_factory=dict)


def write_report(run: RunData, out_dir: str | os.PathLike[str], title: str | None = None) -> ReportFiles:
    """Write ``report.html`` and ``report.md`` for ``run`` into ``out_dir``.

    Raises InputError (exit 2) naming the install line when matplotlib is missing, before any write.
    """
    from edgedeploy.stages.report import plots
    from edgedeploy.stages.report.data import report_figures, where_measured
    from edgedeploy.stages.report.render import build_sections, render_html, render_markdown

    plots.require_matplotlib()
    sections = build_sections(run, plots)
    where = where_measured(run)  # a GPU target measured on this CPU: said as `run`'s table says it
    title = title or f"{run.model or 'model'} on {run.target or 'unknown target'}" + (
        f" ({where})" if where else ""
    )
    page = render_html(run, sections, title)
    summary = render_markdown(run, HTML_NAME)
    out = Path(out_dir)
    made = [f for f in (out, *out.parents) if not f.exists()]  # the folders the writes make, innermost first
    try:  # a full disk at either file leaves neither, nor a folder made for them (build's artifacts do so)
        with written_together(out / HTML_NAME, out / MARKDOWN_NAME):
            html_path = atomic_write_text(out / HTML_NAME, page)
            md_path = atomic_write_text(out / MARKDOWN_NAME, summary)
    except BaseException:
        for folder in made:
            try:
                folder.rmdir()
            except OSError:  # not empty (another file went there meanwhile), or gone: leave the rest
                break
        raise
    return ReportFiles(html_path, md_path, len(page.encode()), [s.key for s in sections], report_figures(run))


def write_bundle_report(root: Path, manifest: dict[str, object]) -> dict[str, str]:
    """The bundle stage's report hook: the report of the bundle being made, written into it."""
    write_report(from_manifest(dict(manifest), root, source="this bundle"), root)
    return {"html": HTML_NAME, "markdown": MARKDOWN_NAME}


def plotting_missing() -> str | None:
    """Why reports cannot be drawn here (the install line), or None when they can.

    ``run``, ``demo`` and ``bundle`` write a report by default and only warn with this line when
    the extra is missing; ``edgedeploy report`` fails with it (exit 2).
    """
    from edgedeploy.stages.report import plots

    try:
        plots.require_matplotlib()
    except InputError as exc:
        return str(exc)
    return None
