"""``edgedeploy demo``: train a small CNN and run the whole pipeline on it; one table per precision."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from edgedeploy.cli.common import JsonOutput, TargetName, fmt, make_ui, out, write_json
from edgedeploy.errors import InputError
from edgedeploy.interrupts import deferred
from edgedeploy.ui import cosine_figure, human_size


def demo_command(
    out_dir: Annotated[
        Path, typer.Option("--out", "-o", "--output", help="Working folder for the demo.")
    ] = Path("edgedeploy-demo"),
    duration: Annotated[float, typer.Option(help="Profiling seconds per precision.")] = 2.0,
    target: TargetName = "x86-64-cpu",
    json_path: JsonOutput = None,
) -> None:
    """Train a small CNN on scikit-learn's digits and run the whole pipeline on it for every precision.

    Example: edgedeploy demo --out /tmp/demo
    """
    # as profile checks it, before any work: the demo trained its model and wrote its data first
    if not (math.isfinite(duration) and duration > 0):
        raise InputError(f"--duration must be a number of seconds > 0, got {duration:g}")
    with deferred():  # heavy imports are not interrupt-safe
        from edgedeploy.pipeline.demo import run_demo

    ui = make_ui()
    result = run_demo(out_dir, ui, target=target, duration_s=duration)
    fp32_size = next((r.size_bytes for r in result.rows if r.precision == "fp32"), None)
    table = Table(
        title=f"digits CNN on {target} (ONNX Runtime, CPU, batch 1); "
        f"torch fp32 held-out accuracy {result.fp32_torch_accuracy:.4f}"
    )
    for col in (
        "precision",
        "size",
        "vs fp32",
        "p50 ms",
        "p99 ms",
        "inf/s",
        "cosine",
        "top-1 agree",
        "accuracy",
        "energy mJ",
        "gate",
        "note",
    ):
        table.add_column(col, justify="left" if col in ("precision", "note", "gate") else "right")
    for r in result.rows:
        ratio = f"{r.size_bytes / fp32_size:.2f}x" if fp32_size else "-"
        table.add_row(
            r.precision,
            human_size(r.size_bytes),
            ratio,
            fmt(r.p50_ms),
            fmt(r.p99_ms),
            fmt(r.throughput_ips, ".0f"),
            cosine_figure(r.cosine),
            fmt(r.top1_agreement, ".4f"),
            f"{r.task_accuracy:.4f}",
            fmt(r.energy_mj, ".3f") if r.energy_mj is not None else "n/a",
            "pass" if r.passed else "FAIL",
            r.note,
        )
    out.print(table)
    if result.bundle:
        out.print(f"bundle: {result.bundle['directory']} and {result.bundle['archive']}")
    out.print(f"demo finished in {result.seconds:.1f} s")
    if result.report:  # last, so `make demo` ends with the page to open
        out.print(f"report: {result.report}")
    write_json(
        json_path,
        {
            "rows": result.rows,
            "seconds": result.seconds,
            "fp32_torch_accuracy": result.fp32_torch_accuracy,
            "bundle": result.bundle,
            "report": result.report,
        },
    )


def register(app: typer.Typer) -> None:
    app.command("demo")(demo_command)
