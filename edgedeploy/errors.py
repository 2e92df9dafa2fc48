"""The two kinds of failure a user can meet, and the exit codes the CLI gives them.

Everything the user can cause (a missing file, a bad spec, an unknown target) is an
``InputError`` (exit 2); a model that runs but misses an accuracy or latency gate is a
``GateFailed`` (exit 1). The machine's and the libraries' failures a user meets with bad
input (a full disk or read-only folder, a model too large for memory, ONNX Runtime refusing a
feed, a damaged protobuf) are named by :func:`user_failure`, which the CLI entry turns into one
line and exit 2. Anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from pathlib import Path

from calibration.errors import DataRefused, NothingToQuantize


class EdgeDeployError(Exception):
    """Base class: carries the one line the CLI prints and the exit code it returns."""

    exit_code = 2


class InputError(EdgeDeployError, ValueError):
    """Bad usage or bad input: a missing file, a corrupt model, an unknown name."""

    exit_code = 2


class SettingError(InputError):
    """A stage's refusal of a setting's value (a compare gate, a profile setting), carried apart from
    its name: ``setting`` is its (section, key) in a run or matrix config, ``("compare",
    "min_cosine")``, and ``said`` the rest of the line. Its text names the setting in the stage's
    words, ``subject`` (``min_cosine must lie in (-1, 1], got 2.0``); who gave the value names it as
    the user did (``options.setting_named``), whatever ``said`` says."""

    def __init__(self, setting: tuple[str, str], subject: str, said: str) -> None:
        super().__init__(f"{subject} {said}")
        self.setting, self.subject, self.said = setting, subject, said

    def __reduce__(self) -> tuple[type[SettingError], tuple[tuple[str, str], str, str]]:
        return type(self), (self.setting, self.subject, self.said)  # pickled as made, not by its text


class RefusedInput(InputError, DataRefused):
    """ONNX Runtime refused the data (calibration's :class:`~calibration.errors.DataRefused`) in
    a stage whose callers take user input as :class:`InputError`."""


class NothingQuantized(InputError, NothingToQuantize):
    """No layer can be quantized with the exclusions given (calibration's
    :class:`~calibration.errors.NothingToQuantize`), for callers that take it as :class:`InputError`."""


class BackendUnavailable(InputError):
    """The backend asked for cannot run here (TensorRT missing, no GPU)."""


class GateFailed(EdgeDeployError):
    """An accuracy or latency gate was not met."""

    exit_code = 1


class BudgetMissed(GateFailed):
    """An accuracy budget no fp16 or int8 model meets; ``steps``: the search's steps file, which
    the message names (``run`` reports it, ``matrix`` carries it out of its scratch folder)."""

    def __init__(self, message: str, steps: Path) -> None:
        super().__init__(message)
        self.steps = steps


def not_a_file(what: str, path: object) -> InputError:
    """The error for a file that is missing, or is a folder where a file was expected."""
    import os

    text = os.fspath(path) if isinstance(path, (str, os.PathLike)) else str(path)
    if text and os.path.isdir(text):
        return InputError(f"{what} {text} is a folder, not a file")
    return InputError(f"{what} not found: {text}")


def first_line(exc: BaseException) -> str:
    """The first line of an exception's message (or its type): what a one-line error can quote,
    without the terminal colour codes some libraries put in their messages (torch.onnx's)."""
    import re

    text = re.sub(r"\x1b\[[0-9;]*[A-Za-z]", "", str(exc)).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def user_failure(exc: BaseException) -> str | None:
    """One line for a failure the user's input or machine caused, None for a bug (keep the traceback)."""
    if isinstance(exc, EdgeDeployError):
        return str(exc)
    if isinstance(exc, MemoryError):
        return f"out of memory: {first_line(exc) if str(exc) else 'the model or data does not fit in memory'}"
    if isinstance(exc, RecursionError):
        return None
    if isinstance(exc, OSError):
        where = " -> ".join(str(f) for f in (exc.filename, exc.filename2) if f is not None)
        what = exc.strerror or first_line(exc)
        return f"{where}: {what}" if where else what
    module = type(exc).__module__ or ""
    root = module.split(".")[0]
    if root == "onnxruntime":
        return f"ONNX Runtime refused the model or its input: {_strip_ort(first_line(exc))}"
    if root == "polygraphy":
        return f"Polygraphy: {first_line(exc)}"
    if root == "onnx" and type(exc).__name__ in ("ValidationError", "InferenceError"):
        return f"not a valid ONNX model: {first_line(exc)}"
    if root == "google" and type(exc).__name__ == "DecodeError":
        return f"not a valid ONNX file (protobuf: {first_line(exc)})"
    return None


def _strip_ort(text: str) -> str:
    """ONNX Runtime's ``[ONNXRuntimeError] : 2 : INVALID_ARGUMENT : ...`` -> the part after the codes."""
    parts = [p.strip() for p in text.split(" : ")]
    return parts[-1] if len(parts) > 1 and parts[-1] else text


@contextlib.contextmanager
def naming_guessed_dims(fed_as_one: Sequence[str]) -> Iterator[None]:
    """ONNX Runtime refusing synthetic data whose dynamic dims were guessed as 1 (``fed_as_one``,
    see ``calibration.feeds.DataSource``): one line that also says which shapes were guessed and
    how to give them. trtexec guesses 1 too without ``--shapes``; an STFT front end, for one,
    needs more samples than that."""
    try:
        yield
    except Exception as exc:
        from_ort = (type(exc).__module__ or "").split(".")[0] == "onnxruntime"
        # calibration's own error for ONNX Runtime refusing the data (analyze's, calibrate's runs)
        if not fed_as_one or not (from_ort or isinstance(exc, DataRefused)):
            raise
        raise InputError(
            f"{user_failure(exc) if from_ort else exc} (dynamic dims fed as 1: {', '.join(fed_as_one)}; "
            "give the shapes with --input NAME:SHAPE, or [model] inputs in a config)"
        ) from None
