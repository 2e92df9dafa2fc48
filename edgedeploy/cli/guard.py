"""Every command's inputs and outputs, checked in one place before the command runs.

Each registered command's callback is wrapped once (:func:`guard_app`): the paths it was given
that exist are its inputs, and the write primitive (``calibration.atomic.check_dest``) refuses,
for the whole command, to overwrite one or to replace a folder holding one (``compare a.onnx
b.onnx --json a.onnx`` is refused, not a lost model). The output options (``-o``, ``--json``,
``--out``) are checked before any work: not empty, not the wrong kind of existing entry, and
in a place that can be written. Hand-written: click has path checks per option, but not across
options (an output naming an input) and not for the layout of a read-only mount.
"""

from __future__ import annotations

import functools
import os
import typing
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from edgedeploy.errors import InputError
from edgedeploy.fileio import (
    CACHE_DIR,
    DEVICE_DIR,
    bundle_holding,
    check_output,
    check_read_and_written,
    forget_written,
    guarded,
)

# parameter name -> (option as the user typed it, what it names)
OUTPUTS: dict[str, tuple[str, str]] = {
    "output": ("-o", "folder"),
    "out_dir": ("--out", "folder"),
    "json_path": ("--json", "file"),
}
FILE_OUTPUT_COMMANDS = frozenset({"export", "export_command"})  # where -o names a file, not a folder
# parameter name -> option: a file the command reads and updates (a timing cache), checked before any
# work as an output file is (not an input, nor --json) and for reading; not an input itself
READ_AND_WRITTEN: dict[str, str] = {"timing_cache": "--timing-cache"}
# commands whose inputs their config names: they check --json against those first (common.json_not_an_input),
# then as every command does here (check_json_output), for the more telling line
CONFIG_COMMANDS = frozenset({"run_command", "matrix_command"})
# commands whose -o is a bundle they make, which may replace a bundle of theirs (bundle create checks
# its folder itself: stages/bundle/tools.check_bundle_output); every other -o/--out in a bundle is refused
OWN_BUNDLE_OUTPUT = frozenset({"create_command"})
# text parameters that name files: a model source (module:callable, file.py:callable, model.onnx) and
# data specs (folder, .npz, loader.py, or random[:SEED]). Any other text (--executor ray, --precision
# int8, a target name) is not a path, even when a folder of that name happens to exist here.
PATH_SPECS = frozenset({"model", "data", "calib_data"})
# command callback's name -> the files it reads that no argument names, from its arguments (bundle
# create takes each artifact's plan, cache and report data beside it): inputs all the same
READ_BESIDE: dict[str, Callable[[dict[str, Any]], list[Path]]] = {}


def reads_beside(
    files: Callable[[dict[str, Any]], list[Path]],
) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Declare the files a command reads beside its arguments (see READ_BESIDE)."""

    def declare(fn: Callable[..., Any]) -> Callable[..., Any]:
        READ_BESIDE[fn.__name__] = files
        return fn

    return declare


def _names_paths(hint: Any) -> bool:
    """Whether a parameter's type is Path, Path | None, list[Path] or the like."""
    return hint is Path or any(_names_paths(arg) for arg in typing.get_args(hint))


def _paths(value: Any) -> Iterator[Path]:
    if isinstance(value, (list, tuple)):
        for item in value:
            yield from _paths(item)
    elif isinstance(value, (str, os.PathLike)) and str(value):
        text = os.fspath(value)
        # module:callable specs name their file before the colon
        for candidate in {text, text.split(":")[0]}:
            try:
                path = Path(candidate)
                if path.exists():
                    yield path
            except (OSError, ValueError):
                continue


def check_json_output(path: Path) -> None:
    """``--json FILE`` may replace a JSON file, not a model, data or any other file (``run --json
    out/model.fp32.onnx`` replaced the exported model), and may not land in a bundle, whose files
    its manifest lists (``run --json bundle/manifest.json`` left a bundle that no run would take),
    but in its ``device/`` folder, where the board's scripts write (benchmark.sh's results)."""
    if path.is_file() and path.stat().st_size:
        with open(path, "rb") as fh:
            head = fh.read(256).lstrip()
        if head and head[:1] not in (b"{", b"["):
            raise InputError(f"--json {path} exists and is not a JSON file: name another file")
    if bundle := bundle_holding(path):
        raise InputError(
            f"--json {path} lies in the bundle {bundle}: write it outside the bundle, or under its "
            f"{DEVICE_DIR}/ folder"
        )
    for folder in Path(os.path.abspath(path)).parents:
        if folder.name == CACHE_DIR:  # run's stage records, matrix's finished cells
            raise InputError(f"--json {path} lies in the cache {folder}: write it outside the cache")


def _refuse_in_bundle(option: str, path: Path, kind: str) -> None:
    """-o/--out naming a bundle folder or a place in one (:func:`bundle_holding`): refused, as --json is."""
    bundle = bundle_holding(path, itself=kind == "folder")
    if bundle is not None:
        is_or_in = "is the bundle" if bundle == Path(os.path.abspath(path)) else "lies in the bundle"
        raise InputError(
            f"{option} {path} {is_or_in} {bundle}, whose manifest would not list what this command writes "
            "(bundle verify would find it damaged): write it outside the bundle"
        )


def guard_command(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Wrap one command callback with the input/output checks."""

    hints = typing.get_type_hints(fn)
    readable = {n for n, h in hints.items() if _names_paths(h) or n in PATH_SPECS} - READ_AND_WRITTEN.keys()

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        inputs: list[Path] = []
        outputs: list[tuple[str, Path, str]] = []
        for name, value in kwargs.items():
            if name in READ_AND_WRITTEN:
                if value is not None:  # an output as -o and --json are (not an input), readable too
                    outputs.append((READ_AND_WRITTEN[name], Path(value), "file"))
            elif name in OUTPUTS:
                if value is not None:
                    option, kind = OUTPUTS[name]
                    if name == "output" and fn.__name__ in FILE_OUTPUT_COMMANDS:
                        kind = "file"
                    outputs.append((option, Path(value), kind))
            elif name in readable:
                inputs += _paths(value)
        if fn.__name__ in READ_BESIDE:
            inputs += READ_BESIDE[fn.__name__](kwargs)
        for option, path, kind in outputs:
            if option in READ_AND_WRITTEN.values():
                check_read_and_written(option, path)
            else:
                check_output(option, path, kind)
            if kind == "file" and any(_same(path, source) for source in inputs):
                raise InputError(f"{option} {path} is an input of this command: name another file")
            inside = next((s for s in inputs if s.is_dir() and _within(path, s)), None)
            if inside is not None:
                raise InputError(
                    f"{option} {path} lies in {inside}, a folder this command reads: write elsewhere"
                )
            if option != "--json" and fn.__name__ not in OWN_BUNDLE_OUTPUT:
                _refuse_in_bundle(option, path, kind)
            json = option == "--json" and fn.__name__ not in CONFIG_COMMANDS
            if json:
                check_json_output(path)
            if json or option in READ_AND_WRITTEN.values():
                for other, where, _ in outputs:  # export -o m.onnx --json m.onnx; build -o out --json out
                    if other != option and _same(path, where):
                        raise InputError(f"{option} {path} is also given as {other}: name another file")
        forget_written()  # what this command writes, which its --json may not replace
        with guarded(inputs=inputs):
            return fn(*args, **kwargs)

    return wrapper


def _same(a: Path, b: Path) -> bool:
    try:
        return a.resolve() == b.resolve() or (a.exists() and os.path.samefile(a, b))
    except OSError:
        return False


def _within(path: Path, folder: Path) -> bool:
    try:
        real, base = path.resolve(), folder.resolve()
    except OSError:
        return False
    return real != base and real.is_relative_to(base)


def check_argv(argv: list[str]) -> None:
    """An output option given an empty value (``-o ''``): click would read it as the current folder.
    An option that names a file given a folder's spelling (``--json out/``): the command sees a
    Path, which drops the trailing separator, and would write a file ``out``."""
    options = {"-o", "--output", "--out", "--out-dir", "--json"}
    command = next((arg for arg in argv if not arg.startswith("-")), "")
    files = {"--json"} | ({"-o", "--output"} if command == "export" else set())
    for i, arg in enumerate(argv):
        name, eq, value = arg.partition("=")
        if not eq and arg in options and i + 1 < len(argv):
            name, value = arg, argv[i + 1]
        elif not eq:
            continue
        if name in options and not value.strip():
            raise InputError(f"{name} is empty: name a file or folder")
        if name in files and value.endswith(("/", os.sep)):
            raise InputError(f"{name} {value} is a folder: name a file")


def _wrap(info: Any) -> None:
    """Wrap the callback of one Typer command or group info, once."""
    if info is not None and info.callback is not None and not getattr(info.callback, "_io_guarded", False):
        info.callback = guard_command(info.callback)
        info.callback._io_guarded = True


def guard_app(app: Any) -> None:
    """Wrap every command of a Typer app, its group callback and its sub-apps, once."""
    for info in app.registered_commands:
        _wrap(info)
    _wrap(getattr(app, "registered_callback", None))  # a group run without a subcommand (targets --json)
    for group in app.registered_groups:
        if group.typer_instance is not None:
            guard_app(group.typer_instance)
