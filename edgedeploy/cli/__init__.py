"""The ``edgedeploy`` command line: one module per command, registered from one list.

Each command module parses its options, calls one stage (or the pipeline), and prints what it
owns: tables and JSON on stdout, words on stderr. Shared option types live in
:mod:`edgedeploy.cli.common`. Command modules import their stage when the command runs, so
``edgedeploy --help`` does not load ONNX Runtime, Polygraphy or torch; the command modules
themselves are imported here, so one that cannot be imported breaks the CLI loudly instead of
vanishing from ``--help``.

Errors the user can cause print one line and exit 2; failed gates exit 1; Ctrl-C exits 130,
SIGTERM 143. :mod:`edgedeploy.cli.guard` checks every command's inputs and outputs.
"""

from __future__ import annotations

import sys
from types import ModuleType
from typing import Annotated, NoReturn

import typer
from rich.markup import escape

from calibration.errors import CalibrationError
from edgedeploy import __version__
from edgedeploy.cli import (
    analyze,
    build,
    bundle,
    calibrate,
    compare,
    demo,
    doctor,
    export,
    matrix,
    profile,
    report,
    run,
    targets,
)
from edgedeploy.cli.common import err, out
from edgedeploy.cli.guard import check_argv, guard_app
from edgedeploy.errors import EdgeDeployError, user_failure
from edgedeploy.interrupts import EXIT_SIGTERM, handle_signals, terminated

app = typer.Typer(
    name="edgedeploy",
    no_args_is_help=True,
    add_completion=False,
    rich_markup_mode="rich",
    pretty_exceptions_enable=False,
    help="Take a trained network to a verified, measured deployment on Jetson boards and GPUs.\n\n"
    "Example: [bold]edgedeploy demo[/bold]",
)

# The commands, in the order `edgedeploy --help` lists them (command groups come last).
COMMANDS: tuple[ModuleType, ...] = (
    export,
    build,
    compare,
    profile,
    run,
    matrix,
    doctor,
    demo,
    calibrate,
    analyze,
    targets,
    bundle,
    report,
)
for _command in COMMANDS:
    _command.register(app)
guard_app(app)  # every command: inputs never overwritten, outputs checked before any work


@app.callback(invoke_without_command=True)
def _main(
    version: Annotated[bool, typer.Option("--version", help="Print the version and exit.")] = False,
) -> None:
    if version:
        out.print(f"edgedeploy {__version__}")
        raise typer.Exit(0)


def _fail(message: str, code: int) -> NoReturn:
    text = escape(message)
    prefix = {2: "[red]error:[/red]", 1: "[red]FAILED:[/red]"}.get(code, "[yellow]stopped:[/yellow]")
    err.print(f"{prefix} {text}", highlight=False)
    raise SystemExit(code)


INTERRUPTED = "interrupted (Ctrl-C); no file was half-written, and a rerun resumes from the finished stages"
TERMINATED = "terminated (SIGTERM); temporary files removed, and a rerun resumes from the finished stages"


def _stopped() -> tuple[str, int]:
    return (TERMINATED, EXIT_SIGTERM) if terminated() else (INTERRUPTED, 130)


def main(argv: list[str] | None = None) -> None:
    """Console-script entry: the one place where failures become one line and an exit code.

    Our errors keep their code (2 bad input, 1 failed gate); Ctrl-C exits 130 and SIGTERM 143,
    both after unwinding (temporary files removed); the machine's and libraries' failures a user
    can cause (OSError, MemoryError, ONNX Runtime, a damaged protobuf) are one line and exit 2;
    anything else is a bug and keeps its traceback.
    """
    handle_signals()
    try:
        check_argv(sys.argv[1:] if argv is None else argv)
        app(args=argv, prog_name="edgedeploy")  # click's standalone mode: usage errors exit 2
    except EdgeDeployError as exc:
        _fail(str(exc), exc.exit_code)
    except CalibrationError as exc:
        _fail(str(exc), 2)
    except KeyboardInterrupt:
        _fail(*_stopped())
    except SystemExit as exc:
        if exc.code == 130:  # click turned Ctrl-C (or our SIGTERM) into exit 130 without a word
            _fail(*_stopped())
        raise
    except Exception as exc:
        line = user_failure(exc)
        if line is None:
            raise
        _fail(line, 2)
    raise SystemExit(0)


if __name__ == "__main__":  # pragma: no cover
    main(sys.argv[1:])
