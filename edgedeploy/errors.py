"""The two kinds of failure a user can meet, and the exit codes the CLI gives them.

Everything the user can cause (a missing file, a bad spec, an unknown target) is an
``InputError`` (exit 2); a model that runs but misses an accuracy or latency gate is a
``GateFailed`` (exit 1). Anything else is a bug and keeps its traceback.
"""

from __future__ import annotations


class EdgeDeployError(Exception):
    """Base class: carries the one line the CLI prints and the exit code it returns."""

    exit_code = 2


class InputError(EdgeDeployError, ValueError):
    """Bad usage or bad input: a missing file, a corrupt model, an unknown name."""

    exit_code = 2


class BackendUnavailable(InputError):
    """The backend asked for cannot run here (TensorRT missing, no GPU)."""


class GateFailed(EdgeDeployError):
    """An accuracy or latency gate was not met."""

    exit_code = 1


def first_line(exc: BaseException) -> str:
    """The first line of an exception's message (or its type): what a one-line error can quote."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
