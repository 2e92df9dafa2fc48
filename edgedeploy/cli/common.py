"""What every command shares: the consoles, option types declared once, and small parsers.

Options that several commands take (``--json``, ``--data``, ``--input``, ``--target``, ...)
are ``Annotated`` aliases here, so each has one spelling and one help text everywhere.
Words go to stderr (:data:`err`, :func:`make_ui`); tables and JSON to stdout (:data:`out`).
"""

from __future__ import annotations

import contextlib
import logging
import sys
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console

from edgedeploy.cli.guard import check_json_output
from edgedeploy.errors import InputError
from edgedeploy.fileio import atomic_write_json, not_an_input, written_here
from edgedeploy.interrupts import deferred
from edgedeploy.ui import Ui

# Wide tables when piped (CI logs), the terminal's width otherwise; error lines never wrap.
# emoji=False: rich turns ":two:" in a model spec (models.py:two:two_in) or a path into an emoji
out = Console(highlight=False, markup=False, emoji=False, width=None if sys.stdout.isatty() else 200)
err = Console(stderr=True, highlight=False, soft_wrap=True, emoji=False)

DATA_PANEL = "Data"
DATA_SPEC_HELP = "random[:SEED], FILE.npz/.npy, a folder of .npz/.npy or images, or a loader.py"


def data_spec(param: typer.CallbackParam, value: str | None) -> str | None:
    """The callback of every data option: a spec no model could be fed (``random:-5``) is refused as
    the option is read, before the command does any work (opening the data comes after the export,
    the models' loading or the other builds). An empty one (an unset ``$CALIB``) is refused as ``-o ''``
    is (cli/guard.py check_argv): ``Path('')`` is the current folder, whose files were taken for data."""
    if value is not None and not value.strip():
        raise InputError(f"{param.opts[0]} is empty: name a file or folder (or random)")
    if value is not None:
        with deferred():  # heavy imports are not interrupt-safe
            from calibration.errors import CalibrationError
            from calibration.sources import check_spec

        try:
            check_spec(value)
        except CalibrationError as exc:
            raise InputError(f"{param.opts[0]}: {exc}") from None
    return value


def checked_percentile(
    context: typer.Context, name: str, value: float, algorithm: str, ui: Ui, prefix: str = ""
) -> float:
    """The calibration percentile (calibrate's --percentile, build's --calib-percentile, ``name``
    the parameter) to calibrate with: refused by calibration's own rule (``AlgorithmOptions``) in
    one line naming the option, before any work, where ``algorithm`` reads it (percentile, auto);
    where it does not, a value typed is said unused, whatever it is (``--percentile 150`` with
    ``--algorithm max`` was refused for a range max never reads), and the default is passed on for
    one out of that range. ``prefix``: the option's prefix (``calib-``)."""
    with deferred():  # heavy imports are not interrupt-safe
        from calibration.algorithms import AlgorithmOptions
        from calibration.defaults import DEFAULT_PERCENTILE
        from calibration.errors import CalibrationError

    try:
        AlgorithmOptions(percentile=value)
        problem = None
    except CalibrationError as exc:
        problem = str(exc)
    if algorithm not in ("percentile", "auto"):
        if name in typed(context, name):
            ui.warn(
                f"--{prefix}percentile {value}: used by --{prefix}algorithm percentile and auto, "
                f"not {algorithm}"
            )
        return value if problem is None else DEFAULT_PERCENTILE
    if problem is not None:
        raise InputError(f"--{prefix}percentile: {problem}")
    return value


JsonOutput = Annotated[Path | None, typer.Option("--json", help="Write the result as JSON.")]
# int8 calibration's percentile: one declaration, named after the parameter of each command that
# takes it (calibrate --percentile, build --calib-percentile), as [calibration] percentile
Percentile = Annotated[
    float,
    typer.Option(
        help="int8: the percentile the percentile algorithm keeps (and auto tries), within [50, 100].",
    ),
]
DataSpec = Annotated[
    str, typer.Option("--data", help=DATA_SPEC_HELP, rich_help_panel=DATA_PANEL, callback=data_spec)
]
OptionalDataSpec = Annotated[
    str | None, typer.Option("--data", help=DATA_SPEC_HELP, rich_help_panel=DATA_PANEL, callback=data_spec)
]
InputShapes = Annotated[
    list[str] | None,
    typer.Option(
        "--input",
        help="Shape for dynamic dims NAME:SHAPE, repeatable; with random data its dim 0 is the batch.",
        rich_help_panel=DATA_PANEL,
    ),
]
Seed = Annotated[int, typer.Option(help="Seed for random data.", rich_help_panel=DATA_PANEL, min=0)]
BatchSize = Annotated[
    int, typer.Option(help="Batch size for dynamic-batch models.", rich_help_panel=DATA_PANEL)
]
TargetName = Annotated[
    str,
    typer.Option(
        "--target",
        help="Target name (see 'edgedeploy targets'); host = this CPU (x86-64-vnni or x86-64-cpu).",
    ),
]
BackendName = Annotated[str, typer.Option("--backend", help="auto, onnxruntime or tensorrt.")]
Threads = Annotated[int | None, typer.Option(help="ONNX Runtime intra-op threads.", min=1)]
PREPROCESS_HELP = "TOML/JSON file with the preprocessing of image folders (resize, color, mean, std...)."
PreprocessFile = Annotated[Path | None, typer.Option(help=PREPROCESS_HELP, rich_help_panel=DATA_PANEL)]


def make_ui() -> Ui:
    """Messages and progress bars for a command, on stderr."""
    return Ui(err)


class _WarningLines(logging.Handler):
    """What edgedeploy's own modules log (the TensorRT backend's warnings: an engine sidecar of
    another engine, an engine without one) said as every other warning of the CLI is, by
    :meth:`edgedeploy.ui.Ui.warn`: ``warning: MESSAGE`` on stderr, not the bare message that
    logging's last-resort handler prints."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            make_ui().warn(record.getMessage())
        except Exception:  # as logging's handlers do: a record that cannot be said is not a failure
            self.handleError(record)


@contextlib.contextmanager
def logged_warnings_said() -> Iterator[None]:
    """While a command runs, the ``edgedeploy`` loggers' warnings go through :class:`_WarningLines`
    (they still reach the handlers of a program that calls main(), or a test's caplog)."""
    logger = logging.getLogger("edgedeploy")
    handler = _WarningLines(logging.WARNING)
    logger.addHandler(handler)
    try:
        yield
    finally:
        logger.removeHandler(handler)


def write_json(path: Path | None, obj: Any) -> None:
    """The ``--json FILE`` of every command: written atomically, and said so on stderr."""
    if path is not None:
        own = written_here(path)
        if own is not None:  # an output of this very command (cli/guard.py checks what existed before)
            where = "is a file" if own == path.resolve() else f"lies in {own}, a folder"
            raise InputError(f"--json {path} {where} this command wrote: name another file")
        atomic_write_json(path, obj)
        err.print(f"wrote {path}")


def json_not_an_input(path: Path | None, inputs: Iterable[Path]) -> None:
    """``--json FILE`` of a config-driven command may not be (or land in) a file or data folder the
    config reads (fileio.not_an_input), nor a file that is not JSON: checked before any work, since
    the JSON is written after it."""
    if path is None:
        return
    not_an_input(path, inputs, "--json")
    check_json_output(path)


def load_preprocess(path: Path | None) -> dict[str, Any] | None:
    """The image preprocessing table of ``--preprocess FILE`` (TOML or JSON: the table itself, or
    a ``preprocess`` or ``[calibration] preprocess`` table in it), or None without one."""
    if path is None:
        return None
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:  # a folder, a binary file
        raise InputError(f"cannot read preprocessing file {path}: {exc}") from None
    try:
        if path.suffix == ".json":
            import json

            data = json.loads(text)
        else:
            import tomllib

            data = tomllib.loads(text)
    except ValueError as exc:
        raise InputError(f"bad preprocessing file {path}: {exc}") from None
    if isinstance(data, dict) and "preprocess" not in data and "calibration" in data:
        calibration = data["calibration"]
        if not isinstance(calibration, dict):
            raise InputError(
                f"{path}: 'calibration' is a {type(calibration).__name__}, expected a table"
                " with a 'preprocess' table of preprocessing options in it"
            )
        data = calibration.get("preprocess", data)
    elif isinstance(data, dict):
        data = data.get("preprocess", data)
    if not isinstance(data, dict):
        raise InputError(f"{path}: expected a table of preprocessing options")
    with deferred():  # heavy imports are not interrupt-safe
        from calibration.errors import CalibrationError
        from calibration.images import Preprocess

    try:
        Preprocess.from_dict(data)
    except CalibrationError as exc:
        raise InputError(f"bad preprocessing file {path}: {exc}") from None
    return data


def typed(context: typer.Context, *names: str) -> set[str]:
    """The command's parameters among ``names`` that the user gave (on the command line or from the
    environment), whatever the value: ``--percentile 99.99`` with ``--algorithm max`` is as moot as
    ``--percentile 99.9``, and no check repeats the defaults of the signatures. (The source is
    compared by name: typer 0.29 carries its own copy of click's ParameterSource.)"""
    sources = {name: context.get_parameter_source(name) for name in names}
    return {
        name
        for name, source in sources.items()
        if getattr(source, "name", "") in ("COMMANDLINE", "ENVIRONMENT")
    }


def check_seed(context: typer.Context, data: str, seed: int, ui: Ui) -> None:
    """``--seed`` typed beside ``--data``: refused when the spec names another seed, said when the
    data is not random (see calibration.sources.seed_unused)."""
    with deferred():  # heavy imports are not interrupt-safe
        from calibration.sources import seed_unused

    if "seed" in typed(context, "seed") and (note := seed_unused(data, seed)):
        ui.warn(note)


def csv(value: str | None) -> list[str]:
    return [v.strip() for v in value.split(",") if v.strip()] if value else []


def ints(value: str | None, what: str) -> list[int]:
    """Distinct integers, comma-separated: an empty item or a repeated one is refused."""
    items = [v.strip() for v in value.split(",")] if value else []
    try:
        numbers = [int(v) for v in items]
    except ValueError:
        raise InputError(f"{what} must be comma-separated integers, got '{value}'") from None
    if len(set(numbers)) < len(numbers):
        raise InputError(f"{what} names a value twice: '{value}'")
    return numbers


def fmt(value: float | None, spec: str = ".3f") -> str:
    return "-" if value is None else format(value, spec)
