"""Terminal output for long work: messages and rich progress bars, or silence for --json and tests.

Stages take a ``Ui`` instead of printing, so the CLI decides where words go (stderr when
stdout carries JSON) and tests can collect them.
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Callable, Iterator

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

    def info(self, message: str) -> None:
        raise_if_stopped()  # a stage starts: a Ctrl-C or SIGTERM swallowed in a __del__ stops it here
        self.messages.append(message)
        if not self.quiet:
            self.console.print(message, markup=False)

    def warn(self, message: str) -> None:
        self.messages.append(f"warning: {message}")
        if not self.quiet:
            self.console.print(f"[yellow]warning:[/yellow] {escape(message)}")

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
        with Progress(*columns, console=self.console, transient=True) as bar:
            task = bar.add_task(description, total=1.0)

            def advance(fraction: float) -> None:
                bar.update(task, completed=max(0.0, min(1.0, fraction)))

            yield advance
            bar.update(task, completed=1.0)


QUIET = Ui(quiet=True)


def human_size(n: int | None, none: str = "-") -> str:
    """A file size in decimal units, as every table and report prints it: ``1.23 MB``, ``456 kB``,
    ``12 B``."""
    if n is None:
        return none
    for unit, div in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if n >= div:
            return f"{n / div:.3g} {unit}"
    return f"{n} B"
