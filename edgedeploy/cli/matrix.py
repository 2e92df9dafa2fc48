"""``edgedeploy matrix CONFIG``: every model x target x precision cell, on this machine or a Ray cluster.

Parses, checks the whole matrix (exit 2 before any work), runs it with the chosen executor
(edgedeploy.matrix), prints one row per cell and writes JSON. Exit 1 when a cell failed or a
gate was missed; skipped cells (a board no node has) do not fail the run.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from edgedeploy.cli.common import (
    JsonOutput,
    fmt,
    json_not_an_input,
    make_ui,
    out,
    write_json,
)
from edgedeploy.errors import GateFailed, InputError
from edgedeploy.fileio import not_written
from edgedeploy.interrupts import deferred
from edgedeploy.ui import cosine_figure, human_size


def matrix_command(
    config: Annotated[
        Path, typer.Argument(help="A config with a \\[matrix] section (models, targets, precisions).")
    ],
    executor: Annotated[
        str, typer.Option("--executor", help="local (a process pool here) or ray (a cluster).")
    ] = "local",
    address: Annotated[
        str | None,
        typer.Option(
            "--address",
            help="Ray cluster: HOST:PORT of the head, auto, or local (a Ray inside this command: no boards).",
        ),
    ] = None,
    jobs: Annotated[
        int, typer.Option("--jobs", help="local: worker processes (default: CPUs, at most 4).")
    ] = 0,
    json_path: JsonOutput = None,
) -> None:
    """Build, compare and profile every (model, target, precision) cell; one bundle per (model, target).

    Cells already built (here or on any node) are taken from the cache; with --executor ray each
    board's cells run on a node started with --resources '{"target:NAME": 1}'.

    Example: edgedeploy matrix matrix.toml --executor ray --address auto
    """
    with deferred():  # heavy imports are not interrupt-safe
        from rich.table import Table

        from edgedeploy.pipeline.executors import make_executor
        from edgedeploy.pipeline.matrix import run_matrix
        from edgedeploy.pipeline.matrix_config import load_matrix_config
        from edgedeploy.pipeline.run import input_files
        from edgedeploy.stages.report.matrix import HTML_NAME, MARKDOWN_NAME, batch_notes, off_target_note

    if jobs < 0:
        raise InputError(f"--jobs must be >= 0 (0: as many as CPUs, at most 4), got {jobs}")
    ui = make_ui()
    matrix = load_matrix_config(config)  # every cell checked before anything starts
    json_not_an_input(json_path, [p for cfg in matrix.models.values() for p in input_files(cfg)])
    # its report, and what it writes in the bundles' folder (the bundles, their archives, a failed
    # cell's kept files; not the folder: out/matrix.json beside the bundles is the user's): refused
    # before the cells
    not_written(json_path, files=[matrix.workdir / HTML_NAME, matrix.workdir / MARKDOWN_NAME])
    if json_path is not None and (written := matrix.writes_in_bundles(json_path)) is not None:
        raise InputError(f"--json {json_path} {written}: name another file")
    runner = make_executor(executor, address=address, jobs=jobs)
    try:
        result = run_matrix(matrix, runner, ui)
    finally:
        runner.close()
    table = Table(
        title=f"matrix: {len(result.cells)} cells, {result.executor} executor, {result.wall_seconds:.1f} s"
    )
    for col in (
        "model",
        "target",
        "precision",
        "status",
        "backend",
        "node",
        "size",
        "p50 ms",
        "min cosine",
        "argmax agr.",
        "gate",
        "reason",
    ):
        right = col in ("size", "p50 ms", "min cosine", "argmax agr.")
        table.add_column(col, justify="right" if right else "left")
    for c in result.cells:
        status = "cached" if c.cached else c.status
        table.add_row(
            c.model,
            c.target,
            c.precision,
            status,
            c.backend,
            c.node[:12],
            human_size(c.size_bytes),
            fmt(c.latency_ms),
            cosine_figure(c.min_cosine, c.min_cosine_gate),
            fmt(c.top1, ".4f"),
            c.gate or "-",
            c.reason,
        )
    out.print(table)
    rows = [{**c.row(), "latency_ms": c.latency_ms, "batch_size": c.batch_size} for c in result.cells]
    for note in batch_notes(rows, speedups=False):  # the batch size "p50 ms" is at, as matrix.md says
        out.print(note)
    if off := off_target_note(rows):
        out.print(off)
    for where, folder in result.bundles.items():
        out.print(f"bundle {where}: {folder}")
    if result.report:
        out.print(f"report: {result.report}")
    write_json(json_path, result)
    failed = [c for c in result.cells if c.status == "failed" or c.gate == "FAIL"]
    if failed:
        raise GateFailed(
            f"{len(failed)} of {len(result.cells)} cells failed or missed a gate: "
            + ", ".join(f"{c.model}/{c.target}/{c.precision}" for c in failed[:6])
            + (" ..." if len(failed) > 6 else "")
        )


def register(app: typer.Typer) -> None:
    app.command("matrix")(matrix_command)
