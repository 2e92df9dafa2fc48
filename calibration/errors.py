"""Errors the user can cause through calibration data or options (the CLI exits 2 on them)."""


class CalibrationError(ValueError):
    """Bad calibration or comparison input: the message is one line that names the culprit."""


class DataError(CalibrationError):
    """Data that does not fit the model: wrong name, shape, dtype, NaN, empty source."""


class LoaderFailed(DataError):
    """A user's data loader script failed itself (it did not import, or its ``load_data()`` raised
    or exited while yielding): refused wherever it is read, never passed over as data that does not
    feed the model (an fp32 build's artifact check takes random inputs for those)."""


class DataRefused(DataError):
    """ONNX Runtime refused to run the model on the data (a kernel's shape or type error): data
    that passed the checks of the inputs' declared shapes and types but not the graph's own."""


class ModelLoadError(CalibrationError):
    """ONNX Runtime cannot load the model (or the copy of it that exposes its tensors) to run it: the
    caller can tell whether the model itself is at fault (:func:`calibration.artifacts.unloadable`)."""


class ConversionError(CalibrationError):
    """A model's opset conversion computes other values than the model, or cannot run where it runs
    (:func:`calibration.conversion.check_conversion`): no model is made from it."""


class NothingToQuantize(CalibrationError):
    """No layer of the model can be quantized with the exclusions given (an accuracy budget's
    variant that keeps every weighted layer in float quantizes nothing: it is the float model)."""


class OutputPathError(CalibrationError):
    """An output that would overwrite an input, delete a folder holding one, or land outside the target."""


def raised(exc: BaseException) -> str:
    """How a user's code failed, for a one-line error: ``called sys.exit(0) ...`` or ``raised T: msg``.

    User code (a model factory, a data loader) is called with ``except (Exception, SystemExit)``:
    a ``sys.exit(0)`` inside it must fail the command, not end it as a success with no output.
    """
    if isinstance(exc, SystemExit):
        return f"called sys.exit({exc.code!r}) instead of returning"
    text = str(exc).strip().splitlines()
    return f"raised {type(exc).__name__}: {text[0] if text else ''}".rstrip(": ")
