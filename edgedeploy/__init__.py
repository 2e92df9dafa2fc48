"""edgedeploy: trained network -> verified, measured deployment bundle for Jetson boards and GPUs."""

__version__ = "0.1.0"

import contextlib as _contextlib
import os as _os
import sys as _sys
from collections.abc import Callable as _Callable

# What every Ctrl-C of the command says (edgedeploy.cli), from the first moment (below).
INTERRUPTED = (
    "interrupted (Ctrl-C); no file was half-written; "
    "rerun the command (run and matrix reuse the stages that finished)"
)


def _started_as_the_command() -> bool:
    """Whether this process is the ``edgedeploy`` command, importing this package on its way to
    ``main()``: ``python -m edgedeploy`` (runpy imports the package while ``sys.argv[0]`` is still
    ``-m``, and ``sys.orig_argv`` names the module) or the console script (the ``__main__`` module
    is the file ``edgedeploy``). Not a program that imports edgedeploy (tests, a user's script)."""
    if _sys.argv[:1] == ["-m"]:
        given = getattr(_sys, "orig_argv", [])
        module = given[-len(_sys.argv)] if len(given) >= len(_sys.argv) else ""
        return module.removeprefix("-m") in ("edgedeploy", "edgedeploy.cli")
    main = _sys.modules.get("__main__")
    path = getattr(main, "__file__", None)
    script = isinstance(path, str) and _os.path.basename(path) == "edgedeploy"
    return script and getattr(main, "__spec__", None) is None


def _stopped_while_starting(signum: int, frame: object) -> None:
    """Ctrl-C before main() installs its handlers: the command's one line and exit 130, not a
    traceback, wherever the process is (an import, the console script's own lines): nothing has
    been written yet. Straight to the file descriptor: the signal may have cut a write to
    sys.stderr short, which a second write would find reentrant."""
    with _contextlib.suppress(OSError):  # no stderr to say it on
        _os.write(2, f"stopped: {INTERRUPTED}\n".encode())
    raise SystemExit(130)


def stopped_while_starting() -> "_Callable[[], None]":
    """Ctrl-C says the command's one line and exits 130 (:func:`_stopped_while_starting`) until
    the function returned is called, which puts Python's default handler back: the CLI's import
    in a program that calls ``main()`` itself (the command has it from the package's first lines,
    below). Only where SIGINT has Python's default handler (ignored stays ignored, a program's own
    handler stays), in the main thread."""
    import signal
    import threading

    if (
        threading.current_thread() is not threading.main_thread()
        or signal.getsignal(signal.SIGINT) is not signal.default_int_handler
    ):
        return lambda: None
    signal.signal(signal.SIGINT, _stopped_while_starting)

    def restore() -> None:
        if signal.getsignal(signal.SIGINT) is _stopped_while_starting:
            signal.signal(signal.SIGINT, signal.default_int_handler)

    return restore


if _started_as_the_command():  # replaced by main()'s handlers (edgedeploy.interrupts.handle_signals)
    stopped_while_starting()

# `python -m edgedeploy` puts the current folder first on sys.path, where a user's calibration.py
# (a model module, say) would replace the package of that name and fail the command with a
# traceback. While Python locates the module it runs, sys.argv[0] is "-m": only
# then is that first entry taken off, as `python -P` does and the `edgedeploy` command has it.
# A module:callable model spec still finds the user's modules (stages/export.py appends the folder).
if _sys.argv[:1] == ["-m"] and _sys.path and _sys.path[0] in ("", _os.getcwd()):
    _sys.path.pop(0)

import calibration as _calibration  # noqa: E402, F401  (turns ONNX Runtime's telemetry off first)
