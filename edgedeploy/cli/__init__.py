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

import errno
import functools
import sys
from types import ModuleType
from typing import Annotated, Any, NoReturn

from edgedeploy import INTERRUPTED, stopped_while_starting

# A Ctrl-C while the CLI loads (a second or so, before main() handles signals) is one line too: the
# command's own start has a handler for it from the package's first line (edgedeploy/__init__.py);
# a program that imports this module and calls main() has the same handler until this module is
# loaded (every statement to the end: the imports, the commands' registration, guard_app).
_loaded = stopped_while_starting()
try:
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
    from edgedeploy.cli.common import err, logged_warnings_said, out
    from edgedeploy.cli.guard import check_argv, guard_app
    from edgedeploy.errors import EdgeDeployError, user_failure
    from edgedeploy.fileio import sweep_scratch
    from edgedeploy.interrupts import (
        EXIT_SIGTERM,
        Terminated,
        cut_short,
        handle_signals,
        release_signals,
        stop_requested,
        terminated,
    )
except BaseException:  # a missing package: the program's own SIGINT handling is back
    _loaded()
    raise

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


# The click that typer parses with: recent typer releases (0.29 here) carry their own copy
# (typer._click), older ones use click itself. Its exceptions are found through a public typer
# name, so that either kind is caught.
_click_errors: Any = sys.modules[typer.BadParameter.__module__]
_click_utils: Any = sys.modules[typer.echo.__module__]
ClickException: Any = _click_errors.ClickException
NoSuchOption: Any = _click_errors.NoSuchOption
NoArgsIsHelpError: Any = getattr(_click_errors, "NoArgsIsHelpError", ())  # click >= 8.2
ABORTS = (typer.Abort, getattr(_click_errors, "Abort", typer.Abort))  # click's, or typer 0.29's own


MESSAGE_LIMIT = 400  # a refusal is one line; a library's multi-page message is cut, not printed whole


def one_line(message: str, limit: int = MESSAGE_LIMIT) -> str:
    """``message`` on one line (its lines joined with ' / '), at most ``limit`` characters."""
    text = " / ".join(line.strip() for line in message.splitlines() if line.strip())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _fail(message: str, code: int) -> NoReturn:
    if stop_requested() and code not in (130, EXIT_SIGTERM):  # the failure came of a swallowed stop
        message, code = _stopped()
    text = escape(one_line(message))
    prefix = {2: "[red]error:[/red]", 1: "[red]FAILED:[/red]"}.get(code, "[yellow]stopped:[/yellow]")
    err.print(f"{prefix} {text}", highlight=False)
    raise SystemExit(code)


TERMINATED = (
    "terminated (SIGTERM); temporary files removed; "
    "rerun the command (run and matrix reuse the stages that finished)"
)


def _stopped() -> tuple[str, int]:
    return (TERMINATED, EXIT_SIGTERM) if terminated() else (INTERRUPTED, 130)


@functools.cache
def _click_command() -> Any:
    """The click command behind ``app``, made once: typer rebuilds it from the signatures on every
    call, which costs more than a small model's build when main() runs many times in one process."""
    return typer.main.get_command(app)


def _command_path(argv: list[str]) -> str:
    """``edgedeploy build`` for ``build --json``: the commands named at the head of ``argv``."""
    command, words = _click_command(), ["edgedeploy"]
    for arg in argv:
        sub = getattr(command, "commands", {}).get(arg)
        if sub is None:
            break
        command = sub
        words.append(arg)
    return " ".join(words)


def usage_line(exc: Any, argv: list[str]) -> str:
    """click's usage error as one line naming the command, e.g. ``edgedeploy build: no such option
    '--precison' (did you mean '--precision'?)``.

    click prints a usage block, a hint and a boxed message over five lines; the rule for bad input is
    one line, so the message is rebuilt here from the exception's fields (click's own wording is kept
    for the kinds not named below). Some errors carry no context (an option missing its value), so
    the command is read from ``argv`` then."""
    ctx = getattr(exc, "ctx", None)
    where = ctx.command_path if ctx is not None else _command_path(argv)
    hint = f"see '{where} --help'"
    if isinstance(exc, NoSuchOption):
        close = list(getattr(exc, "possibilities", None) or ())  # difflib's, best first
        if close:
            hint = f"did you mean '{close[0]}'?"
        return f"{where}: no such option '{getattr(exc, 'option_name', '?')}' ({hint})"
    text = one_line(exc.format_message()).rstrip(".")
    if text[:1].isupper() and text[1:2].islower():  # "No such command" -> "no such command"; "ONNX" stays
        text = text[0].lower() + text[1:]
    return f"{where}: {text} ({hint})"


def _run_click(argv: list[str] | None) -> None:
    """Run the click command without its standalone mode, so that its usage errors reach main().

    Outside standalone mode click returns the code of an ``Exit`` (``--help`` is 0, our
    ``typer.Exit(n)`` is n, Ctrl-C is 130) instead of exiting; command callbacks return None.
    """
    try:
        code = _click_command().main(args=argv, prog_name="edgedeploy", standalone_mode=False)
    except NoArgsIsHelpError as exc:  # the help is already printed (stdout); keep its code
        raise SystemExit(exc.exit_code) from None
    except ABORTS:  # click's EOF on a prompt
        _fail("aborted: end of input", 1)
    except OSError as exc:
        if exc.errno == errno.EPIPE:  # `edgedeploy targets | head -1`: the reader left; nothing to say
            sys.stderr = _click_utils.PacifyFlushWrapper(sys.stderr)  # type: ignore[assignment]
            sys.stdout = _click_utils.PacifyFlushWrapper(sys.stdout)  # type: ignore[assignment]
            raise SystemExit(1) from None
        raise
    if isinstance(code, int) and code != 0:
        raise SystemExit(code)


def main(argv: list[str] | None = None) -> None:
    """Console-script entry: the one place where failures become one line and an exit code.

    Our errors keep their code (2 bad input, 1 failed gate); Ctrl-C exits 130 and SIGTERM 143,
    both after unwinding (temporary files removed); the machine's and libraries' failures a user
    can cause (OSError, MemoryError, ONNX Runtime, a damaged protobuf) are one line and exit 2;
    anything else is a bug and keeps its traceback. Scratch folders that killed runs left in the
    system temp folder are removed first.
    """
    try:
        try:
            handle_signals()
            with logged_warnings_said():
                _dispatch(sys.argv[1:] if argv is None else argv)
        except SystemExit as exc:
            # A Ctrl-C or SIGTERM whose exception was raised in a __del__ or weakref callback, where
            # CPython prints "Exception ignored in" and drops it: the run is stopped all the same.
            if stop_requested() and exc.code not in (130, EXIT_SIGTERM):
                _fail(*_stopped())
            raise
        finally:
            release_signals()
    except KeyboardInterrupt as exc:
        # before the handlers were installed (a program calling main() has Python's default one),
        # in main()'s first work, or while they were put back: as any other Ctrl-C or SIGTERM
        release_signals()
        _fail(*((TERMINATED, EXIT_SIGTERM) if isinstance(exc, Terminated) else (INTERRUPTED, 130)))


def _dispatch(args: list[str]) -> NoReturn:
    sweep_scratch()  # scratch folders of runs killed (SIGKILL) before they could remove them
    try:
        check_argv(args)
        _run_click(args)
    except ClickException as exc:  # usage errors (exit 2): one line, not click's box
        _fail(usage_line(exc, args), getattr(exc, "exit_code", 2))
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
        if cut_short(exc):  # a library turned the Ctrl-C into its own error
            _fail(*_stopped())
        line = user_failure(exc)
        if line is None:
            raise
        _fail(line, 2)
    raise SystemExit(0)


_loaded()  # main() handles signals from its first line

if __name__ == "__main__":  # pragma: no cover
    main(sys.argv[1:])
