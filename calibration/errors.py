"""Errors the user can cause through calibration data or options (the CLI exits 2 on them)."""


class CalibrationError(ValueError):
    """Bad calibration or comparison input: the message is one line that names the culprit."""


class DataError(CalibrationError):
    """Data that does not fit the model: wrong name, shape, dtype, NaN, empty source."""


class OutputPathError(CalibrationError):
    """An output that would overwrite an input, delete a folder holding one, or land outside the target."""
