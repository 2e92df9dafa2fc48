"""``edgedeploy targets``: the boards and GPUs edgedeploy knows (a table), or one target's profile."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.table import Table

from edgedeploy.cli.common import JsonOutput, out, write_json
from edgedeploy.errors import InputError
from edgedeploy.interrupts import deferred

targets_app = typer.Typer(
    help="List the boards and GPUs edgedeploy knows, or show one.",
    no_args_is_help=False,
    invoke_without_command=True,
)


def list_command(
    ctx: typer.Context,
    json_path: JsonOutput = None,
) -> None:
    """List the targets. Example: edgedeploy targets; edgedeploy targets show jetson-orin-nano"""
    if ctx.invoked_subcommand is not None:
        if json_path is not None:  # the list's option, given before a subcommand that has its own
            raise InputError(f"--json before '{ctx.invoked_subcommand}' is the list's: put it after")
        return
    with deferred():  # heavy imports are not interrupt-safe
        from edgedeploy.targets import all_targets

    targets = all_targets()
    table = Table()
    for col in ("name", "kind", "arch", "CC", "DLA", "memory GB", "precisions", "TensorRT"):
        table.add_column(col)
    for t in targets:
        table.add_row(
            t.name,
            t.kind,
            t.gpu_arch,
            t.compute_capability or "-",  # a CPU target has none
            str(t.dla_cores),
            "-" if t.memory_gb is None else f"{t.memory_gb:g}",  # a CPU target names no machine
            ",".join(t.precisions),
            ",".join(t.tensorrt) or "-",
        )
    out.print(table)
    write_json(json_path, targets)


def show_command(
    name: Annotated[str, typer.Argument(help="Target name.")],
    json_path: JsonOutput = None,
) -> None:
    """Show one target's profile. Example: edgedeploy targets show jetson-agx-orin"""
    with deferred():  # heavy imports are not interrupt-safe
        from edgedeploy.results import dumps
        from edgedeploy.targets import load_target

    target = load_target(name)
    out.print(dumps(target), end="")
    write_json(json_path, target)


targets_app.callback()(list_command)
targets_app.command("show")(show_command)


def register(app: typer.Typer) -> None:
    app.add_typer(targets_app, name="targets")
