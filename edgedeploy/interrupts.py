"""Ctrl-C and SIGTERM, handled in one place: both unwind the stack, so temp files are removed.

The CLI entry calls :func:`handle_signals` once. SIGTERM then raises :class:`Terminated` (a
``KeyboardInterrupt``) in the main thread like Ctrl-C does, so every ``atomic_path``,
``atomic_dir`` and ``TemporaryDirectory`` on the way out deletes what it had started; without
this, SIGTERM ends the process where it stands and leaves them behind.

:func:`deferred` holds both signals back across work that must not be cut in half: importing a
heavy module is not interrupt-safe (torch half-imported segfaults or hangs later), and
Polygraphy checks every array it touches (``is_numpy``, ``is_torch``) behind bare ``except:``
clauses that import numpy and torch: a Ctrl-C landing in one is swallowed, the check answers
"not an array" and the run goes on or fails with an unrelated message. So Polygraphy's work runs
inside :func:`deferred`, which hands back a check to call where stopping is safe (between batches).
Hand-written: the standard library's ``signal`` is the whole tool; the policy is ours.
"""

from __future__ import annotations

import contextlib
import signal
import sys
import threading
from collections.abc import Callable, Iterator
from types import FrameType
from typing import Any

EXIT_SIGTERM = 143  # 128 + SIGTERM, as a shell reports it


class Terminated(KeyboardInterrupt):
    """SIGTERM arrived: unwind like Ctrl-C, exit 143."""


# Signals turned into exceptions (click reports any of them as exit 130). Also the record that a
# stop was asked: a handler that runs while a ``__del__`` or a weakref callback runs raises there,
# and CPython prints that exception ("Exception ignored in: ...") and drops it; the CLI reads this
# list before it reports success (and :func:`raise_if_stopped` at stage starts) so the stop holds.
_received: list[int] = []


def terminated() -> bool:
    """Whether SIGTERM (rather than Ctrl-C) is what stopped this process."""
    return signal.SIGTERM in _received


def stop_requested() -> bool:
    """Whether a Ctrl-C or SIGTERM came since :func:`handle_signals`, even one that was swallowed."""
    return bool(_received)


def raise_if_stopped() -> None:
    """Raise the stop that was asked and swallowed (see ``_received``); nothing if none was."""
    if _received:
        raise Terminated() if terminated() else KeyboardInterrupt()


def _on_sigterm(signum: int, frame: FrameType | None) -> None:
    _received.append(signum)
    raise Terminated()


def _on_sigint(signum: int, frame: FrameType | None) -> None:
    _received.append(signum)
    raise KeyboardInterrupt()


_previous: dict[signal.Signals, Any] = {}  # the handlers handle_signals replaced
_previous_hook: list[Any] = []  # the sys.unraisablehook handle_signals replaced


def _quiet_stop(unraisable: Any) -> None:
    """``sys.unraisablehook`` while our handlers are in place. A Ctrl-C or SIGTERM whose handler
    raised inside a ``__del__`` or a weakref callback (Polygraphy's ``BaseRunner.__del__`` during
    run, 1 Ctrl-C in 5) was printed by CPython as "Exception ignored in: ..." and a traceback above
    the one "stopped:" line; it is recorded in ``_received`` and stops the run all the same (see
    there), so it is not printed. Anything else goes to the hook that was there."""
    if _received and isinstance(unraisable.exc_value, KeyboardInterrupt):
        return
    (_previous_hook[-1] if _previous_hook else sys.__unraisablehook__)(unraisable)


def handle_signals() -> None:
    """SIGTERM unwinds the stack like Ctrl-C, and both are recorded (main thread only; elsewhere
    nothing changes). Forgets the signals of a previous run in this process;
    :func:`release_signals` puts the previous handlers back.

    A signal the process was started with ignored stays ignored, as ``nohup`` and a shell's
    background jobs (``cmd &``, where Ctrl-C is meant for the foreground job) expect.
    """
    _received.clear()
    if threading.current_thread() is threading.main_thread():
        with _blocked():
            for sig, handler in ((signal.SIGTERM, _on_sigterm), (signal.SIGINT, _on_sigint)):
                if signal.getsignal(sig) is signal.SIG_IGN:
                    continue
                before = signal.signal(sig, handler)
                _previous.setdefault(sig, before)
            if sys.unraisablehook is not _quiet_stop:
                _previous_hook.append(sys.unraisablehook)
                sys.unraisablehook = _quiet_stop


def release_signals() -> None:
    """The handlers :func:`handle_signals` replaced are back (main thread only). A signal that
    comes meanwhile goes to the handler put back (Ctrl-C in a program: KeyboardInterrupt)."""
    if threading.current_thread() is threading.main_thread():
        with _blocked():
            while _previous:
                sig, handler = _previous.popitem()
                signal.signal(sig, handler if handler is not None else signal.SIG_DFL)
            if sys.unraisablehook is _quiet_stop and _previous_hook:
                sys.unraisablehook = _previous_hook.pop()


@contextlib.contextmanager
def _blocked() -> Iterator[None]:
    """SIGINT and SIGTERM held by the kernel while the handlers are swapped, so that none of their
    handlers raises half way (some replaced, the others not, or one replaced and not recorded);
    one that came meanwhile is handled after, by the handler then in place."""
    held = {signal.SIGINT, signal.SIGTERM}
    before = signal.pthread_sigmask(signal.SIG_BLOCK, held)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, before)


@contextlib.contextmanager
def deferred() -> Iterator[Callable[[], None]]:
    """Hold Ctrl-C and SIGTERM back until the block is done, then raise the first that came.

    The block gets a check to call at points where stopping is safe: it raises the held signal there.
    """
    caught: list[int] = []

    def check() -> None:
        if caught:
            _received.append(caught[0])
            raise Terminated() if caught[0] == signal.SIGTERM else KeyboardInterrupt()

    if threading.current_thread() is not threading.main_thread():
        yield check
        return

    def hold(signum: int, frame: FrameType | None) -> None:
        caught.append(signum)

    previous: dict[signal.Signals, Any] = {
        sig: signal.signal(sig, hold)
        for sig in (signal.SIGINT, signal.SIGTERM)
        if signal.getsignal(sig) is not signal.SIG_IGN  # ignored stays ignored (nohup, `cmd &`)
    }
    try:
        yield check
    finally:
        for held, handler in previous.items():
            signal.signal(held, handler if handler is not None else signal.SIG_DFL)
    check()


def cut_short(exc: BaseException) -> bool:
    """Whether ``exc`` was raised because of a Ctrl-C or SIGTERM: a ``KeyboardInterrupt`` among its
    causes and contexts. Some libraries turn the interrupt into an error of their own: ONNX
    Runtime's extension, interrupted while it initializes on import (lazily, mid-command), raises
    ``ImportError: initialization failed`` from it."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        if isinstance(current, KeyboardInterrupt):
            return True
        seen.add(id(current))
        current = current.__cause__ or current.__context__
    return False
