"""``edgedeploy targets``: the boards and GPUs edgedeploy knows (a table), or one target's profile
(``targets NAME``, or ``targets show NAME``)."""

from __future__ import annotations

from typing import Annotated, Any

import typer
from rich.table import Table
from typer.core import TyperGroup

from edgedeploy.cli.common import JsonOutput, out, write_json
from edgedeploy.errors import InputError
from edgedeploy.interrupts import deferred

# ctx.meta key: the target name `targets NAME` was given (what its line about --json names)
NAMED = "edgedeploy.targets.named"


class _TargetsGroup(TyperGroup):
    """``targets NAME`` runs ``targets show NAME``: the list names the targets, and its reader types
    one after ``targets`` (it said "no such command 'jetson-thor'"). A first word that is no command
    and no option is a target name, unless another word follows one that names no target
    (``targets sho jetson-thor``: a misspelt command, said as click says it)."""

    def resolve_command(self, ctx: Any, args: list[str]) -> tuple[str | None, Any, list[str]]:
        word = args[0] if args else ""
        named = word and not word.startswith("-") and self.get_command(ctx, word) is None
        if named and (len(args) == 1 or args[1].startswith("-") or _is_target(word)):
            ctx.meta[NAMED] = word
            return "show", self.get_command(ctx, "show"), args
        return super().resolve_command(ctx, args)


def _is_target(name: str) -> bool:
    """Whether load_target knows ``name`` (any case; ``host`` too)."""
    with deferred():  # heavy imports are not interrupt-safe
        from edgedeploy.targets import load_target

    try:
        load_target(name)
    except InputError:
        return False
    return True


targets_app = typer.Typer(
    cls=_TargetsGroup,
    help="List the boards and GPUs edgedeploy knows, or show one: edgedeploy targets NAME "
    "(as edgedeploy targets show NAME).",
    no_args_is_help=False,
    invoke_without_command=True,
    subcommand_metavar="[NAME | COMMAND [ARGS]...]",
)


def list_command(
    ctx: typer.Context,
    json_path: JsonOutput = None,
) -> None:
    """List the targets. Example: edgedeploy targets; edgedeploy targets jetson-orin-nano"""
    if ctx.invoked_subcommand is not None:
        if json_path is not None:  # the list's option, given before a subcommand that has its own
            word = ctx.meta.get(NAMED, ctx.invoked_subcommand)
            raise InputError(f"--json before '{word}' is the list's: put it after")
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
    """Show one target's profile (as targets NAME does). Example: edgedeploy targets show jetson-agx-orin"""
    with deferred():  # heavy imports are not interrupt-safe
        from edgedeploy.results import dumps
        from edgedeploy.targets import load_target

    target = load_target(name, list_known=True)
    out.print(dumps(target), end="")
    write_json(json_path, target)


targets_app.callback()(list_command)
targets_app.command("show")(show_command)


def register(app: typer.Typer) -> None:
    app.add_typer(targets_app, name="targets")
