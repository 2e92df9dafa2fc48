"""``edgedeploy run``: the whole pipeline from one config file, and its summary table."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from edgedeploy.cli.common import (
    JsonOutput,
    fmt,
    json_not_an_input,
    make_ui,
    out,
    write_json,
)
from edgedeploy.errors import GateFailed
from edgedeploy.interrupts import deferred
from edgedeploy.ui import cosine_figure, human_size


def run_command(
    config: Annotated[Path, typer.Argument(help="The pipeline config (edgedeploy.toml).")],
    json_path: JsonOutput = None,
) -> None:
    """Run the whole pipeline from one config file; stages whose inputs did not change are skipped.

    Example: edgedeploy run edgedeploy.toml
    """
    with deferred():  # heavy imports are not interrupt-safe
        from edgedeploy.config import load_config
        from edgedeploy.pipeline import run_pipeline
        from edgedeploy.pipeline.run import input_files, not_the_runs

    ui = make_ui()
    cfg = load_config(config)
    json_not_an_input(json_path, input_files(cfg))  # and a file that is not JSON
    # the run's record, bundle, stage outputs (NAME.*) and report, rewritten or not (cached)
    not_the_runs(json_path, cfg, "--json")
    result = run_pipeline(cfg, ui)
    table = Table(title=f"{result.model_name} on {result.target}{_where_measured(result)}")
    for col in ("precision", "backend", "size", "p50 ms", "p99 ms", "inf/s", "min cosine", "argmax agr."):
        table.add_column(col, justify="left" if col in ("precision", "backend") else "right")
    table.add_column("gate", justify="right")
    for p in result.precisions:
        b1: dict[str, Any] = next(iter(((p.profile or {}).get("batch_sizes") or {}).values()), {})
        outs = list(((p.compare or {}).get("outputs") or {}).values())
        cos = min((o.get("cosine") or 0.0 for o in outs), default=None)
        top1 = next((o.get("top1_agreement") for o in outs if o.get("top1_agreement") is not None), None)
        table.add_row(
            p.precision,
            p.backend,
            human_size(p.model.stat().st_size),
            fmt(b1.get("median_ms")),
            fmt(b1.get("p99_ms")),
            fmt(b1.get("throughput_ips"), ".1f"),
            cosine_figure(cos, result.gates.get("min_cosine")),
            fmt(top1, ".4f"),
            "pass" if (p.compare or {}).get("passed") else "FAIL",
        )
    out.print(table)
    for precision, missed in result.not_built.items():
        out.print(f"{precision}: not built: {missed['reason']}")
    if not result.stages_run:
        out.print("nothing changed: every stage was up to date")
    if result.report:
        out.print(f"report: {result.report}")
    write_json(json_path, result)
    if not result.gates_passed:
        failed = [
            p.precision for p in result.precisions if p.compare is not None and not p.compare.get("passed")
        ]
        raise GateFailed(
            "; ".join(
                ([f"accuracy gate failed for {', '.join(failed)}"] if failed else [])
                + ([f"accuracy budget missed for {', '.join(result.not_built)}"] if result.not_built else [])
            )
        )


def _where_measured(result: Any) -> str:
    """For a GPU target built with ONNX Runtime here: the figures are this machine's, not the device's."""
    with deferred():  # heavy imports are not interrupt-safe
        from edgedeploy.targets import MEASURED_OFF_TARGET, measured_off_target

    if measured_off_target(result.target, (p.backend for p in result.precisions)):
        return f" ({MEASURED_OFF_TARGET})"
    return ""


def register(app: typer.Typer) -> None:
    app.command("run")(run_command)
