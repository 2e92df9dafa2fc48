"""``edgedeploy doctor``: what this machine has and what to install, as a table."""

from __future__ import annotations

import typer
from rich.table import Table

from edgedeploy.cli.common import JsonOutput, out, write_json
from edgedeploy.interrupts import deferred


def doctor_command(
    json_path: JsonOutput = None,
) -> None:
    """Say what this machine has (Python, ONNX stack, torch, TensorRT, GPU, Jetson) and what to install.

    Example: edgedeploy doctor
    """
    with deferred():  # heavy imports are not interrupt-safe
        from edgedeploy.pipeline.doctor import diagnose

    report = diagnose()
    table = Table(title="edgedeploy doctor")
    for col in ("component", "status", "details"):
        table.add_column(col)
    for item in report:
        table.add_row(
            item.name,
            "ok" if item.ok else ("-" if item.optional else "MISSING"),
            item.detail + (f"  [{item.hint}]" if item.hint and not item.ok else ""),
        )
    out.print(table)
    write_json(json_path, report)


def register(app: typer.Typer) -> None:
    app.command("doctor")(doctor_command)
