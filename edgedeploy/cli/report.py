"""``edgedeploy report``: report.html (charts) and report.md (summary) of a run, bundle or --json files."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from edgedeploy.cli.common import JsonOutput, out, write_json
from edgedeploy.fileio import not_written
from edgedeploy.interrupts import deferred

DEFAULT_OUTPUT = Path("edgedeploy-report")


def report_command(
    run: Annotated[
        list[Path],
        typer.Argument(
            help="A run workdir, a bundle (folder or .tar.gz), or JSON files written with --json "
            "by build, compare, profile, analyze, calibrate, run or bundle."
        ),
    ],
    output: Annotated[
        Path, typer.Option("-o", "--output", help="Folder for report.html and report.md.")
    ] = DEFAULT_OUTPUT,
    json_path: JsonOutput = None,
) -> None:
    """Write one self-contained HTML page with charts, and its Markdown summary.

    Example: edgedeploy report runs/resnet -o out/ ; cat out/report.md >> "$GITHUB_STEP_SUMMARY"
    """
    with deferred():  # heavy imports are not interrupt-safe
        from edgedeploy.stages.report import HTML_NAME, MARKDOWN_NAME, load_run, write_report

    not_written(json_path, files=[output / HTML_NAME, output / MARKDOWN_NAME])
    files = write_report(load_run(run), output)
    out.print(str(files.html.resolve()))
    write_json(
        json_path,
        {
            "html": files.html,
            "markdown": files.markdown,
            "size_bytes": files.size_bytes,
            "sections": files.sections,
            **files.figures,
        },
    )


def register(app: typer.Typer) -> None:
    app.command("report")(report_command)
