"""Ctrl-C and SIGTERM, handled in one place: both unwind the stack, so temp files are removed.

The CLI entry calls :func:`handle_signals` once. SIGTERM then raises :class:`Terminated` (a
``KeyboardInterrupt``) in the main thread like Ctrl-C does, so every ``atomic_path``,
``atomic_dir`` and ``TemporaryDirectory`` on the way out deletes what it had started; without
this, SIGTERM ends the process where it stands and leaves them behind.

:func:`deferred` holds both signals back across work that must not be cut in half: importing a
heavy module is not interrupt-safe (torch half-imported segfaults or hangs later), and
Polygraphy imports torch lazily, in the middle of a comparison, behind a bare ``except:`` that
would also swallow the Ctrl-C. :func:`preload` imports such modules up front, uninterruptibly.
Hand-written: the standard library's ``signal`` is the whole tool; the policy is ours.
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.util
import signal
import threading
from collections.abc import Iterator
from types import FrameType
from typing import Any

EXIT_SIGTERM = 143  # 128 + SIGTERM, as a shell reports it


class Terminated(KeyboardInterrupt):
    """SIGTERM arrived: unwind like Ctrl-C, exit 143."""


_received: list[int] = []  # signals turned into exceptions (click reports any of them as exit 130)


def terminated() -> bool:
    """Whether SIGTERM (rather than Ctrl-C) is what stopped this process."""
    return signal.SIGTERM in _received


def _on_sigterm(signum: int, frame: FrameType | None) -> None:
    _received.append(signum)
    raise Terminated()


def handle_signals() -> None:
    """SIGTERM unwinds the stack like Ctrl-C (main thread only; elsewhere nothing changes)."""
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _on_sigterm)


@contextlib.contextmanager
def deferred() -> Iterator[None]:
    """Hold Ctrl-C and SIGTERM back until the block is done, then raise the first that came."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    caught: list[int] = []

    def hold(signum: int, frame: FrameType | None) -> None:
        caught.append(signum)

    previous: dict[signal.Signals, Any] = {
        sig: signal.signal(sig, hold) for sig in (signal.SIGINT, signal.SIGTERM)
    }
    try:
        yield
    finally:
        for held, handler in previous.items():
            signal.signal(held, handler if handler is not None else signal.SIG_DFL)
    if caught:
        _received.append(caught[0])
        raise Terminated() if caught[0] == signal.SIGTERM else KeyboardInterrupt()


def preload(*modules: str) -> None:
    """Import ``modules`` now, with interrupts held back; a module that is not installed is skipped."""
    for name in modules:
        try:
            if importlib.util.find_spec(name) is None:
                continue
        except (ImportError, ValueError):
            continue
        with deferred(), contextlib.suppress(Exception):
            importlib.import_module(name)
