"""Terminal output for long work: messages and rich progress bars, or silence for --json and tests.

Stages take a ``Ui`` instead of printing, so the CLI decides where words go (stderr when
stdout carries JSON) and tests can collect them. Sizes and names are written here as every
table and page shows them: ``human_size``, and names made into Markdown that renders as
itself (``md_text``, ``md_code``: report.md, matrix.md and the bundle's README).
"""

from __future__ import annotations

import contextlib
import os
import re
import sys
from collections.abc import Callable, Iterator
from typing import Any, cast

from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, Progress, TaskProgressColumn, TextColumn, TimeElapsedColumn

from edgedeploy.interrupts import raise_if_stopped

Advance = Callable[[float], None]  # set completion to a fraction in 0..1


class Ui:
    """Messages and progress bars on a rich console (stderr by default)."""

    def __init__(self, console: Console | None = None, *, quiet: bool = False) -> None:
        self.console = console or Console(stderr=True, highlight=False, emoji=False)  # see cli/common.py
        self.quiet = quiet
        self.messages: list[str] = []
        self._shown: Console | None = None  # the console of the bar shown: what is said meanwhile goes there

    def info(self, message: str) -> None:
        raise_if_stopped()  # a stage starts: a Ctrl-C or SIGTERM swallowed in a __del__ stops it here
        self.messages.append(message)
        if not self.quiet:
            (self._shown or self.console).print(message, markup=False)

    def warn(self, message: str) -> None:
        self.messages.append(f"warning: {message}")
        if not self.quiet:
            (self._shown or self.console).print(f"[yellow]warning:[/yellow] {escape(message)}")

    def info_once(self, message: str, again: str = "") -> None:
        """``message`` the first time it is said (a run says some lines per precision); after
        that ``again``, a short form, or nothing."""
        if message not in self.messages:
            self.info(message)
        elif again:
            self.info(again)

    def warn_once(self, message: str) -> None:
        if f"warning: {message}" not in self.messages:
            self.warn(message)

    @contextlib.contextmanager
    def progress(self, description: str) -> Iterator[Advance]:
        """A progress bar for one step; yields a function that sets the fraction done."""
        raise_if_stopped()
        if self.quiet or (not self.console.is_terminal and not sys.stderr.isatty()):
            yield lambda _fraction: None
            return
        columns = (TextColumn("{task.description}"), BarColumn(), TaskProgressColumn(), TimeElapsedColumn())
        with _bar_console(self.console) as own, Progress(*columns, console=own, transient=True) as bar:
            task = bar.add_task(description, total=1.0)

            def advance(fraction: float) -> None:
                bar.update(task, completed=max(0.0, min(1.0, fraction)))

            shown, self._shown = self._shown, own
            try:
                yield advance
                bar.update(task, completed=1.0)
            finally:
                self._shown = shown


@contextlib.contextmanager
def quiet_descriptors() -> Iterator[None]:
    """File descriptors 1 and 2 pointed at os.devnull, and put back after: C++ code writes to them
    directly, past ``sys.stdout``. A TorchScript export that failed (grid_sample at opset 13)
    printed torch's 14-line "Torch IR graph at exception: graph(..." to stdout, and Ray's GCS client
    prints a warning line of its own before it raises. C's buffers
    are flushed before the descriptors go back, so that nothing written inside comes out after."""
    import ctypes

    try:
        libc: Any = ctypes.CDLL(None)
    except (OSError, TypeError):  # no C library to open by name (Windows): its buffers stay as they were
        libc = None
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    try:
        saved = [os.dup(1), os.dup(2)]
    except OSError:  # no descriptors 1 and 2 (a daemon's): nothing of theirs to keep quiet
        yield
        return
    try:
        with open(os.devnull, "wb") as null:
            os.dup2(null.fileno(), 1)
            os.dup2(null.fileno(), 2)
        yield
    finally:
        if libc is not None:
            libc.fflush(None)
        for fd, copy in zip((1, 2), saved, strict=True):
            os.dup2(copy, fd)
            os.close(copy)


@contextlib.contextmanager
def _bar_console(console: Console) -> Iterator[Console]:
    """A console like ``console`` on a duplicate of its file's descriptor, taken here, for a bar.
    The export points descriptors 1 and 2 at os.devnull, and sys.stderr at a buffer, while an
    exporter runs, so that torch's C++ side cannot print its graph dumps (``_quiet_exporter`` in
    edgedeploy/stages/export.py); the bar drew to them and nothing moved through the longest step.
    A console of its own, made with rich's public API, leaves ``console`` as it was (the CLI's
    follows sys.stderr). A console without a descriptor (a test's buffer) draws the bar itself."""
    original = console.file
    try:
        copy = os.dup(original.fileno())
    except (AttributeError, OSError, ValueError):  # io.UnsupportedOperation is both of the last two
        yield console
        return
    try:
        encoding = getattr(original, "encoding", None) or "utf-8"
        stream = open(copy, "w", encoding=encoding, errors=getattr(original, "errors", None))  # noqa: SIM115
    except BaseException:  # the copy is closed here if open fails, by closing the stream below if not
        os.close(copy)
        raise
    with contextlib.suppress(Exception):
        original.flush()  # what was written before comes out before the bar
    try:
        yield Console(
            file=stream,
            force_terminal=console.is_terminal,  # as console decided it: env, and the same terminal
            force_interactive=console.is_interactive,
            color_system=cast(Any, console.color_system),  # a name rich takes back, or None: no colour
            no_color=console.no_color,
            legacy_windows=console.legacy_windows,
            soft_wrap=console.soft_wrap,
            highlight=False,  # as Ui's and the CLI's consoles print what is said
            emoji=False,
        )
    finally:
        with contextlib.suppress(OSError):  # a terminal gone away: the descriptor is closed all the same
            stream.close()


QUIET = Ui(quiet=True)


def human_size(n: int | None, none: str = "-") -> str:
    """A file size in decimal units, as every table and report prints it: ``1.23 MB``, ``456 kB``,
    ``12 B``. The unit is the one whose 3-digit figure stays below 1000 once rounded (999,500 bytes
    is ``1 MB``, not ``1e+03 kB``); in TB, the largest, whole terabytes with separators."""
    if n is None:
        return none
    if n < 1000:
        return f"{n} B"
    for unit, div in (("kB", 1e3), ("MB", 1e6), ("GB", 1e9)):
        shown = f"{n / div:.3g}"
        if float(shown) < 1000:
            return f"{shown} {unit}"
    return f"{n / 1e12:.3g} TB" if n < 999.5e12 else f"{n / 1e12:,.0f} TB"


def cosine_figure(value: float | None, gate: float | None = None, none: str = "-") -> str:
    """A cosine as every table prints it: 6 decimals, and as many more as it takes to tell it from
    what it is not. A strict gate printed a failed fp16's 0.99999997 as "cosine 1.000000 <
    0.99999999", false as printed, and a budget search's steps all read "cosine 1": a cosine below
    1 never prints as 1, and one below ``gate`` (the min cosine it is checked against) never prints
    as a figure at or above it, nor one at or above it as below (up to 15 decimals)."""
    if value is None:
        return none
    for places in range(6, 16):
        text = f"{value:.{places}f}"
        shown = float(text)
        below_1 = shown < 1.0 or not value < 1.0  # (NaN: as it is)
        if below_1 and (gate is None or (shown < gate) == (value < gate)):
            return text
    return text


# Markdown's own characters that can change the text mid-line (emphasis, code, links, a table's
# cell, strikethrough), escaped with a backslash; the HTML ones become entities, since a renderer
# (GitHub's step summary, a PR comment) would otherwise draw a name's <b> or <img> as live HTML.
# Here, below the stages, because the report's pages and the bundle's README both show names.
_MD_ESCAPES = {c: "\\" + c for c in "\\`*_[]|~"} | {"&": "&amp;", "<": "&lt;", ">": "&gt;"}
_MD_TEXT = str.maketrans(_MD_ESCAPES | {"\n": " ", "\r": " "})  # one line of text, or a table's cell


def md_text(value: Any) -> str:
    """``value`` as Markdown text that renders as itself (inline, in a line or a table's cell)."""
    return str(value).translate(_MD_TEXT)


def md_code(value: Any, cell: bool = False) -> str:
    """``value`` as a Markdown code span: its text is literal there (no escapes or entities), so
    only a backtick in it needs a longer run of backticks around it (CommonMark's rule). In a
    table's ``cell`` a | still ends the cell inside a code span (GitHub's table rule) unless
    written \\|, which the span then shows as |."""
    text = str(value).replace("\n", " ").replace("\r", " ")
    if cell:
        text = text.replace("|", "\\|")
    fence = "`" * (max((len(run) for run in re.findall("`+", text)), default=0) + 1)
    pad = " " if text.startswith("`") or text.endswith("`") else ""
    return f"{fence}{pad}{text}{pad}{fence}"
